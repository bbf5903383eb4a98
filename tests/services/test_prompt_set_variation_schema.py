"""The prompt-set format's answer-variation parts: the `variation:` block and scripted offline
answers, with every mistake reported at its line and field before anything runs."""

import textwrap

import pytest

from study_query_dagster.services.prompt_sets import PromptSetError, parse_prompt_set

BASE = """\
name: scripted
prompts:
  - id: capital
    text: What is the capital of Australia?
  - id: river
    text: Which is the longest river of Australia?
targets:
  - provider: offline
    model: offline-echo
    params:
      offline_answers:
        capital: {Canberra: 7, Sydney: 3}
        "*": {Murray: 10}
samples: 10
"""


def parse(text: str):
    return parse_prompt_set(textwrap.dedent(text), "prompt_sets/scripted.yaml").prompt_set


def problems(text: str) -> list[str]:
    with pytest.raises(PromptSetError) as caught:
        parse(text)
    return [str(p) for p in caught.value.problems]


def test_scripts_become_each_items_quota():
    prompt_set = parse(BASE)
    params = {i.key: i.params for i in prompt_set.work_items()}
    assert params["capital/offline-echo/0"] == {"offline_answers": {"Canberra": 7, "Sydney": 3}}
    assert params["river/offline-echo/9"] == {"offline_answers": {"Murray": 10}}
    assert prompt_set.targets[0].params.as_dict() == {}  # resolved per item, never sent whole
    assert prompt_set.variation.strategy == "exact"


def test_content_hash_of_sets_without_variation_is_unchanged():
    plain = BASE.split("    params:")[0] + "samples: 10\n"
    spelled = plain + "variation: {strategy: exact, baseline: previous, permutations: 999}\n"
    assert parse(plain).content_hash() == parse(spelled).content_hash()


def test_every_script_mistake_at_its_line():
    text = BASE.replace("capital: {Canberra: 7, Sydney: 3}", "capital: {Canberra: 7, Sydney: 2}")
    text = text.replace('"*": {Murray: 10}', "rivr: {Murray: 10}")
    assert problems(text) == [
        "prompt_sets/scripted.yaml:12: targets[0].params.offline_answers.capital: the counts add"
        " up to 9, but the set has samples: 10 (each sample gets one scripted answer)",
        "prompt_sets/scripted.yaml:13: targets[0].params.offline_answers.rivr: 'rivr' is not a"
        " prompt id of this set (use one of: capital, river; or '*' for every prompt)",
    ]


def test_a_bad_count_names_the_answer():
    (message,) = problems(BASE.replace("Sydney: 3}", "Sydney: none}"))
    assert message.startswith("prompt_sets/scripted.yaml:12: targets[0].params.offline_answers")
    assert "(answer 'Sydney': got 'none')" in message


def test_scripts_are_for_the_offline_provider_only():
    text = BASE.replace(
        "provider: offline\n    model: offline-echo", "provider: openai\n    model: gpt-4o-mini"
    )
    (message,) = problems(text)
    assert (
        "targets[0].params.offline_answers: scripted answers are for provider offline only"
        in message
    )


def test_runs_scripted_in_turn():
    text = BASE.replace(
        '      offline_answers:\n        capital: {Canberra: 7, Sydney: 3}\n        "*": {Murray: 10}\n',
        '      offline_answers:\n        - {"*": {Canberra: 10}}\n        - {"*": {Sydney: 10}}\n',
    )
    prompt_set = parse(text)
    first = prompt_set.work_items()[0].params  # unresolved: the first run's script
    assert first == {"offline_answers": {"Canberra": 10}}
    assert prompt_set.for_run(2).work_items()[0].params == {"offline_answers": {"Sydney": 10}}
    assert prompt_set.for_run(3).work_items()[0].params == {"offline_answers": {"Sydney": 10}}
    bad = text.replace('- {"*": {Sydney: 10}}', '- {"*": {Sydney: 9}}')
    (message,) = problems(bad)
    assert message.startswith(
        "prompt_sets/scripted.yaml:13: targets[0].params.offline_answers[1].*"
    )


@pytest.mark.parametrize(
    ("block", "line", "fragment"),
    [
        ("variation: {strategy: nli}", "variation.strategy", "'embedding' or 'entailment'"),
        ("variation: {strategy: entailment}", "variation.judge", "entailment needs a judge"),
        ("variation: {strategy: embedding}", "variation.strategy", "set 'embed: on'"),
        (
            "variation: {threshold: 0.2}",
            "variation",
            "'threshold' only applies to strategy embedding",
        ),
        ("variation: {permutations: 0}", "variation.permutations", "greater than or equal to 1"),
        ("variation: {baselne: previous}", "variation.baselne", "did you mean 'baseline'"),
    ],
)
def test_variation_block_mistakes(block, line, fragment):
    (message,) = problems(BASE + block + "\n")
    assert message.startswith(f"prompt_sets/scripted.yaml:15: {line}")
    assert fragment in message


def test_embedding_strategy_with_embed_on():
    prompt_set = parse(BASE + "embed: on\nvariation: {strategy: embedding, threshold: 0.2}\n")
    assert prompt_set.variation.effective_threshold == 0.2
