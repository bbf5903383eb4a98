"""Text a person reads: truncation to one line, markdown tables, and numbers cleaned of NaN and
noise digits. Used by the services' reports and by the Dagster metadata helpers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ELLIPSIS = "…"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 prompt', '4 prompts' (or the given plural)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def truncate(text: str | None, length: int | None) -> str | None:
    """`text` cut to at most `length` characters, the last one an ellipsis when cut."""
    if text is None or length is None or len(text) <= length:
        return text
    return text[: max(length - 1, 0)] + ELLIPSIS


def one_line(text: Any, width: int | None = None) -> str:
    """Whitespace runs (newlines included) collapsed to one space, then truncated."""
    flat = " ".join(("" if text is None else str(text)).split())
    return truncate(flat, width) or ""


def to_float(value: Any) -> float | None:
    """A float, or None for None, NaN, infinity and pandas' missing values."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def round_sig(value: Any, digits: int = 3) -> float | None:
    """`value` rounded to `digits` significant digits (5.067000074 -> 5.07), None if not a
    finite number. Integers-valued results stay exact for large numbers (12345.6 -> 12346)."""
    number = to_float(value)
    if number is None or number == 0:
        return number
    magnitude = math.floor(math.log10(abs(number)))
    return round(number, max(digits - 1 - magnitude, 0))


def _cell(value: Any, width: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}"
    return one_line(value, width).replace("\\", "\\\\").replace("|", "\\|")


def markdown_table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    limit: int | None = 50,
    width: int = 80,
    empty: str = "_no rows_",
    more: str = "more rows",
) -> str:
    """A markdown table of `rows` (dicts), one line per row, cells cut to `width`; at most
    `limit` rows, then a line saying how many more there are."""
    rows = list(rows)
    if not rows:
        return empty
    columns = list(columns or rows[0])
    shown = rows if limit is None else rows[:limit]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c), width) for c in columns) + " |" for r in shown]
    if len(rows) > len(shown):
        lines.append(f"\n_{len(rows) - len(shown)} {more}_")
    return "\n".join(lines)
