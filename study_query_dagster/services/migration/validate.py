"""`validate_migration`: the backfill checks of one source, with one row comparison pass; and
the two row checks on their own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import Legacy
from .checks import batch_order_matches, batch_sizes_match, no_rows_quarantined, row_counts_match
from .context import checking
from .report import CHECKS, MISMATCH_LIMIT, ValidationReport, empty_report
from .row_checks import DEFAULT_SAMPLE, compare_sample, parity_report, timestamps_report

WHOLE_SET_CHECKS = {
    "row_counts_match": row_counts_match,
    "batch_sizes_match": batch_sizes_match,
    "batch_order_matches": batch_order_matches,
    "no_rows_quarantined": no_rows_quarantined,
}


def validate_migration(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    sample_size: int | None = DEFAULT_SAMPLE,
    seed: int | None = None,
    limit: int = MISMATCH_LIMIT,
    checks: Iterable[str] = CHECKS,
) -> list[ValidationReport]:
    """The reports of `checks` (default: all of `CHECKS`), in `CHECKS` order. Rows are compared
    for `timestamps_match` and `sample_parity` in one pass: a sample of `sample_size` rows, or
    every row with `sample_size=None`."""
    wanted = [name for name in CHECKS if name in set(checks)]
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown backfill check(s) {sorted(unknown)}; known: {list(CHECKS)}")
    with checking(legacy, target, source_id) as ctx:
        if ctx is None:
            return [empty_report(name) for name in wanted]
        known = {"source_id": ctx.source_id, "limit": limit}
        if {"timestamps_match", "sample_parity"} & set(wanted):
            comparison, times, others = compare_sample(ctx, sample_size, seed, limit)
        reports = []
        for name in wanted:
            if name == "timestamps_match":
                reports.append(timestamps_report(ctx, comparison, times))
            elif name == "sample_parity":
                reports.append(parity_report(ctx, comparison, others))
            else:
                reports.append(WHOLE_SET_CHECKS[name](ctx.source, target, **known))
        return reports


def timestamps_match(
    legacy: Legacy, target: DatabaseConnection, **options: Any
) -> ValidationReport:
    """Earliest and latest created_at per batch (and over all rows) agree, and sampled rows
    (every row with `sample_size=None`) have exactly their v1 created_at. `options` are
    `validate_migration`'s: source_id, sample_size, seed, limit."""
    return validate_migration(legacy, target, checks=["timestamps_match"], **options)[0]


def sample_parity(legacy: Legacy, target: DatabaseConnection, **options: Any) -> ValidationReport:
    """Sampled v1 rows (every row with `sample_size=None`) equal their raw_call on every
    migrated field: prompt, response, provider, model, tokens (with the split), latency, v1 id,
    batch id, v1 metadata and how it was encoded. `options` as for `timestamps_match`."""
    return validate_migration(legacy, target, checks=["sample_parity"], **options)[0]
