"""The backfill checks that compare whole sets: row counts, batch sizes, batch order, quarantine.

Each returns a `ValidationReport` whose mismatches name the v1 id and/or batch. Both databases
are streamed in the same key order (v1 id, or batch name collated bytewise on both backends)
and merged, so no side is held in memory (one batch at a time for the order check). Rows in
quarantine are left out and counted: they were skipped on purpose, and `no_rows_quarantined`
lists them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import Legacy
from .context import CheckContext, checking
from .convert import UnmigratableRow, parse_v1_timestamp
from .report import MISMATCH_LIMIT, Mismatches, ValidationReport, empty_report, make_report

PAGE = 500


def merge(left: Iterable, right: Iterable) -> Iterator[tuple[Any, Any, Any]]:
    """Full outer merge of two streams of (key, value…) sorted by key: (key, left, right)."""
    sentinel = object()
    lit, rit = iter(left), iter(right)
    lrow, rrow = next(lit, sentinel), next(rit, sentinel)
    while lrow is not sentinel or rrow is not sentinel:
        if rrow is sentinel or (lrow is not sentinel and lrow[0] < rrow[0]):
            yield lrow[0], lrow[1:], None
            lrow = next(lit, sentinel)
        elif lrow is sentinel or rrow[0] < lrow[0]:
            yield rrow[0], None, rrow[1:]
            rrow = next(rit, sentinel)
        else:
            yield lrow[0], lrow[1:], rrow[1:]
            lrow, rrow = next(lit, sentinel), next(rit, sentinel)


def quarantined_per_batch(ctx: CheckContext) -> dict[str, list[int]]:
    """Batch id -> the v1 ids of its rows in quarantine."""
    ids = sorted(ctx.quarantined)
    out: dict[str, list[int]] = {}
    for first in range(0, len(ids), PAGE):
        for v1_id, batch in ctx.source.batch_ids_of(ids[first : first + PAGE]).items():
            if batch:
                out.setdefault(batch, []).append(v1_id)
    return out


def row_counts_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Every v1 row has exactly one ledger entry and one tagged raw_call (or is in quarantine),
    and nothing else does. Names v1 ids missing from the ledger, ledger ids gone from v1, and
    stray migrated copies."""
    mismatches = Mismatches(limit)
    with checking(legacy, target, source_id) as ctx:
        if ctx is None:
            return empty_report("row_counts_match")
        v1_ids = ((i,) for page in ctx.source.id_pages() for i in page)
        v1_rows = ledger_rows = quarantined = 0
        for v1_id, in_v1, in_ledger in merge(v1_ids, ctx.ledger.ledger_entries(ctx.source_id)):
            v1_rows += in_v1 is not None
            ledger_rows += in_ledger is not None
            if in_ledger is None and v1_id in ctx.quarantined:
                quarantined += 1
            elif in_ledger is None:
                mismatches.add(
                    v1_id=v1_id,
                    field="row",
                    v1="present",
                    v2="missing",
                    problem="v1 row was not migrated",
                )
            elif in_v1 is None:
                mismatches.add(
                    v1_id=v1_id,
                    field="row",
                    v1="missing",
                    v2=f"raw_call {in_ledger[0]}",
                    problem="ledger entry without a v1 row",
                )
        tagged, strays, stray_count = ctx.reader.tagged_rows(ctx.source_id, limit)
        for call_id, v1_id in strays:
            mismatches.add(
                v1_id=v1_id,
                field="row",
                v1="one row",
                v2=f"extra raw_call {call_id}",
                problem="migrated copy not in the ledger",
            )
        mismatches.count += max(stray_count - len(strays), 0)
        counts = {
            "v1_rows": v1_rows,
            "ledger_rows": ledger_rows,
            "v2_tagged_rows": tagged,
            "quarantined_rows": quarantined,
        }
        return make_report("row_counts_match", ctx.source_id, counts, mismatches)


def batch_sizes_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Each v1 batch_id has a `batch` group with as many migrated members as v1 rows (less its
    rows in quarantine). A mismatch names the batch and the v1 ids missing from (or foreign to)
    its group."""
    mismatches = Mismatches(limit)
    counts = {
        "v1_batches": 0,
        "v2_batches": 0,
        "v1_batched_rows": 0,
        "v2_batch_members": 0,
        "quarantined_members": 0,
    }
    with checking(legacy, target, source_id) as ctx:
        if ctx is None:
            return empty_report("batch_sizes_match")
        held = quarantined_per_batch(ctx)
        merged = merge(ctx.source.batch_sizes(), ctx.reader.batch_sizes(ctx.source_id))
        for batch_id, in_v1, in_v2 in merged:
            skipped = len(held.get(batch_id, ()))
            n1 = (in_v1[0] if in_v1 else 0) - skipped
            n2 = in_v2[0] if in_v2 else 0
            counts["v1_batches"] += in_v1 is not None
            counts["v2_batches"] += in_v2 is not None
            counts["v1_batched_rows"] += n1
            counts["v2_batch_members"] += n2
            counts["quarantined_members"] += skipped
            if n1 == n2:
                continue
            _size_mismatch(ctx, mismatches, batch_id, n1, n2, in_v2 is not None)
        counts["mismatched_batches"] = mismatches.count
        return make_report("batch_sizes_match", ctx.source_id, counts, mismatches)


def _size_mismatch(ctx, mismatches: Mismatches, batch_id, n1, n2, has_group) -> None:
    missing: list[int] = []
    foreign: list[int] = []
    if mismatches.count < mismatches.limit:
        in_v1 = ctx.source.batch_member_ids(batch_id) - ctx.quarantined.keys()
        in_group = ctx.reader.batch_member_v1_ids(ctx.source_id, batch_id)
        missing, foreign = sorted(in_v1 - in_group), sorted(in_group - in_v1)
    problems = [
        f"v1 ids missing from the group: {missing[:10]}" if missing else "",
        f"members from other v1 rows: {foreign[:10]}" if foreign else "",
    ]
    problem = "; ".join(p for p in problems if p)
    problem = problem or ("sizes differ" if has_group else "no group for this batch")
    first = (missing or foreign or [None])[0]
    mismatches.add(v1_id=first, batch_id=batch_id, field="size", v1=n1, v2=n2, problem=problem)


def _v1_batch_orders(ctx: CheckContext) -> Iterator[tuple[str, list[int]]]:
    """(batch_id, its migratable v1 ids in (created_at, id) order), bytewise batch order."""
    for batch_id, rows in groupby(ctx.source.batch_rows(), key=lambda r: r[0]):
        keyed = []
        for _, v1_id, created_at in rows:
            if v1_id in ctx.quarantined:
                continue
            try:
                keyed.append((parse_v1_timestamp(created_at, v1_id), v1_id))
            except UnmigratableRow:
                continue  # never migrated: row_counts_match names it
        yield batch_id, [v1_id for _, v1_id in sorted(keyed)]


def batch_order_matches(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Each batch group lists its migrated members in the order v1 lists the batch (created_at,
    then v1 id): position by position, over every batch. A mismatch names the batch, the first
    position that differs and the v1 ids expected and found there."""
    mismatches = Mismatches(limit)
    counts = {"batches_compared": 0, "members_compared": 0}
    with checking(legacy, target, source_id) as ctx:
        if ctx is None:
            return empty_report("batch_order_matches")
        merged = merge(_v1_batch_orders(ctx), ctx.reader.batch_orders(ctx.source_id))
        for batch_id, in_v1, in_v2 in merged:
            if in_v1 is None or in_v2 is None:
                continue  # a missing batch is batch_sizes_match's finding
            counts["batches_compared"] += 1
            # Membership is batch_sizes_match's finding: compare the order of shared members.
            shared = set(in_v1[0]) & set(in_v2[0])
            expected = [i for i in in_v1[0] if i in shared]
            found = [i for i in in_v2[0] if i in shared]
            counts["members_compared"] += len(shared)
            for position, (want, got) in enumerate(zip(expected, found, strict=True), 1):
                if want != got:
                    mismatches.add(
                        v1_id=want,
                        batch_id=batch_id,
                        field="position",
                        v1=want,
                        v2=got,
                        problem=f"position {position} of {len(shared)}: v1 order has v1 id "
                        f"{want}, the group has v1 id {got}",
                    )
                    break
        counts["mismatched_batches"] = mismatches.count
        return make_report("batch_order_matches", ctx.source_id, counts, mismatches)


def no_rows_quarantined(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Passes when no v1 row of the source is in quarantine; otherwise lists them (v1 id,
    field, reason) so they can be fixed in the v1 database and migrated by the next run."""
    mismatches = Mismatches(limit)
    with checking(legacy, target, source_id) as ctx:
        if ctx is None:
            return empty_report("no_rows_quarantined")
        listed = list(ctx.quarantined)[:limit]
        batches = ctx.source.batch_ids_of(listed) if listed else {}
        for v1_id, (field, reason) in ctx.quarantined.items():
            mismatches.add(
                v1_id=v1_id,
                batch_id=batches.get(v1_id) or None,
                field=field,
                v1="skipped",
                v2="not migrated",
                problem=reason,
            )
        counts = {
            "quarantined_rows": len(ctx.quarantined),
            "fields": ", ".join(sorted(Counter(f for f, _ in ctx.quarantined.values()))),
        }
        return make_report("no_rows_quarantined", ctx.source_id, counts, mismatches)
