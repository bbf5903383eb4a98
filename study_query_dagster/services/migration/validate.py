"""`validate_migration`: the backfill checks of one source, with one row comparison pass."""

from __future__ import annotations

from collections.abc import Iterable

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
