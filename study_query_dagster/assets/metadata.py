"""Dagster metadata shared by the assets and checks: native tables with a schema, markdown lists,
numbers rounded to meaningful digits, ids shown as text (Dagster offers every number as a plot
across materializations; an id is not a measurement), and the identity of a run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np

from ..services.formatting import markdown_table, one_line, round_sig, to_float

TABLE_LIMIT = 200  # rows shown in a metadata table; the CSV export has them all
CELL_WIDTH = 160  # characters of text per cell (answers can be long)


def md_table(rows: Iterable[Mapping[str, Any]], **options: Any) -> dg.MetadataValue:
    """A markdown table (see `services.formatting.markdown_table`) as metadata."""
    return dg.MetadataValue.md(markdown_table(rows, **options))


def _column_type(rows: Sequence[Mapping[str, Any]], name: str) -> str:
    kinds = {type(r.get(name)) for r in rows if r.get(name) is not None}
    if kinds and kinds <= {bool}:
        return "bool"
    if kinds and kinds <= {int}:
        return "int"
    if kinds and kinds <= {int, float}:
        return "float"
    return "string"


def _cell(value: Any, kind: str) -> str | int | float | bool | None:
    if value is None:
        return None
    if kind == "float":
        return round_sig(value)
    if kind in ("int", "bool"):
        return value
    return one_line(value, CELL_WIDTH)


def table(
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    descriptions: Mapping[str, str] | None = None,
    limit: int = TABLE_LIMIT,
) -> dg.MetadataValue:
    """Dagster's native table (sortable, scrolls sideways instead of clipping) with a schema
    typed from the values: floats rounded to 3 significant digits, text on one line."""
    rows = [dict(r) for r in rows]
    kinds = {name: _column_type(rows, name) for name in columns}
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(name, kinds[name], description=(descriptions or {}).get(name))
            for name in columns
        ]
    )
    records = [
        dg.TableRecord({name: _cell(row.get(name), kinds[name]) for name in columns})
        for row in rows[:limit]
    ]
    return dg.MetadataValue.table(records, schema=schema)


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


def measure(value: Any, digits: int = 3) -> int | float | None:
    """A measurement rounded to `digits` significant digits (5.067000074 -> 5.07); integers
    (counts, token sums) stay exact integers."""
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    return round_sig(value, digits)


def ident(value: Any) -> dg.MetadataValue:
    """An id or key as text: shown as it is, never offered as a plot."""
    return dg.MetadataValue.text("" if value is None else str(value))


def database_kind() -> str:
    """The app database's kind badge (`sqlite` or `postgres`), from DATABASE_URL."""
    from ..config import get_settings

    return "postgres" if get_settings().database_url.startswith("postgres") else "sqlite"


def root_run_id(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> str:
    """The run a step belongs to, as first launched: a re-execution (from failure or of the
    whole run) keeps the original run as its root, so it finds the same run group."""
    return context.run.root_run_id or context.run.run_id
