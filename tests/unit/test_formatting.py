"""What a person reads: truncation, markdown tables and cleaned numbers."""

import math

import pandas as pd

from study_query_dagster.services.formatting import (
    count,
    markdown_table,
    one_line,
    round_sig,
    to_float,
    truncate,
)


def test_truncate_and_one_line():
    assert truncate("abcdef", 4) == "abc…" and truncate("abc", 4) == "abc"
    assert truncate(None, 3) is None and truncate("abc", None) == "abc"
    assert one_line("a\n  b\tc", 4) == "a b…" and one_line(None) == ""


def test_numbers_are_cleaned_and_rounded_to_significant_digits():
    assert [to_float(v) for v in (None, math.nan, math.inf, pd.NA, "x", "2.5", 3)] == [
        None,
        None,
        None,
        None,
        None,
        2.5,
        3.0,
    ]
    assert round_sig(0.005067000074632233) == 0.00507
    assert round_sig(5.067000074) == 5.07
    assert round_sig(12345.6) == 12346
    assert round_sig(0) == 0 and round_sig(math.nan) is None


def test_markdown_table_escapes_cuts_and_counts_the_rest():
    rows = [{"a": "x|y", "b": 1.23456}, {"a": "long " * 30, "b": None}, {"a": "z", "b": 2}]
    table = markdown_table(rows, limit=2, width=10, more="more in the CSV")
    lines = table.splitlines()
    assert lines[0] == "| a | b |" and lines[2] == "| x\\|y | 1.235 |"
    assert lines[3] == "| long long… |  |"
    assert lines[-1] == "_1 more in the CSV_"
    assert markdown_table([], empty="_none_") == "_none_"


def test_count_agrees_in_number():
    assert count(1, "prompt") == "1 prompt"
    assert count(0, "prompt") == "0 prompts"
    assert count(4, "cell") == "4 cells"
    assert count(2, "class", "classes") == "2 classes"
