"""The streaming migrate loop: every v1 row the ledger lacks, copied in chunks.

**Streaming.** v1 ids are scanned in pages (index only); rows not yet migrated are read through
a streaming cursor and written in chunks of at most `chunk_rows` rows or `chunk_bytes` of text,
so memory stays flat in the number of rows (and bounded with 100k-character prompts).

**Idempotent and incremental.** Each chunk writes its raw_calls, their ledger entries
(`migration_ledger`: source, v1 id -> raw_calls id, unique per (source, v1 id)) and their batch
memberships in one transaction. A re-run skips every v1 id already in the ledger, so it imports
only new rows (also rows that appear below the high-water mark, e.g. from a PostgreSQL
transaction that committed late), and an interrupted run resumes where it stopped. Two runs at
once cannot duplicate: the second one's chunk violates the ledger's unique key and rolls back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ...db import DatabaseConnection
from ...db.legacy_reader import V1_TABLE, Legacy, LegacySource, opened
from ...db.migration_ledger import ChunkRow, MigrationLedgerRepository
from ...log import get_logger
from .convert import batch_of, text_size, v1_row_to_raw_call
from .source import resolve

logger = get_logger(__name__)

CHUNK_ROWS = 1000
CHUNK_BYTES = 16 * 2**20


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
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.migrated / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rows_per_second": round(self.rows_per_second, 1)}


def _preflight(source: LegacySource) -> None:
    """Problems SQL can find cheaply, raised before anything is written."""
    for name, ids in source.invalid_rows():
        raise ValueError(
            f"legacy {V1_TABLE} rows with an invalid '{name}' (v1 ids {ids}); "
            f"fix them in {source.safe_url} or exclude them, nothing was migrated"
        )


class _Chunker:
    """Collects converted rows and writes them a chunk at a time, keeping the totals."""

    def __init__(self, ledger, source_id, result, chunk_rows, chunk_bytes, on_chunk):
        self.ledger, self.source_id, self.result = ledger, source_id, result
        self.chunk_rows, self.chunk_bytes, self.on_chunk = chunk_rows, chunk_bytes, on_chunk
        self.rows: list[ChunkRow] = []
        self.size = 0
        self.last_log = time.perf_counter()

    def add(self, item: ChunkRow, size: int) -> None:
        self.rows.append(item)
        self.size += size
        if len(self.rows) >= self.chunk_rows or self.size >= self.chunk_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        result = self.result
        added, moved = self.ledger.write_chunk(self.source_id, self.rows)
        result.batch_memberships += added
        result.reordered_members += moved
        result.migrated += len(self.rows)
        result.chunks += 1
        if result.first_v1_id is None:
            result.first_v1_id = self.rows[0][0]
        result.last_v1_id = self.rows[-1][0]
        self.rows, self.size = [], 0
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
        _preflight(source)
        source_id = resolve(source, target, source_id)
        result = MigrationResult(source_id=source_id)
        if source_id is None:
            logger.info("legacy database %s is empty: nothing to migrate", source.safe_url)
            return result
        logger.info(
            "migrating v1 %s as source %s into %s", source.safe_url, source_id, target.safe_url
        )
        ledger = MigrationLedgerRepository(target)
        chunker = _Chunker(ledger, source_id, result, chunk_rows, chunk_bytes, on_chunk)
        for ids in source.id_pages():
            result.v1_rows += len(ids)
            done = ledger.migrated_ids(source_id, ids[0], ids[-1])
            todo = [i for i in ids if i not in done]
            result.already_migrated += len(ids) - len(todo)
            if not todo:
                continue
            wanted = set(todo)
            for row in source.stream_rows(todo, whole_range=len(todo) == len(ids)):
                if row.id not in wanted:  # committed into the range after the id scan
                    continue
                converted = v1_row_to_raw_call(row, source_id)
                chunker.add((row.id, batch_of(row.batch_id), converted), text_size(row))
        chunker.flush()
    result.seconds = time.perf_counter() - started
    logger.info(
        "v1 migration of source %s: %d new rows, %d already migrated, %d batch memberships, "
        "%d chunks in %.1f s (%.0f rows/s)",
        source_id,
        result.migrated,
        result.already_migrated,
        result.batch_memberships,
        result.chunks,
        result.seconds,
        result.rows_per_second,
    )
    return result


def pending_v1_rows(
    legacy: Legacy, target: DatabaseConnection, source_id: str | None = None
) -> int:
    """How many v1 rows the ledger does not have yet (what a sensor asks before a run)."""
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
