"""The comparison pass behind `timestamps_match` and `sample_parity`, and their reports.

One pass compares sampled rows (`sample_size`, seeded; the seed is reported so a failing sample
can be drawn again) or every row (`sample_size=None`) through `compare.compare_rows`: created_at
differences are `timestamps_match`'s, all other fields `sample_parity`'s. `timestamps_match`
also compares the earliest and latest created_at of every batch and of all rows.
"""

from __future__ import annotations

from typing import Any

from .checks import merge, quarantined_per_batch
from .compare import Difference, RowComparison, compare_rows
from .context import CheckContext
from .convert import as_timestamp
from .report import Mismatches, ValidationReport, make_report, preview

DEFAULT_SAMPLE = 200


def compare_sample(
    ctx: CheckContext, sample_size: int | None, seed: int | None, limit: int
) -> tuple[RowComparison, Mismatches, Mismatches]:
    """One comparison pass: (its counts, created_at mismatches, every other mismatch)."""
    times, others = Mismatches(limit), Mismatches(limit)

    def route(d: Difference) -> None:
        if d.field == "created_at":
            times.add(
                v1_id=d.v1_id,
                batch_id=d.batch_id,
                field=d.field,
                v1=d.v1,
                v2=d.v2,
                problem="timestamp differs",
            )
            return
        if d.field == "row":
            times.add(v1_id=d.v1_id, field="created_at", v1="present", v2=None, problem=d.problem)
        others.add(
            v1_id=d.v1_id, batch_id=d.batch_id, field=d.field, v1=d.v1, v2=d.v2, problem=d.problem
        )

    comparison = compare_rows(
        ctx.source,
        ctx.reader,
        ctx.source_id,
        sample_size=sample_size,
        seed=seed,
        quarantined=ctx.quarantined,
        on_difference=route,
    )
    return comparison, times, others


def _sample_counts(comparison: RowComparison) -> dict[str, Any]:
    return {
        "mode": "full" if comparison.full else "sample",
        "sampled_rows": comparison.sampled_rows,
        "compared_rows": comparison.compared_rows,
        "skipped_quarantined": comparison.skipped_quarantined,
        "seed": comparison.seed,
    }


def batch_ranges(ctx: CheckContext, mismatches: Mismatches) -> int:
    """Compare the first and last created_at of every batch (and of all rows); returns how
    many batches were compared."""
    held = quarantined_per_batch(ctx)
    compared = 0
    merged = merge(ctx.source.batch_time_ranges(), ctx.reader.batch_time_ranges(ctx.source_id))
    for batch_id, in_v1, in_v2 in merged:
        if in_v1 is None or in_v2 is None:
            continue  # a missing batch is batch_sizes_match's finding
        if batch_id in held:
            in_v1 = ctx.source.batch_time_range(batch_id, without=held[batch_id])
        compared += 1
        _compare_range(mismatches, batch_id, in_v1, in_v2)
    v1_range = ctx.source.time_range(without=list(ctx.quarantined))
    if v1_range[0] is not None:
        _compare_range(mismatches, None, v1_range, ctx.reader.time_range(ctx.source_id))
    return compared


def _compare_range(mismatches: Mismatches, batch_id, in_v1, in_v2) -> None:
    for label, a, b in (
        ("first created_at", in_v1[0], in_v2[0]),
        ("last created_at", in_v1[1], in_v2[1]),
    ):
        expected, got = as_timestamp(a), as_timestamp(b)
        if expected != got:
            mismatches.add(
                batch_id=batch_id,
                field=label,
                v1=expected,
                v2=got,
                problem="batch time range differs"
                if batch_id is not None
                else "time range of all rows differs",
            )


def timestamps_report(
    ctx: CheckContext, comparison: RowComparison, times: Mismatches
) -> ValidationReport:
    """`timestamps_match` from a comparison pass's created_at mismatches plus the ranges."""
    ranges = Mismatches(times.limit)
    compared = batch_ranges(ctx, ranges)
    v1_range = ctx.source.time_range(without=list(ctx.quarantined))
    merged = ranges.followed_by(times)
    counts = {
        "batches_compared": compared,
        "v1_first": preview(as_timestamp(v1_range[0])),
        "v1_last": preview(as_timestamp(v1_range[1])),
        **_sample_counts(comparison),
        "mismatches": merged.count,
    }
    return make_report("timestamps_match", ctx.source_id, counts, merged)


def parity_report(
    ctx: CheckContext, comparison: RowComparison, others: Mismatches
) -> ValidationReport:
    counts = {**_sample_counts(comparison), "mismatches": others.count}
    return make_report("sample_parity", ctx.source_id, counts, others)
