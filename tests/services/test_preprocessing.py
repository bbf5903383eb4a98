"""PromptPreprocessor steps and pipeline."""

import pytest

from study_query_dagster.services import PromptPreprocessor

P = PromptPreprocessor


def test_strip_control_chars_keeps_newlines_and_tabs():
    assert P.strip_control_chars("a\x00b\r\nc\x1b[0m\td\x7f") == "ab\nc[0m\td"


def test_clean_whitespace_keeps_line_structure():
    text = "  Question:   what\tis   this?  \n\n\n\n - item one   \n - item two "
    assert P.clean_whitespace(text) == "Question: what is this?\n\n- item one\n- item two"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+x@example.co.uk now", "mail [EMAIL] now"),
        ("call 555-123-4567 or (555) 123-4567", "call [PHONE] or [PHONE]"),
        ("+1 555 123 4567 / +44 20 7946 0958 / 5551234567", "[PHONE] / [PHONE] / [PHONE]"),
        # not phone numbers: years, dates, decimals, short ids, version strings
        ("in 2024 on 2024-01-15, pi 3.14159, id 12345678, v1.2.3", None),
    ],
)
def test_remove_pii(text, expected):
    assert P.remove_pii(text) == (expected if expected is not None else text)


def test_truncate_default_10k():
    assert len(P.truncate("x" * 20_000)) == 10_000
    assert P.truncate("abcdef", 3) == "abc"
    with pytest.raises(ValueError):
        P.truncate("abc", 0)


def test_apply_template_str_format_semantics():
    assert P.apply_template("Q: {question} {{literal}}", question="why?") == "Q: why? {literal}"
    assert P.apply_template("{n:>3}|{d[k]}", n=7, d={"k": "v"}) == "  7|v"
    with pytest.raises(ValueError, match="missing: country, year"):
        P.apply_template("Capital of {country} in {year}?", topic="x")
    with pytest.raises(ValueError, match="must be named"):
        P.apply_template("{} and {0}", a=1)
    with pytest.raises(ValueError, match="malformed template"):
        P.apply_template("{unclosed", unclosed=1)


def test_pipeline_reports_changed_steps():
    pre = PromptPreprocessor(max_length=20)
    text, changed = pre.process("  write to bob@example.com\x00  please   ")
    assert text == "write to [EMAIL] ple"
    assert changed == ["strip_control_chars", "clean_whitespace", "remove_pii", "truncate"]
    assert pre.process("clean already")[1] == []
    assert PromptPreprocessor(remove_pii_enabled=False).process("a@b.com")[0] == "a@b.com"
    assert pre.steps == ["strip_control_chars", "clean_whitespace", "remove_pii", "truncate"]
