"""Dagster metadata shared by the assets and checks: markdown tables and lists, numbers rounded
for reading, and the identity of a run (its root run id)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg

from ..services.formatting import markdown_table, to_float


def md_table(rows: Iterable[Mapping[str, Any]], **options: Any) -> dg.MetadataValue:
    """A markdown table (see `services.formatting.markdown_table`) as metadata."""
    return dg.MetadataValue.md(markdown_table(rows, **options))


def md_list(
    items: Iterable[Any], *, limit: int = 50, empty: str = "none", total: int | None = None
) -> dg.MetadataValue:
    """A markdown bullet list of at most `limit` items, then how many more (of `total`, when
    `items` are only the first of them)."""
    items = list(items)
    total = len(items) if total is None else total
    lines = [f"- {item}" for item in items[:limit]]
    if total > min(limit, len(items)):
        lines.append(f"- … {total - min(limit, len(items))} more")
    return dg.MetadataValue.md("\n".join(lines) or empty)


def rounded(value: Any, ndigits: int = 3) -> float | None:
    """A number rounded to `ndigits` decimals for display; None, NaN and infinity give None."""
    number = to_float(value)
    return None if number is None else round(number, ndigits)


def root_run_id(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """The run a step belongs to, as first launched: a re-execution (from failure or of the
    whole run) keeps the original run as its root, so it finds the same run group."""
    return context.run.root_run_id or context.run.run_id
