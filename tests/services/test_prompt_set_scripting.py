"""Scripted offline answers: one script per run, one quota per prompt, and the validation of
what a researcher writes (the quota by sample index is tested with the offline provider)."""

import pytest

from study_query_dagster.services.prompt_sets.errors import FieldError
from study_query_dagster.services.prompt_sets.scripting import (
    for_run,
    parse_offline_answers,
    quota_for,
    resolved,
    script_problems,
)


def test_scripts_per_run_and_per_prompt():
    runs = [{"*": {"Canberra": 10}}, {"*": {"Sydney": 7, "Canberra": 3}}]
    assert for_run(runs, 1) == {"*": {"Canberra": 10}}
    assert for_run(runs, 2) == {"*": {"Sydney": 7, "Canberra": 3}}
    assert for_run(runs, 7) == for_run(runs, 2)  # the last one for every later run
    assert for_run({"p": {"a": 1}}, 3) == {"p": {"a": 1}}
    script = {"capital": {"Canberra": 10}, "*": {"No idea": 10}}
    assert quota_for(script, "capital") == {"Canberra": 10}
    assert quota_for(script, "river") == {"No idea": 10}
    assert quota_for({"capital": {"x": 1}}, "river") is None
    params = {"temperature": 0, "offline_answers": script}
    assert resolved(params, "river") == {"temperature": 0, "offline_answers": {"No idea": 10}}
    assert resolved({"temperature": 0, "offline_answers": {"c": {"x": 1}}}, "r") == {
        "temperature": 0
    }


def test_numbers_are_answers_and_prompt_ids():
    assert parse_offline_answers({1: {42: 10}}) == {"1": {"42": 10}}


@pytest.mark.parametrize(
    ("value", "field", "message"),
    [
        ({"c": {"x": 0}}, "c", "greater than or equal to 1 (answer 'x': got 0)"),
        ({"c": 3}, "c", "valid dictionary (got 3)"),
        ([{"*": {"a": 1}}, {"*": {"b": "many"}}], "1.*", "valid integer"),
        ("Canberra", "", "must map prompt ids"),
        ([], "", "at least 1 item"),
    ],
)
def test_mistakes_name_the_prompt_key(value, field, message):
    with pytest.raises(FieldError) as error:
        parse_offline_answers(value)
    assert error.value.field == field
    assert message in error.value.message


def test_script_problems_check_prompt_ids_and_sums():
    where = ("targets", 0, "params", "offline_answers")
    script = {"capital": {"Canberra": 7, "Sydney": 3}, "rivr": {"Murray": 10}, "*": {"a": 4}}
    problems = dict(script_problems(script, ["capital", "river"], 10, where))
    assert problems[(*where, "rivr")].startswith("'rivr' is not a prompt id of this set")
    assert "add up to 4, but the set has samples: 10" in problems[(*where, "*")]
    assert (*where, "capital") not in problems
    runs = [{"*": {"a": 10}}, {"*": {"a": 9}}]
    assert list(dict(script_problems(runs, ["p"], 10, where))) == [(*where, 1, "*")]
    assert script_problems(None, ["p"], 10, where) == []
