"""Every kind of invalid prompt set fails with the file, line and field of each problem."""

import json
import pickle
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from study_query_dagster.services.prompt_sets import (
    ALLOWED_PARAMS,
    PromptSet,
    PromptSetError,
    discover_prompt_sets,
    load_prompt_set,
    parse_prompt_set,
)

# Line numbers in the tests below refer to this file as written.
VALID = """\
name: capitals
system: Be brief.
prompts:
  - id: q1
    text: What is the capital of France?
  - id: q2
    text: What is the capital of Peru?
targets:
  - provider: offline
    model: offline-echo
    params: {temperature: 0, max_tokens: 16}
samples: 2
"""


def write(tmp_path, text, name="capitals.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def edit(line_no, new_line, text=VALID):
    """VALID with line `line_no` (1-based) replaced; None deletes it."""
    lines = text.splitlines()
    if new_line is None:
        del lines[line_no - 1]
    else:
        lines[line_no - 1] = new_line
    return "\n".join(lines) + "\n"


def fail(tmp_path, text, name="capitals.yaml") -> PromptSetError:
    path = write(tmp_path, text, name)
    with pytest.raises(PromptSetError) as caught:
        load_prompt_set(path)
    err = caught.value
    assert err.path == str(path)
    assert isinstance(err, ValueError)
    for problem in err.problems:  # every problem is spelled out as file:line: field: message
        assert f"{path}:{problem.line}: " in str(err)
    return err


def assert_problem(err, line, field, *fragments):
    matches = [p for p in err.problems if p.line == line and p.field == field]
    assert matches, f"no problem at line {line} field {field!r} in:\n{err}"
    for fragment in fragments:
        assert any(fragment in p.message for p in matches), f"{fragment!r} not in:\n{err}"
    assert f":{line}: {field}: " in str(err)


def test_valid_base_loads(tmp_path):
    loaded = load_prompt_set(write(tmp_path, VALID))
    assert loaded.name == "capitals" and loaded.prompt_set.expected_calls == 4


def test_the_documented_message_shape(tmp_path):
    err = fail(tmp_path, edit(6, "  - id: q1"))
    path = tmp_path / "capitals.yaml"
    assert str(err) == f"{path}:6: prompts[1].id: duplicate id 'q1' (first used by prompts[0])"
    assert (err.line, err.field, err.column) == (6, "prompts[1].id", 5)
    assert len(err.problems) == 1


@pytest.mark.parametrize(
    ("bad_line", "new", "line", "field_prefix", "fragment"),
    [
        (
            5,
            "    text: What is: the capital?",
            5,
            "prompts[0].text",
            "mapping values are not allowed",
        ),
        (7, "    text: 'unterminated", 7, "prompts[1].text", "while scanning a quoted scalar"),
        (10, "     model: offline-echo", 10, "targets[0]", "invalid YAML"),
        (
            11,
            "    params: {temperature: 0, max_tokens: 16",
            12,
            "targets[0].params",
            "while parsing a flow mapping, line 11",
        ),
    ],
)
def test_yaml_syntax_error_gives_line_column_and_field(
    tmp_path, bad_line, new, line, field_prefix, fragment
):
    err = fail(tmp_path, edit(bad_line, new))
    assert err.line == line
    assert err.field.startswith(field_prefix)
    assert fragment in str(err)
    assert err.column is not None and "column" in err.problems[0].message


def test_unquoted_question_mark_in_flow_style_gets_a_hint(tmp_path):
    err = fail(tmp_path, edit(5, "    messages: [{role: user, content: Why?}]"))
    assert (err.line, err.field) == (5, "prompts[0].messages[0].content")
    assert "quote text containing" in str(err)


def test_missing_required_fields(tmp_path):
    err = fail(tmp_path, edit(1, None))
    assert_problem(err, 1, "name", "required field is missing")

    err = fail(tmp_path, edit(10, None))  # target without a model
    assert_problem(err, 9, "targets[0].model", "offline target needs 'model'")

    no_prompts = "name: x\ntargets:\n  - {provider: offline, model: m}\n"
    assert_problem(fail(tmp_path, no_prompts), 1, "prompts", "required field is missing")


@pytest.mark.parametrize(
    ("bad_line", "new", "line", "field", "fragments"),
    [
        (12, "samples: many", 12, "samples", ["valid integer", "'many'"]),
        (12, "samples: 0", 12, "samples", ["greater than or equal to 1"]),
        (12, "samples: 1000", 12, "samples", ["less than or equal to 100"]),
        (5, "    text: [a, b]", 5, "prompts[0].text", ["valid string"]),
        (12, "samples: 2\ntags: geography", 13, "tags", ["valid list"]),
        (
            11,
            "    params: {temperature: 3}",
            11,
            "targets[0].params.temperature",
            ["less than or equal to 2"],
        ),
        (
            11,
            "    params: {max_tokens: lots}",
            11,
            "targets[0].params.max_tokens",
            ["valid integer", "'lots'"],
        ),
        (2, "system: {nested: map}", 2, "system", ["valid string"]),
    ],
)
def test_wrong_types_and_ranges(tmp_path, bad_line, new, line, field, fragments):
    assert_problem(fail(tmp_path, edit(bad_line, new)), line, field, *fragments)


def test_unknown_fields_are_refused_with_a_suggestion(tmp_path):
    err = fail(tmp_path, edit(3, "promts:"))
    assert_problem(
        err, 3, "promts", "unknown field 'promts'", "did you mean 'prompts'?", "allowed:"
    )
    assert_problem(err, 1, "prompts", "required field is missing")

    err = fail(tmp_path, edit(7, "    txt: What is the capital of Peru?"))
    assert_problem(err, 7, "prompts[1].txt", "unknown field 'txt'", "did you mean 'text'?")

    err = fail(tmp_path, VALID + "embed: maybe\n")
    assert_problem(err, 13, "embed", "use on/off (true/false) or a mapping", "'maybe'")

    err = fail(tmp_path, VALID + "embed: {enabled: true, modle: m}\n")
    assert_problem(err, 13, "embed.modle", "did you mean 'model'?")


def test_unknown_provider_lists_the_known_ones(tmp_path):
    err = fail(tmp_path, edit(9, "  - provider: anthropic"))
    known = ("'azure'", "'openai'", "'hyperbolic'", "'offline'")
    assert_problem(err, 9, "targets[0].provider", "'anthropic'", *known)


def test_bad_param_names_the_allowed_ones(tmp_path):
    err = fail(tmp_path, edit(11, "    params: {temprature: 0, max_tokens: 16}"))
    field = "targets[0].params.temprature"
    assert_problem(err, 11, field, "unknown parameter 'temprature'", "did you mean 'temperature'?")
    assert f"allowed: {', '.join(ALLOWED_PARAMS)}" in str(err)
    assert {"temperature", "max_tokens", "seed", "top_p"} <= set(ALLOWED_PARAMS)


def test_bad_slug(tmp_path):
    err = fail(tmp_path, edit(1, "name: My Capitals"))
    assert_problem(err, 1, "name", "must be a slug", "'My Capitals'", "partition key")


def test_bad_prompt_id_and_label(tmp_path):
    err = fail(tmp_path, edit(4, "  - id: q/1"))
    assert_problem(err, 4, "prompts[0].id", "'q/1'")
    err = fail(tmp_path, edit(10, "    model: offline-echo\n    label: has space"))
    assert_problem(err, 11, "targets[0].label", "'has space'")


def test_duplicate_ids_labels_and_identical_targets(tmp_path):
    text = """\
name: dups
prompts:
  - {id: q1, text: one}
  - {id: q1, text: two}
targets:
  - {provider: offline, model: a, label: same}
  - {provider: offline, model: b, label: same}
  - {provider: offline, model: c}
  - {provider: offline, model: c}
"""
    err = fail(tmp_path, text)
    assert_problem(err, 4, "prompts[1].id", "duplicate id 'q1'")
    assert_problem(err, 7, "targets[1].label", "duplicate label 'same'")
    assert_problem(err, 9, "targets[3]", "same provider, model and params as targets[2]")
    assert len(err.problems) == 3


def test_template_variables(tmp_path):
    text = """\
name: facts
template: "What is the {attribute} of {country}?"
prompts:
  - id: ok
    vars: {country: Peru, attribute: capital}
  - id: short
    vars: {country: Chile}
  - id: empty
    vars: {}
targets:
  - {provider: offline, model: m}
"""
    err = fail(tmp_path, text)
    assert_problem(
        err, 7, "prompts[1].vars", "prompt 'short'", "missing template variable 'attribute'"
    )
    assert_problem(err, 9, "prompts[2].vars", "prompt 'empty'", "'attribute', 'country'")
    assert len(err.problems) == 2

    err = fail(tmp_path, text.replace('template: "What is the {attribute} of {country}?"\n', ""))
    assert_problem(
        err, 4, "prompts[0].vars", "prompt 'ok' gives vars but the set has no 'template'"
    )

    err = fail(tmp_path, text.replace('"What is the {attribute} of {country}?"', "[not, text]"))
    assert [(p.line, p.field) for p in err.problems] == [(2, "template")]

    for template, fragment in [
        ("What is {country", "expected '}'"),
        ("What is {0}", "plain name"),
        ("What is {country.__class__}", "plain name"),
        ("What is {}", "plain name"),
    ]:
        err = fail(tmp_path, text.replace("What is the {attribute} of {country}?", template))
        assert_problem(err, 2, "template", fragment)


def test_prompt_kinds(tmp_path):
    err = fail(tmp_path, edit(5, "    text: hi\n    vars: {a: 1}"))
    assert_problem(
        err,
        6,
        "prompts[0].vars",
        "prompt 'q1' needs exactly one of text, vars or messages (found text, vars)",
    )

    messages = """\
name: chat
prompts:
  - id: c1
    messages:
      - {role: user, content: Hi}
      - {role: assistant, content: Hello}
  - id: c2
    messages:
      - {role: robot, content: Hi}
  - id: c3
    messages: []
targets:
  - {provider: offline, model: m}
"""
    err = fail(tmp_path, messages)
    assert_problem(err, 6, "prompts[0].messages[1]", "last message must have role 'user'")
    assert_problem(err, 9, "prompts[1].messages[0].role", "'robot'")
    assert_problem(err, 11, "prompts[2].messages", "at least 1 item")


def test_model_and_deployment_rules(tmp_path):
    err = fail(tmp_path, edit(10, "    deployment: prod-mini"))
    assert_problem(err, 10, "targets[0].deployment", "only for provider azure")
    err = fail(tmp_path, edit(10, "    label: az", edit(9, "  - provider: azure")))
    assert_problem(err, 9, "targets[0].model", "azure target needs 'deployment' (or 'model')")
    ok = load_prompt_set(
        write(tmp_path, edit(10, "    deployment: prod-mini", edit(9, "  - provider: azure")))
    )
    assert ok.prompt_set.targets[0].deployment == "prod-mini"


def test_all_problems_are_reported_at_once_in_file_order(tmp_path):
    text = edit(6, "  - id: q1", edit(9, "  - provider: anthropic", edit(12, "samples: -1")))
    text = text.replace("{temperature: 0,", "{temp: 0,")
    err = fail(tmp_path, text)
    assert [(p.line, p.field) for p in err.problems] == [
        (6, "prompts[1].id"),
        (9, "targets[0].provider"),
        (11, "targets[0].params.temp"),
        (12, "samples"),
    ]
    assert len(str(err).splitlines()) == 4


def test_duplicate_yaml_key(tmp_path):
    err = fail(tmp_path, VALID + "samples: 3\n")
    assert_problem(err, 13, "samples", "duplicate key 'samples' (first on line 12)")


def test_empty_file_and_wrong_top_level(tmp_path):
    assert "the file is empty" in str(fail(tmp_path, "# only a comment\n"))
    err = fail(tmp_path, "- name: x\n")
    assert err.line == 1 and "must be a mapping" in str(err) and "got a list" in str(err)


def test_json_errors_have_lines_too(tmp_path):
    data = json.loads(json.dumps(__import__("yaml").safe_load(VALID)))
    data["prompts"][1]["id"] = "q1"
    data["targets"][0]["provider"] = "anthropic"
    text = json.dumps(data, indent=2)
    err = fail(tmp_path, text, name="capitals.json")
    lines = text.splitlines()
    dup_line = [i for i, s in enumerate(lines, 1) if '"id": "q1"' in s][1]
    provider_line = next(i for i, s in enumerate(lines, 1) if "anthropic" in s)
    assert_problem(err, dup_line, "prompts[1].id", "duplicate id 'q1'")
    assert_problem(err, provider_line, "targets[0].provider", "'anthropic'")

    broken = text.replace(
        '"text": "What is the capital of Peru?"', '"text": "What is the capital of Peru?",'
    )
    err = fail(tmp_path, broken, name="capitals.json")
    assert err.line == next(i for i, s in enumerate(lines, 1) if "Peru" in s) + 1
    assert err.field.startswith("prompts[1]") and "invalid JSON" in str(err)

    dup_key = (
        '{"name": "a", "name": "b", "prompts": [{"id": "x", "text": "y"}],\n'
        ' "targets": [{"provider": "offline", "model": "m"}]}'
    )
    assert_problem(fail(tmp_path, dup_key, name="d.json"), 1, "name", "duplicate key 'name'")


def test_unreadable_file(tmp_path):
    with pytest.raises(PromptSetError, match="cannot read file") as caught:
        load_prompt_set(tmp_path / "missing.yaml")
    assert caught.value.path == str(tmp_path / "missing.yaml") and caught.value.line is None
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PromptSetError, match="cannot read file"):
        load_prompt_set(path)


def test_error_survives_pickling(tmp_path):
    err = fail(tmp_path, edit(6, "  - id: q1"))
    copy = pickle.loads(pickle.dumps(err))
    assert str(copy) == str(err) and copy.problems == err.problems and copy.line == 6


def test_direct_model_validation_runs_the_same_checks():
    data = __import__("yaml").safe_load(edit(6, "  - id: q1"))
    with pytest.raises(ValidationError, match="prompts\\[1\\].id: duplicate id 'q1'"):
        PromptSet.model_validate(data)


def test_parse_text_without_a_file():
    with pytest.raises(PromptSetError) as caught:
        parse_prompt_set(edit(1, "name: Bad Name"), "inline.yaml")
    assert str(caught.value).startswith("inline.yaml:1: name: must be a slug")


def test_discovery_reports_invalid_files_and_name_clashes(tmp_path):
    write(tmp_path, VALID, "a.yaml")
    write(tmp_path, VALID.replace("text: What is the capital of Peru?", "text: Peru?"), "b.yml")
    write(tmp_path, edit(1, "name: other"), "c.yaml")
    write(tmp_path, edit(12, "samples: zero"), "d.json")  # YAML text in a .json file
    write(tmp_path, edit(12, "samples: zero"), "e.yaml")
    write(tmp_path, VALID, "f.yaml.example")
    write(tmp_path, VALID, ".hidden.yaml")
    write(tmp_path, "not a prompt set", "notes.txt")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", edit(1, "name: nested"), "nested.yaml")

    valid, errors = discover_prompt_sets(tmp_path)
    assert list(valid) == ["other"]
    assert set(errors) == {str(tmp_path / n) for n in ("a.yaml", "b.yml", "d.json", "e.yaml")}
    clash = errors[str(tmp_path / "a.yaml")]
    assert (clash.line, clash.field) == (1, "name")
    assert "name 'capitals' is also declared by b.yml" in str(clash)
    assert "also declared by a.yaml" in str(errors[str(tmp_path / "b.yml")])
    assert "invalid JSON" in str(errors[str(tmp_path / "d.json")])
    assert errors[str(tmp_path / "e.yaml")].field == "samples"

    with pytest.raises(NotADirectoryError, match="nowhere"):
        discover_prompt_sets(tmp_path / "nowhere")


def test_user_guide_shows_the_real_error_output():
    guide = (Path(__file__).resolve().parents[2] / "docs" / "USER_GUIDE.md").read_text()
    text = edit(6, "  - id: q1", edit(9, "  - provider: anthropic", edit(12, "samples: -1")))
    text = text.replace("{temperature: 0,", "{temp: 0,")
    with pytest.raises(PromptSetError) as caught:
        parse_prompt_set(text, "prompt_sets/capitals.yaml")
    assert f"```\n{caught.value}\n```" in guide
