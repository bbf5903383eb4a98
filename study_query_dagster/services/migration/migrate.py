"""The streaming migrate loop: every v1 row the ledger lacks, copied in chunks.

**Streaming.** v1 ids are scanned in pages (index only); rows not yet migrated are read through
a streaming cursor and written in chunks of at most `chunk_rows` rows or `chunk_bytes` of text,
so memory stays flat in the number of rows (and bounded with 100k-character prompts). A reader
thread converts the next chunk while the previous one is written (`prefetch`), at most one
chunk ahead.

**Idempotent and incremental.** Each chunk writes its raw_calls, their ledger entries
(`migration_ledger`: source, v1 id -> raw_calls id, unique per (source, v1 id)) and their batch
memberships in one transaction. A re-run skips every v1 id already in the ledger, so it imports
only new rows (also rows that appear below the high-water mark, e.g. from a PostgreSQL
transaction that committed late), and an interrupted run resumes where it stopped. Two runs at
once cannot duplicate: the second one's chunk violates the ledger's unique key and rolls back.

**Quarantine.** A row the v2 schema cannot take (empty or over-long provider, negative or
non-finite latency, a created_at that is not a timestamp, metadata that is not JSON, …) stops
the migration before anything is written when SQL can find it, else at that row, with an error
naming the v1 id, field and value. With `skip_invalid_rows=True` such rows are skipped and
recorded in `migration_quarantine` (source, v1 id, field, reason) instead. A quarantined row is
not in the ledger, so every later run tries it again: once fixed in the v1 database it is
migrated and leaves the quarantine; while it still fails it stays there without failing the run
(only rows not yet quarantined need `skip_invalid_rows`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import V1_TABLE, Legacy, LegacySource, opened
from ...db.migration_ledger import ChunkRow, MigrationLedgerRepository, Quarantined
from ...log import get_logger
from .convert import UnmigratableRow, batch_of, text_size, v1_row_to_raw_call
from .gc_pause import paused_gc
from .prefetch import prefetched
from .source import resolve

logger = get_logger(__name__)

CHUNK_ROWS = 5000
CHUNK_BYTES = 16 * 2**20
QUARANTINE_LISTED = 100  # quarantined rows a result lists (all are counted)
SKIP_HINT = (
    "or set skip_invalid_rows: true (migrated_raw_calls' config in the launchpad; "
    "skip_invalid_rows=True in Python) to quarantine such rows and migrate the rest"
)


@dataclass
class MigrationResult:
    source_id: str | None
    v1_rows: int = 0  # rows in the v1 table when scanned
    migrated: int = 0  # new raw_calls written by this run
    already_migrated: int = 0  # v1 rows skipped because the ledger had them
    batch_memberships: int = 0  # new batch group members
    chunks: int = 0
    reordered_members: int = 0  # positions rewritten to keep batches in created_at order
    first_v1_id: int | None = None  # range of v1 ids migrated by this run
    last_v1_id: int | None = None
    quarantined: int = 0  # rows skipped by this run (new or still failing)
    released: int = 0  # rows migrated by this run that an earlier run had quarantined
    in_quarantine: int = 0  # rows of this source in quarantine after the run
    quarantine: list[dict] = field(default_factory=list)  # the first of them: v1_id, field, reason
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.migrated / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}


def _preflight(source: LegacySource, held: dict) -> None:
    """Bad rows SQL can find cheaply (not already in quarantine), raised before any write."""
    found: dict[str, list[int]] = {}
    for name, v1_id in source.invalid_rows():
        if v1_id not in held and len(found.setdefault(name, [])) < 10:
            found[name].append(v1_id)
    found = {name: ids for name, ids in found.items() if ids}
    if found:
        listed = "; ".join(f"an invalid '{name}' (v1 ids {ids})" for name, ids in found.items())
        raise ValueError(
            f"legacy {V1_TABLE} rows with {listed}: nothing was migrated. Fix them in "
            f"{source.safe_url}, {SKIP_HINT}."
        )


@dataclass
class _Chunk:
    """Converted rows to write together, skipped ones, and the ids scanned to find them."""

    rows: list[ChunkRow] = field(default_factory=list)
    skipped: list[Quarantined] = field(default_factory=list)
    released: list[int] = field(default_factory=list)  # quarantined before, migratable now
    scanned: int = 0
    already_migrated: int = 0


def _chunks(
    source: LegacySource,
    ledger: MigrationLedgerRepository,
    source_id: str,
    held: dict,
    skip_invalid_rows: bool,
    chunk_rows: int,
    chunk_bytes: int,
) -> Iterator[_Chunk]:
    """The v1 rows the ledger lacks, converted, in chunks of at most `chunk_rows` rows or
    `chunk_bytes` of text (runs in the reader thread)."""
    chunk, size = _Chunk(), 0
    for ids in source.id_pages():
        chunk.scanned += len(ids)
        done = ledger.migrated_ids(source_id, ids[0], ids[-1])
        todo = [i for i in ids if i not in done]
        chunk.already_migrated += len(ids) - len(todo)
        if not todo:
            continue
        wanted = set(todo)
        for row in source.stream_rows(todo, whole_range=len(todo) == len(ids)):
            if row.id not in wanted:  # committed into the range after the id scan
                continue
            try:
                converted = v1_row_to_raw_call(row, source_id)
            except UnmigratableRow as problem:
                if not (skip_invalid_rows or row.id in held):
                    raise UnmigratableRow(
                        problem.v1_id,
                        problem.field,
                        f"{problem.reason}. Fix it in {source.safe_url}, {SKIP_HINT}",
                    ) from None
                chunk.skipped.append((problem.v1_id, problem.field, problem.reason))
            else:
                chunk.rows.append((row.id, batch_of(row.batch_id), converted))
                if row.id in held:
                    chunk.released.append(row.id)
                size += text_size(row)
            if (
                len(chunk.rows) >= chunk_rows
                or size >= chunk_bytes
                or (len(chunk.skipped) >= chunk_rows)
            ):
                yield chunk
                chunk, size = _Chunk(), 0
    yield chunk


class _Writer:
    """Writes chunks (in the caller's thread) and keeps the running totals."""

    def __init__(self, chunk_writer, result, on_chunk):
        self.chunk_writer, self.result, self.on_chunk = chunk_writer, result, on_chunk
        self.last_log = time.perf_counter()

    def write(self, chunk: _Chunk) -> None:
        result = self.result
        result.v1_rows += chunk.scanned
        result.already_migrated += chunk.already_migrated
        if not chunk.rows and not chunk.skipped:
            return
        added, moved = self.chunk_writer.write(chunk.rows, chunk.skipped, chunk.released)
        result.quarantined += len(chunk.skipped)
        result.released += len(chunk.released)
        if not chunk.rows:
            return
        result.batch_memberships += added
        result.reordered_members += moved
        result.migrated += len(chunk.rows)
        result.chunks += 1
        if result.first_v1_id is None:
            result.first_v1_id = chunk.rows[0][0]
        result.last_v1_id = chunk.rows[-1][0]
        if self.on_chunk is not None:
            self.on_chunk(result)
        if time.perf_counter() - self.last_log > 5:
            self.last_log = time.perf_counter()
            logger.info(
                "migrated %d v1 rows so far (last v1 id %s)", result.migrated, result.last_v1_id
            )


def migrate_v1_to_v2(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    skip_invalid_rows: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    chunk_bytes: int = CHUNK_BYTES,
    on_chunk: Callable[[MigrationResult], None] | None = None,
) -> MigrationResult:
    """Copy every v1 row not yet in the ledger into raw_calls (see the module docstring).
    `on_chunk` is called with the running totals after each committed chunk."""
    if chunk_rows < 1 or chunk_bytes < 1:
        raise ValueError(f"chunk_rows and chunk_bytes must be >= 1 ({chunk_rows}, {chunk_bytes})")
    started = time.perf_counter()
    with opened(legacy) as source:
        source.check_schema()
        source_id = resolve(source, target, source_id)
        result = MigrationResult(source_id=source_id)
        if source_id is None:
            logger.info("legacy database %s is empty: nothing to migrate", source.safe_url)
            return result
        ledger = MigrationLedgerRepository(target)
        held = ledger.quarantined(source_id)
        if not skip_invalid_rows:
            _preflight(source, held)
        logger.info(
            "migrating v1 %s as source %s into %s", source.safe_url, source_id, target.safe_url
        )
        reader = partial(
            _chunks, source, ledger, source_id, held, skip_invalid_rows, chunk_rows, chunk_bytes
        )
        # The next chunk is read and converted while this one is written.
        with (
            paused_gc(),
            ledger.writer(source_id) as chunk_writer,
            prefetched(reader, name="v1-reader") as chunks,
        ):
            writer = _Writer(chunk_writer, result, on_chunk)
            for chunk in chunks:
                writer.write(chunk)
        _report_quarantine(result, ledger.quarantined(source_id))
    result.seconds = time.perf_counter() - started
    logger.info(
        "v1 migration of source %s: %d new rows, %d already migrated, %d batch memberships, "
        "%d quarantined, %d chunks in %.1f s (%.0f rows/s)",
        source_id,
        result.migrated,
        result.already_migrated,
        result.batch_memberships,
        result.quarantined,
        result.chunks,
        result.seconds,
        result.rows_per_second,
    )
    return result


def _report_quarantine(result: MigrationResult, held: dict) -> None:
    result.in_quarantine = len(held)
    result.quarantine = [
        {"v1_id": v1_id, "field": field_, "reason": reason}
        for v1_id, (field_, reason) in list(held.items())[:QUARANTINE_LISTED]
    ]
    if held:
        logger.warning(
            "%d v1 rows of source %s are in quarantine (first: v1 id %s, %s)",
            len(held),
            result.source_id,
            result.quarantine[0]["v1_id"],
            result.quarantine[0]["reason"],
        )


def pending_v1_rows(
    legacy: Legacy, target: DatabaseConnection, source_id: str | None = None
) -> int:
    """How many v1 rows the ledger does not have yet (what a sensor asks before a run);
    quarantined rows count as pending."""
    with opened(legacy) as source:
        source.check_schema()
        source_id = resolve(source, target, source_id)
        if source_id is None:
            return 0
        ledger = MigrationLedgerRepository(target)
        return sum(
            len(ids) - len(ledger.migrated_ids(source_id, ids[0], ids[-1]))
            for ids in source.id_pages()
        )
