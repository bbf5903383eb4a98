"""Backfill validation: the v1 source compared with what the ledger says was migrated.

`row_counts_match`, `batch_sizes_match`, `timestamps_match` and `sample_parity` (or all four with
`validate_migration`) each return a `ValidationReport` whose mismatches name the v1 id and/or
batch. They stream both databases in key order (bytewise collation on both backends) and
sample rows by seeded reservoir sampling (`sample_size=None` compares every row).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import Legacy, opened
from ...db.migration_ledger import MigrationLedgerRepository
from .convert import as_timestamp, batch_of, parse_v1_timestamp, v1_metadata
from .report import (
    CHECKS,
    MISMATCH_LIMIT,
    Mismatches,
    ValidationReport,
    empty_report,
    make_report,
    preview,
)
from .source import start

PAGE = 500  # sampled ids compared per round trip


def _merge(left: Iterable, right: Iterable) -> Iterator[tuple[Any, Any, Any]]:
    """Full outer merge of two streams of (key, value) sorted by key: (key, left, right)."""
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


def _pages(ids: list[int], size: int = PAGE) -> Iterator[list[int]]:
    for first in range(0, len(ids), size):
        yield ids[first : first + size]


def row_counts_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Every v1 row has exactly one ledger entry and one tagged raw_call, and nothing else does.
    Names v1 ids missing from the ledger, ledger ids gone from v1, and stray migrated copies."""
    mismatches = Mismatches(limit)
    ledger = MigrationLedgerRepository(target)
    with opened(legacy) as source:
        source_id = start(source, target, source_id)
        if source_id is None:
            return empty_report("row_counts_match")
        v1_ids = ((i,) for page in source.id_pages() for i in page)
        v1_rows = ledger_rows = 0
        for v1_id, in_v1, in_ledger in _merge(v1_ids, ledger.ledger_entries(source_id)):
            v1_rows += in_v1 is not None
            ledger_rows += in_ledger is not None
            if in_ledger is None:
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
    tagged, strays, stray_count = ledger.tagged_rows(source_id, limit)
    for call_id, v1_id in strays:
        mismatches.add(
            v1_id=v1_id,
            field="row",
            v1="one row",
            v2=f"extra raw_call {call_id}",
            problem="migrated copy not in the ledger",
        )
    mismatches.count += max(stray_count - len(strays), 0)
    counts = {"v1_rows": v1_rows, "ledger_rows": ledger_rows, "v2_tagged_rows": tagged}
    return make_report("row_counts_match", source_id, counts, mismatches)


def batch_sizes_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Each v1 batch_id has a `batch` group with as many migrated members as v1 rows. A
    mismatch names the batch and the v1 ids missing from (or foreign to) its group."""
    mismatches = Mismatches(limit)
    counts = {"v1_batches": 0, "v2_batches": 0, "v1_batched_rows": 0, "v2_batch_members": 0}
    ledger = MigrationLedgerRepository(target)
    with opened(legacy) as source:
        source_id = start(source, target, source_id)
        if source_id is None:
            return empty_report("batch_sizes_match")
        merged = _merge(source.batch_sizes(), ledger.batch_sizes(source_id))
        for batch_id, in_v1, in_v2 in merged:
            n1 = in_v1[0] if in_v1 else 0
            n2 = in_v2[0] if in_v2 else 0
            counts["v1_batches"] += in_v1 is not None
            counts["v2_batches"] += in_v2 is not None
            counts["v1_batched_rows"] += n1
            counts["v2_batch_members"] += n2
            if n1 == n2:
                continue
            missing: list[int] = []
            foreign: list[int] = []
            if mismatches.count < limit:
                in_v1_ids = source.batch_member_ids(batch_id)
                in_group = ledger.batch_member_v1_ids(source_id, batch_id)
                missing, foreign = sorted(in_v1_ids - in_group), sorted(in_group - in_v1_ids)
            problem = "; ".join(
                p
                for p in (
                    f"v1 ids missing from the group: {missing[:10]}" if missing else "",
                    f"members from other v1 rows: {foreign[:10]}" if foreign else "",
                )
                if p
            ) or ("no group for this batch" if not in_v2 else "sizes differ")
            first = (missing or foreign or [None])[0]
            mismatches.add(
                v1_id=first, batch_id=batch_id, field="size", v1=n1, v2=n2, problem=problem
            )
    counts["mismatched_batches"] = mismatches.count
    return make_report("batch_sizes_match", source_id, counts, mismatches)


def sample_v1_ids(legacy: Legacy, size: int | None, seed: int | None = None) -> list[int]:
    """A uniform random sample of v1 ids (reservoir sampling over the id scan: one pass,
    memory of `size` ids), ascending. `size=None` returns every id."""
    rng = random.Random(seed)
    sample: list[int] = []
    seen = 0
    with opened(legacy) as source:
        for page in source.id_pages():
            for v1_id in page:
                seen += 1
                if size is None or len(sample) < size:
                    sample.append(v1_id)
                else:
                    slot = rng.randrange(seen)
                    if slot < size:
                        sample[slot] = v1_id
    return sorted(sample)


def _sample(source, sample_size, seed) -> tuple[list[int], int | None]:
    if sample_size is not None and sample_size < 0:
        raise ValueError(f"sample_size must be >= 0 or None (got {sample_size})")
    if seed is None and sample_size is not None:
        seed = random.randrange(2**31)
    return sample_v1_ids(source, sample_size, seed), seed


def _sampled_pairs(source, ledger, source_id, ids) -> Iterator[tuple[Any, dict | None]]:
    """(v1 row, its migrated raw_call as a dict or None) for the sampled ids."""
    for page in _pages(ids):
        calls = ledger.migrated_calls(source_id, page)
        for row in source.rows(page):
            yield row, calls.get(row.id)


def timestamps_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    sample_size: int | None = 200,
    seed: int | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Earliest and latest created_at per batch (and over all rows) agree, and sampled rows
    (every row with `sample_size=None`) have exactly their v1 created_at. The seed used is
    reported so a failing sample can be re-drawn."""
    mismatches = Mismatches(limit)
    ledger = MigrationLedgerRepository(target)
    with opened(legacy) as source:
        source_id = start(source, target, source_id)
        if source_id is None:
            return empty_report("timestamps_match")
        counts: dict[str, Any] = {"batches_compared": 0}
        merged = _merge(source.batch_time_ranges(), ledger.batch_time_ranges(source_id))
        for batch_id, in_v1, in_v2 in merged:
            if in_v1 is None or in_v2 is None:
                continue  # a missing batch is batch_sizes_match's finding
            counts["batches_compared"] += 1
            _compare_range(mismatches, batch_id, in_v1, in_v2)
        v1_range = source.time_range()
        if v1_range[0] is not None:
            _compare_range(mismatches, None, v1_range, ledger.time_range(source_id))
        counts["v1_first"] = preview(as_timestamp(v1_range[0]))
        counts["v1_last"] = preview(as_timestamp(v1_range[1]))
        ids, seed = _sample(source, sample_size, seed)
        counts.update(sampled_rows=len(ids), seed=seed)
        for row, call in _sampled_pairs(source, ledger, source_id, ids):
            expected = parse_v1_timestamp(row.created_at, row.id)
            if call is None:
                mismatches.add(
                    v1_id=row.id,
                    field="created_at",
                    v1=expected,
                    v2=None,
                    problem="sampled row was not migrated",
                )
            elif call["created_at"] != expected:
                mismatches.add(
                    v1_id=row.id,
                    field="created_at",
                    v1=expected,
                    v2=call["created_at"],
                    problem="timestamp differs",
                )
    counts["mismatches"] = mismatches.count
    return make_report("timestamps_match", source_id, counts, mismatches)


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


def sample_parity(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    sample_size: int | None = 200,
    seed: int | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Sampled v1 rows (every row with `sample_size=None`) equal their raw_call on prompt,
    response, provider, tokens, latency and metadata (and carry their v1 id)."""
    mismatches = Mismatches(limit)
    ledger = MigrationLedgerRepository(target)
    with opened(legacy) as source:
        source_id = start(source, target, source_id)
        if source_id is None:
            return empty_report("sample_parity")
        ids, seed = _sample(source, sample_size, seed)
        compared = 0
        for row, call in _sampled_pairs(source, ledger, source_id, ids):
            if call is None:
                mismatches.add(
                    v1_id=row.id,
                    field="row",
                    v1="present",
                    v2="missing",
                    problem="sampled row was not migrated",
                )
                continue
            compared += 1
            for name, expected, got in _parity_fields(row, call):
                if expected != got:
                    mismatches.add(
                        v1_id=row.id,
                        batch_id=batch_of(row.batch_id),
                        field=name,
                        v1=expected,
                        v2=got,
                        problem=f"{name} differs",
                    )
    counts = {
        "sampled_rows": len(ids),
        "compared_rows": compared,
        "seed": seed,
        "mismatches": mismatches.count,
    }
    return make_report("sample_parity", source_id, counts, mismatches)


def _parity_fields(row, call: dict) -> Iterator[tuple[str, Any, Any]]:
    request, response = call["request_json"] or {}, call["response_json"] or {}
    tokens, metadata = call["tokens_json"] or {}, call["metadata_json"] or {}
    yield "prompt", row.prompt, request.get("prompt")
    yield "response", row.response, response.get("text")
    yield "provider", row.provider, call["provider"]
    yield "tokens", row.tokens, tokens.get("total_tokens")
    expected_latency = None if row.latency_ms is None else float(row.latency_ms)
    yield "latency_ms", expected_latency, call["latency_ms"]
    yield "metadata", v1_metadata(row.metadata, row.id), metadata.get("v1_metadata")
    yield "v1_id", row.id, metadata.get("v1_id")


def validate_migration(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    sample_size: int | None = 200,
    seed: int | None = None,
) -> list[ValidationReport]:
    """All four backfill checks."""
    with opened(legacy) as source:
        source_id = start(source, target, source_id)
        if source_id is None:
            return [empty_report(name) for name in CHECKS]
        sampled = {"source_id": source_id, "sample_size": sample_size, "seed": seed}
        return [
            row_counts_match(source, target, source_id=source_id),
            batch_sizes_match(source, target, source_id=source_id),
            timestamps_match(source, target, **sampled),
            sample_parity(source, target, **sampled),
        ]
