"""v1 -> v2 migration and its backfill validation.

The legacy table `inference_runs` (SQLite or PostgreSQL) is copied into `raw_calls`:

- `request_json={"prompt": prompt}`, `response_json={"text": response}`,
  `tokens_json={"total_tokens": tokens}` (None when v1 had no count), `latency_ms`, provider,
  `status="success"` (v1 stored only answers), `modality="text"`, `model` from the v1
  metadata's "model" string when there is one, and `created_at` exactly (naive v1 timestamps
  are UTC). `metadata_json` = {"migrated_from": "v1", "v1_source", "v1_id", "v1_batch_id",
  "v1_metadata"} keeps the v1 id and the v1 metadata untouched.
- each v1 `batch_id` becomes a group (type "batch", named by the batch_id) whose members are
  ordered by created_at (then v1 id). Rows without a batch_id (NULL or '') join no group.

**Streaming.** v1 ids are scanned in pages (index only); rows not yet migrated are read through
a streaming cursor and written in chunks of at most `chunk_rows` rows or `chunk_bytes` of text,
so memory stays flat in the number of rows (and bounded with 100k-character prompts).

**Idempotent and incremental.** Each chunk writes its raw_calls, their ledger entries
(`migration_ledger`: source, v1 id -> raw_calls id, unique per (source, v1 id)) and their batch
memberships in one transaction. A re-run skips every v1 id already in the ledger, so it imports
only new rows (also rows that appear below the high-water mark, e.g. from a PostgreSQL
transaction that committed late), and an interrupted run resumes where it stopped. Two runs at
once cannot duplicate: the second one's chunk violates the ledger's unique key and rolls back.

**What identifies a source.** Not its URL: a SQLite file that is moved, copied or reached
through another path must not be imported twice. A source is identified by its content: the v1
row with the smallest id is looked up in the ledger (same v1 id, same created_at, same prompt);
if a source already migrated it, that source id is reused. Otherwise the new source id is
"v1-" + a hash of that row (id, created_at, provider, prompt), so the same v1 database gets the
same id in any target. A v1 database whose first rows were deleted still resolves (its new
first row is in the ledger). Two databases that share their first row (copies that diverged)
would be taken for one; pass `source_id=` explicitly to keep them apart.

The legacy database is only read: SQLite files are opened read-only (so not even their journal
mode changes), PostgreSQL sessions are read-only transactions.

**Backfill validation** (`row_counts_match`, `batch_sizes_match`, `timestamps_match`,
`sample_parity`) compares the v1 source with what the ledger says was migrated and returns a
`ValidationReport` (passed, counts, mismatches naming the v1 id and/or batch). They also stream.
"""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Text,
    and_,
    bindparam,
    cast,
    column,
    create_engine,
    exists,
    func,
    insert,
    inspect,
    or_,
    select,
    table,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ..db import (
    DatabaseConnection,
    Group,
    GroupMember,
    MigrationLedger,
    RawCall,
    RawCallRepository,
    validate_raw_call,
)
from ..db.connection import normalize_url
from ..db.types import to_utc, utcnow
from ..log import get_logger

logger = get_logger(__name__)

V1_TABLE = "inference_runs"
V1_COLUMNS = ("id", "prompt", "response", "provider", "tokens", "latency_ms", "metadata",
              "batch_id", "created_at")  # fmt: skip
BATCH_GROUP_TYPE = "batch"
CHUNK_ROWS = 1000
CHUNK_BYTES = 16 * 2**20
ID_PAGE = 5000  # v1 ids per scan page (and per IN list)
STREAM_ROWS = 50  # rows per fetch from the streaming cursor
MISMATCH_LIMIT = 50

# Untyped columns: the driver's own values (SQLite timestamps stay strings we parse ourselves).
v1 = table(V1_TABLE, *(column(name) for name in V1_COLUMNS))


# --- the legacy source --------------------------------------------------------------------


@dataclass
class LegacySource:
    """A v1 database opened for reading only."""

    engine: Engine
    owned: bool = True
    label: str = ""  # what messages and logs call it: a file path, or a URL without password

    @classmethod
    def open(cls, url: str | URL) -> LegacySource:
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database in (None, "", ":memory:"):
                raise ValueError("the legacy database must be a SQLite file or PostgreSQL URL")
            path = Path(database).expanduser().resolve()
            if not path.is_file():
                raise FileNotFoundError(f"legacy v1 database file not found: {path}")
            uri = f"{path.as_uri()}?mode=ro"
            engine = create_engine(
                "sqlite://",
                creator=lambda: sqlite3.connect(uri, uri=True, timeout=30),
                poolclass=NullPool,
            )
            return cls(engine, label=str(path))
        engine = create_engine(
            parsed,
            poolclass=NullPool,
            connect_args={"options": "-c default_transaction_read_only=on"},
        )
        return cls(engine, label=parsed.render_as_string(hide_password=True))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def safe_url(self) -> str:
        return self.label or self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        if self.owned:
            self.engine.dispose()


Legacy = LegacySource | DatabaseConnection | str | URL


@contextmanager
def opened(legacy: Legacy) -> Iterator[LegacySource]:
    """A `LegacySource` for a URL (disposed afterwards), or the given source/connection."""
    if isinstance(legacy, LegacySource):
        yield legacy
        return
    if isinstance(legacy, DatabaseConnection):
        yield LegacySource(legacy.engine, owned=False, label=legacy.safe_url)
        return
    source = LegacySource.open(legacy)
    try:
        yield source
    finally:
        source.dispose()


def check_legacy_schema(source: LegacySource) -> None:
    """Raise a clear error unless the source has the v1 table with the v1 columns."""
    try:
        inspector = inspect(source.engine)
        if not inspector.has_table(V1_TABLE):
            raise ValueError(f"legacy database {source.safe_url} has no table '{V1_TABLE}'")
        present = {c["name"] for c in inspector.get_columns(V1_TABLE)}
    except OperationalError as exc:
        raise ValueError(f"cannot read legacy database {source.safe_url}: {exc.orig}") from exc
    missing = [c for c in V1_COLUMNS if c not in present]
    if missing:
        raise ValueError(f"legacy table {V1_TABLE} in {source.safe_url} lacks column(s) {missing}")


def legacy_stats(legacy: Legacy) -> dict[str, Any]:
    """What an observation of the v1 database reports: row count, max id, newest created_at."""
    with opened(legacy) as source:
        check_legacy_schema(source)
        with source.engine.connect() as conn:
            row = conn.execute(
                select(func.count(), func.max(v1.c.id), func.max(v1.c.created_at))
            ).one()
    newest = parse_v1_timestamp(row[2], "max") if row[2] is not None else None
    return {"row_count": int(row[0]), "max_id": row[1], "max_created_at": newest}


# --- converting a v1 row ------------------------------------------------------------------


def parse_v1_timestamp(value: Any, v1_id: Any) -> datetime:
    """A v1 created_at as an aware UTC datetime, to the microsecond. SQLite gives text (naive,
    UTC); PostgreSQL gives datetimes (naive for `timestamp`, aware for `timestamptz`)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"v1 {V1_TABLE} id={v1_id}: created_at {value!r} is not a timestamp"
            ) from None
    if not isinstance(value, datetime):
        raise ValueError(f"v1 {V1_TABLE} id={v1_id}: created_at {value!r} is not a timestamp")
    return to_utc(value)


def _v1_metadata(text: str | None, v1_id: int) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"v1 {V1_TABLE} id={v1_id}: metadata is not valid JSON ({exc})") from None


def _batch(batch_id: str | None) -> str | None:
    return batch_id if batch_id else None


def v1_row_to_raw_call(row: Any, source_id: str) -> dict[str, Any]:
    """The raw_calls row for one v1 row (validated; errors name the v1 id)."""
    try:
        return _convert(row, source_id)
    except (TypeError, ValueError) as exc:
        if f"id={row.id}" in str(exc):
            raise
        raise ValueError(f"v1 {V1_TABLE} id={row.id}: {exc}") from exc


def _convert(row: Any, source_id: str) -> dict[str, Any]:
    metadata = _v1_metadata(row.metadata, row.id)
    model = metadata.get("model") if isinstance(metadata, dict) else None
    raw = {
        "provider": row.provider,
        "model": model if isinstance(model, str) and 0 < len(model) <= 255 else None,
        "modality": "text",
        "status": "success",
        "request_json": {"prompt": row.prompt},
        "response_json": {"text": row.response},
        "latency_ms": None if row.latency_ms is None else float(row.latency_ms),
        "tokens_json": None if row.tokens is None else {"total_tokens": int(row.tokens)},
        "metadata_json": {
            "migrated_from": "v1",
            "v1_source": source_id,
            "v1_id": row.id,
            "v1_batch_id": row.batch_id,
            "v1_metadata": metadata,
        },
        "created_at": parse_v1_timestamp(row.created_at, row.id),
    }
    return validate_raw_call(raw, f"v1 {V1_TABLE} id={row.id}")


def _select_v1_rows():
    # metadata as text on both backends (psycopg2 would parse PostgreSQL json itself, and a
    # JSON string value would then be indistinguishable from JSON text).
    return select(*(cast(v1.c.metadata, Text).label("metadata") if c == "metadata" else v1.c[c]
                    for c in V1_COLUMNS))  # fmt: skip


# --- source identity ----------------------------------------------------------------------


IDENTITY_ROWS = 8  # first v1 rows consulted to recognise an already migrated source


def _first_v1_rows(source: LegacySource, n: int) -> list:
    with source.engine.connect() as conn:
        return conn.execute(_select_v1_rows().order_by(v1.c.id).limit(n)).all()


def source_fingerprint(legacy: Legacy) -> str | None:
    """ "v1-" + a hash of the v1 row with the smallest id; None for an empty table."""
    with opened(legacy) as source:
        rows = _first_v1_rows(source, 1)
    return _fingerprint(rows[0]) if rows else None


def _fingerprint(row) -> str:
    created = parse_v1_timestamp(row.created_at, row.id).isoformat()
    text = "\x1f".join([str(row.id), created, row.provider or "", row.prompt or ""])
    return "v1-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def resolve_source_id(legacy: Legacy, target: DatabaseConnection) -> str | None:
    """The ledger's id for this v1 database if it was migrated before (from any path or copy),
    else its fingerprint; None for an empty v1 table.

    Each of the first `IDENTITY_ROWS` v1 rows votes for the sources that migrated a row with
    the same v1 id, created_at and prompt; the source with most votes wins, so neither a
    deleted nor an edited first row changes the identity."""
    with opened(legacy) as source:
        rows = _first_v1_rows(source, IDENTITY_ROWS)
    if not rows:
        return None
    expected = {}
    for row in rows:
        try:
            expected[row.id] = (parse_v1_timestamp(row.created_at, row.id), row.prompt)
        except ValueError:
            continue  # a bad timestamp is reported by the migration itself
    stmt = (
        select(MigrationLedger.source, MigrationLedger.v1_id, RawCall.created_at,
               RawCall.request_json)
        .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
        .where(MigrationLedger.v1_id.in_(list(expected)))
    )  # fmt: skip
    votes: dict[str, int] = {}
    with target.session_scope() as session:
        for source_id, v1_id, created_at, request in session.execute(stmt):
            prompt = request.get("prompt") if isinstance(request, dict) else None
            if (created_at, prompt) == expected[v1_id]:
                votes[source_id] = votes.get(source_id, 0) + 1
    if not votes:
        return _fingerprint(rows[0])
    best = max(votes.values())
    winners = sorted(s for s, n in votes.items() if n == best)
    if len(winners) > 1:
        raise ValueError(
            f"legacy database matches several migrated sources {winners}; pass source_id explicitly"
        )
    return winners[0]


def _resolve(source: LegacySource, target: DatabaseConnection, source_id: str | None):
    if source_id is not None:
        if not source_id or len(source_id) > 64:
            raise ValueError(f"source_id must be 1 to 64 characters (got {source_id!r})")
        return source_id
    return resolve_source_id(source, target)


# --- migration ----------------------------------------------------------------------------


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
    checks = [
        ("provider", or_(v1.c.provider.is_(None), func.trim(v1.c.provider) == "")),
        ("provider", func.length(v1.c.provider) > 64),
        ("latency_ms", v1.c.latency_ms < 0),
        ("batch_id", func.length(v1.c.batch_id) > 255),
    ]
    with source.engine.connect() as conn:
        for name, condition in checks:
            ids = conn.scalars(select(v1.c.id).where(condition).order_by(v1.c.id).limit(10)).all()
            if ids:
                raise ValueError(
                    f"legacy {V1_TABLE} rows with an invalid '{name}' (v1 ids {list(ids)}); "
                    f"fix them in {source.safe_url} or exclude them, nothing was migrated"
                )


def _id_pages(source: LegacySource, page: int = ID_PAGE) -> Iterator[list[int]]:
    """All v1 ids, ascending, `page` at a time (keyset paging on the primary key)."""
    after = None
    with source.engine.connect() as conn:
        while True:
            stmt = select(v1.c.id).order_by(v1.c.id).limit(page)
            if after is not None:
                stmt = stmt.where(v1.c.id > after)
            ids = list(conn.scalars(stmt))
            if not ids:
                return
            yield ids
            after = ids[-1]


def _ledger_ids(session: Session, source_id: str, low: int, high: int) -> set[int]:
    stmt = select(MigrationLedger.v1_id).where(
        MigrationLedger.source == source_id, MigrationLedger.v1_id.between(low, high)
    )
    return set(session.scalars(stmt))


def _stream_v1_rows(source: LegacySource, ids: list[int], whole_range: bool) -> Iterator[Any]:
    stmt = _select_v1_rows().order_by(v1.c.id)
    if whole_range:
        stmt = stmt.where(v1.c.id.between(ids[0], ids[-1]))
    else:
        stmt = stmt.where(v1.c.id.in_(ids))
    with source.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(stmt)
        yield from result


def _insert_ignore(session: Session, model, index_elements: list[str]):
    dialect_insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    return dialect_insert(model).on_conflict_do_nothing(index_elements=index_elements)


def _batch_group_ids(session: Session, names: set[str], source_id: str) -> dict[str, int]:
    """Group id per v1 batch_id, creating the missing groups in one statement."""
    wanted = sorted(names)
    stmt = select(Group.name, Group.id).where(
        Group.group_type == BATCH_GROUP_TYPE, Group.name.in_(wanted)
    )
    found = dict(session.execute(stmt).all())
    missing = [n for n in wanted if n not in found]
    if missing:
        session.execute(
            _insert_ignore(session, Group, ["group_type", "name"]),
            [
                {
                    "group_type": BATCH_GROUP_TYPE,
                    "name": name,
                    "description": f"v1 batch {name} (migrated)",
                    "metadata_json": {"migrated_from": "v1", "v1_source": source_id},
                    "created_at": utcnow(),
                }
                for name in missing
            ],
        )
        found.update(session.execute(stmt).all())
    return found


def _member_order(source_id: str):
    """Sort key of batch members: created_at, then v1 id (as v1 listed a batch), then call id."""
    ledger = and_(MigrationLedger.raw_call_id == RawCall.id, MigrationLedger.source == source_id)
    return ledger, (RawCall.created_at, func.coalesce(MigrationLedger.v1_id, -1), RawCall.id)


def _add_batch_members(
    session: Session, source_id: str, items: list[tuple[int, int, datetime, int]]
) -> int:
    """Add (group_id, call_id, created_at, v1_id) members, keeping every batch group's
    positions in (created_at, v1 id) order. Returns how many existing positions moved.

    Invariant: a group's last position holds its latest member. New members that sort after
    it are appended (the usual case, one INSERT for the chunk); a group that receives an
    earlier member (rows created out of id order across chunks, or a later run adding older
    rows) is renumbered, that group only. (`add_group_members` works one group at a time; a
    chunk can touch a thousand batches.)"""
    by_group: dict[int, list[tuple[datetime, int, int]]] = {}
    for group_id, call_id, created_at, v1_id in items:
        by_group.setdefault(group_id, []).append((created_at, v1_id, call_id))
    groups = sorted(by_group)
    last_position = dict(
        session.execute(
            select(GroupMember.group_id, func.max(GroupMember.position))
            .where(GroupMember.group_id.in_(groups))
            .group_by(GroupMember.group_id)
        ).all()
    )
    ledger, _ = _member_order(source_id)
    last_key = {
        g: (created_at, v1_id if v1_id is not None else -1, call_id)
        for g, created_at, v1_id, call_id in session.execute(
            select(GroupMember.group_id, RawCall.created_at, MigrationLedger.v1_id, RawCall.id)
            .join(RawCall, RawCall.id == GroupMember.call_id)
            .outerjoin(MigrationLedger, ledger)
            .where(tuple_(GroupMember.group_id, GroupMember.position).in_(
                [(g, p) for g, p in last_position.items() if p is not None]
            ))
        )
    } if last_position else {}  # fmt: skip
    now = utcnow()
    rows, disordered = [], []
    for group_id in groups:
        members = sorted(by_group[group_id])
        position = last_position.get(group_id) or 0
        last = last_key.get(group_id)
        if last is not None and members[0] < last:
            disordered.append(group_id)
        for _, _, call_id in members:
            position += 1
            rows.append({"group_id": group_id, "call_id": call_id, "position": position,
                         "added_at": now})  # fmt: skip
    session.connection().execute(insert(GroupMember.__table__), rows)
    return sum(_renumber(session, source_id, g) for g in disordered)


def _renumber(session: Session, source_id: str, group_id: int) -> int:
    ledger, order = _member_order(source_id)
    members = session.execute(
        select(GroupMember.id, GroupMember.position)
        .join(RawCall, RawCall.id == GroupMember.call_id)
        .outerjoin(MigrationLedger, ledger)
        .where(GroupMember.group_id == group_id)
        .order_by(*order)
    ).all()
    moves = [{"member": m, "position": i} for i, (m, p) in enumerate(members, 1) if p != i]
    if moves:
        table_ = GroupMember.__table__
        session.execute(
            update(table_)
            .where(table_.c.id == bindparam("member"))
            .values(position=bindparam("position")),
            moves,
        )
    return len(moves)


def _write_chunk(
    target: DatabaseConnection, source_id: str, chunk: list[tuple[int, str | None, dict]]
) -> tuple[int, int]:
    """raw_calls + ledger + batch memberships of one chunk, in one transaction. Returns
    (memberships added, existing positions moved)."""
    with target.session_scope() as session:
        call_ids = RawCallRepository(session).insert_raw_calls([raw for _, _, raw in chunk])
        now = utcnow()
        # Core executemany (not the ORM's bulk path): these rows need no ORM bookkeeping.
        session.connection().execute(
            insert(MigrationLedger.__table__),
            [
                {"source": source_id, "v1_id": v1_id, "raw_call_id": call_id, "migrated_at": now}
                for (v1_id, _, _), call_id in zip(chunk, call_ids, strict=True)
            ],
        )
        batched = [
            (batch, call_id, raw["created_at"], v1_id)
            for (v1_id, batch, raw), call_id in zip(chunk, call_ids, strict=True)
            if batch is not None
        ]
        moved = 0
        if batched:
            group_ids = _batch_group_ids(session, {b for b, *_ in batched}, source_id)
            moved = _add_batch_members(
                session, source_id, [(group_ids[b], *rest) for b, *rest in batched]
            )
    return len(batched), moved


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
        check_legacy_schema(source)
        _preflight(source)
        source_id = _resolve(source, target, source_id)
        result = MigrationResult(source_id=source_id)
        if source_id is None:
            logger.info("legacy database %s is empty: nothing to migrate", source.safe_url)
            return result
        logger.info("migrating v1 %s as source %s into %s", source.safe_url, source_id,
                    target.safe_url)  # fmt: skip
        chunk: list[tuple[int, str | None, dict]] = []
        size = 0
        last_log = time.perf_counter()

        def flush() -> None:
            nonlocal chunk, size, last_log
            if not chunk:
                return
            added, moved = _write_chunk(target, source_id, chunk)
            result.batch_memberships += added
            result.reordered_members += moved
            result.migrated += len(chunk)
            result.chunks += 1
            if result.first_v1_id is None:
                result.first_v1_id = chunk[0][0]
            result.last_v1_id = chunk[-1][0]
            chunk, size = [], 0
            if on_chunk is not None:
                on_chunk(result)
            if time.perf_counter() - last_log > 5:
                last_log = time.perf_counter()
                logger.info("migrated %d v1 rows so far (last v1 id %s)", result.migrated,
                            result.last_v1_id)  # fmt: skip

        for ids in _id_pages(source):
            result.v1_rows += len(ids)
            with target.session_scope() as session:
                done = _ledger_ids(session, source_id, ids[0], ids[-1])
            todo = [i for i in ids if i not in done]
            result.already_migrated += len(ids) - len(todo)
            if not todo:
                continue
            wanted = set(todo)
            for row in _stream_v1_rows(source, todo, whole_range=len(todo) == len(ids)):
                if row.id not in wanted:  # committed into the range after the id scan
                    continue
                chunk.append((row.id, _batch(row.batch_id), v1_row_to_raw_call(row, source_id)))
                size += len(row.prompt or "") + len(row.response or "") + len(row.metadata or "")
                if len(chunk) >= chunk_rows or size >= chunk_bytes:
                    flush()
        flush()
    result.seconds = time.perf_counter() - started
    logger.info(
        "v1 migration of source %s: %d new rows, %d already migrated, %d batch memberships, "
        "%d chunks in %.1f s (%.0f rows/s)",
        source_id, result.migrated, result.already_migrated, result.batch_memberships,
        result.chunks, result.seconds, result.rows_per_second,
    )  # fmt: skip
    return result


def pending_v1_rows(
    legacy: Legacy, target: DatabaseConnection, source_id: str | None = None
) -> int:
    """How many v1 rows the ledger does not have yet (what a sensor asks before a run)."""
    with opened(legacy) as source:
        check_legacy_schema(source)
        source_id = _resolve(source, target, source_id)
        if source_id is None:
            return 0
        pending = 0
        for ids in _id_pages(source):
            with target.session_scope() as session:
                pending += len(ids) - len(_ledger_ids(session, source_id, ids[0], ids[-1]))
        return pending


# --- backfill validation ------------------------------------------------------------------


@dataclass
class ValidationReport:
    """One check's outcome. `mismatches` holds at most `limit` entries, each a dict with
    v1_id, batch_id, field, v1, v2 and problem (values shortened for display);
    `mismatch_count` counts them all."""

    check: str
    passed: bool
    source_id: str | None
    counts: dict[str, Any] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    mismatch_count: int = 0

    @property
    def summary(self) -> str:
        if self.passed:
            return f"{self.check}: passed"
        return f"{self.check}: {self.mismatch_count} mismatch(es)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self, limit: int = 20) -> str:
        lines = [f"**{self.summary}** (source `{self.source_id}`)", ""]
        lines += ["| count | value |", "| --- | --- |"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in self.counts.items()]
        if self.mismatches:
            lines += ["", "| v1_id | batch_id | field | v1 | v2 | problem |",
                      "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
            for m in self.mismatches[:limit]:
                lines.append("| " + " | ".join(_cell(m.get(k)) for k in MISMATCH_KEYS) + " |")
            if self.mismatch_count > min(limit, len(self.mismatches)):
                lines.append(f"\n… {self.mismatch_count - min(limit, len(self.mismatches))} more")
        return "\n".join(lines)


MISMATCH_KEYS = ("v1_id", "batch_id", "field", "v1", "v2", "problem")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _preview(value: Any, length: int = 80) -> Any:
    if isinstance(value, str | dict | list):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text if len(text) <= length else text[: length - 1] + "…"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class _Mismatches:
    def __init__(self, limit: int):
        self.limit, self.count, self.items = limit, 0, []

    def add(self, *, v1_id=None, batch_id=None, field=None, v1=None, v2=None, problem=""):
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append({"v1_id": v1_id, "batch_id": batch_id, "field": field,
                               "v1": _preview(v1), "v2": _preview(v2), "problem": problem})  # fmt: skip


def _report(check, source_id, counts, mismatches: _Mismatches) -> ValidationReport:
    report = ValidationReport(
        check=check,
        passed=mismatches.count == 0,
        source_id=source_id,
        counts=counts,
        mismatches=mismatches.items,
        mismatch_count=mismatches.count,
    )
    log = logger.info if report.passed else logger.warning
    log("backfill check %s: %s %s", report.summary, source_id, counts)
    return report


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


def _v1_ids(source: LegacySource) -> Iterator[tuple[int]]:
    for page in _id_pages(source):
        yield from ((i,) for i in page)


def _ledger_v1_ids(target: DatabaseConnection, source_id: str) -> Iterator[tuple[int, int]]:
    """(v1_id, raw_call_id) from the ledger, ascending, in keyset pages."""
    after = None
    while True:
        stmt = (
            select(MigrationLedger.v1_id, MigrationLedger.raw_call_id)
            .where(MigrationLedger.source == source_id)
            .order_by(MigrationLedger.v1_id)
            .limit(ID_PAGE)
        )
        if after is not None:
            stmt = stmt.where(MigrationLedger.v1_id > after)
        with target.session_scope() as session:
            rows = session.execute(stmt).all()
        if not rows:
            return
        yield from (tuple(r) for r in rows)
        after = rows[-1][0]


def _tagged(source_id: str):
    return RawCall.metadata_json["v1_source"].as_string() == source_id


CHECKS = ("row_counts_match", "batch_sizes_match", "timestamps_match", "sample_parity")


def _empty_report(check: str) -> ValidationReport:
    return ValidationReport(check=check, passed=True, source_id=None, counts={"v1_rows": 0})


def _start(legacy_source: LegacySource, target: DatabaseConnection, source_id: str | None):
    check_legacy_schema(legacy_source)
    return _resolve(legacy_source, target, source_id)


def row_counts_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Every v1 row has exactly one ledger entry and one tagged raw_call, and nothing else does.
    Names v1 ids missing from the ledger, ledger ids gone from v1, and stray migrated copies."""
    mismatches = _Mismatches(limit)
    with opened(legacy) as source:
        source_id = _start(source, target, source_id)
        if source_id is None:
            return _empty_report("row_counts_match")
        v1_rows = ledger_rows = 0
        for v1_id, in_v1, in_ledger in _merge(_v1_ids(source), _ledger_v1_ids(target, source_id)):
            v1_rows += in_v1 is not None
            ledger_rows += in_ledger is not None
            if in_ledger is None:
                mismatches.add(v1_id=v1_id, field="row", v1="present", v2="missing",
                               problem="v1 row was not migrated")  # fmt: skip
            elif in_v1 is None:
                mismatches.add(v1_id=v1_id, field="row", v1="missing", v2=f"raw_call {in_ledger[0]}",
                               problem="ledger entry without a v1 row")  # fmt: skip
    with target.session_scope() as session:
        tagged = session.scalar(select(func.count()).select_from(RawCall).where(_tagged(source_id)))
        not_in_ledger = ~exists().where(MigrationLedger.raw_call_id == RawCall.id)
        strays = session.execute(
            select(RawCall.id, RawCall.metadata_json["v1_id"].as_integer())
            .where(_tagged(source_id), not_in_ledger)
            .order_by(RawCall.id)
            .limit(limit)
        ).all()
        stray_count = tagged - session.scalar(
            select(func.count())
            .select_from(MigrationLedger)
            .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
            .where(MigrationLedger.source == source_id, _tagged(source_id))
        )
    for call_id, v1_id in strays:
        mismatches.add(v1_id=v1_id, field="row", v1="one row", v2=f"extra raw_call {call_id}",
                       problem="migrated copy not in the ledger")  # fmt: skip
    mismatches.count += max(stray_count - len(strays), 0)
    counts = {"v1_rows": v1_rows, "ledger_rows": ledger_rows, "v2_tagged_rows": tagged}
    return _report("row_counts_match", source_id, counts, mismatches)


def _collated(column_, dialect: str):
    # Merging streams from two databases needs one sort order: bytewise (SQLite's BINARY).
    return column_.collate("C") if dialect == "postgresql" else column_


def _v1_batches(source: LegacySource, *aggregates) -> Iterator[tuple]:
    batch = _collated(v1.c.batch_id, source.dialect)
    stmt = (
        select(v1.c.batch_id, *aggregates)
        .where(v1.c.batch_id.is_not(None), v1.c.batch_id != "")
        .group_by(v1.c.batch_id)
        .order_by(batch)
    )
    with source.engine.connect() as conn:
        yield from (tuple(r) for r in conn.execution_options(stream_results=True).execute(stmt))


def _v2_batches(target: DatabaseConnection, source_id: str, *aggregates) -> Iterator[tuple]:
    name = _collated(Group.name, target.dialect)
    stmt = (
        select(Group.name, *aggregates)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .join(MigrationLedger, MigrationLedger.raw_call_id == GroupMember.call_id)
        .join(RawCall, RawCall.id == GroupMember.call_id)
        .where(Group.group_type == BATCH_GROUP_TYPE, MigrationLedger.source == source_id)
        .group_by(Group.name)
        .order_by(name)
    )
    with target.engine.connect() as conn:
        yield from (tuple(r) for r in conn.execution_options(stream_results=True).execute(stmt))


def _batch_member_diff(source, target, source_id, batch_id) -> tuple[list[int], list[int]]:
    """v1 ids of a batch missing from its group, and group members from other v1 rows."""
    with source.engine.connect() as conn:
        in_v1 = set(conn.scalars(select(v1.c.id).where(v1.c.batch_id == batch_id)))
    with target.session_scope() as session:
        in_group = set(
            session.scalars(
                select(MigrationLedger.v1_id)
                .join(GroupMember, GroupMember.call_id == MigrationLedger.raw_call_id)
                .join(Group, Group.id == GroupMember.group_id)
                .where(
                    Group.group_type == BATCH_GROUP_TYPE,
                    Group.name == batch_id,
                    MigrationLedger.source == source_id,
                )
            )
        )
    return sorted(in_v1 - in_group), sorted(in_group - in_v1)


def batch_sizes_match(
    legacy: Legacy,
    target: DatabaseConnection,
    *,
    source_id: str | None = None,
    limit: int = MISMATCH_LIMIT,
) -> ValidationReport:
    """Each v1 batch_id has a `batch` group with as many migrated members as v1 rows. A
    mismatch names the batch and the v1 ids missing from (or foreign to) its group."""
    mismatches = _Mismatches(limit)
    counts = {"v1_batches": 0, "v2_batches": 0, "v1_batched_rows": 0, "v2_batch_members": 0}
    with opened(legacy) as source:
        source_id = _start(source, target, source_id)
        if source_id is None:
            return _empty_report("batch_sizes_match")
        v1_stream = _v1_batches(source, func.count())
        v2_stream = _v2_batches(target, source_id, func.count(GroupMember.id))
        for batch_id, in_v1, in_v2 in _merge(v1_stream, v2_stream):
            n1 = in_v1[0] if in_v1 else 0
            n2 = in_v2[0] if in_v2 else 0
            counts["v1_batches"] += in_v1 is not None
            counts["v2_batches"] += in_v2 is not None
            counts["v1_batched_rows"] += n1
            counts["v2_batch_members"] += n2
            if n1 == n2:
                continue
            if mismatches.count < limit:
                missing, foreign = _batch_member_diff(source, target, source_id, batch_id)
            else:
                missing = foreign = []
            problem = "; ".join(
                p for p in (
                    f"v1 ids missing from the group: {missing[:10]}" if missing else "",
                    f"members from other v1 rows: {foreign[:10]}" if foreign else "",
                ) if p
            ) or ("no group for this batch" if not in_v2 else "sizes differ")  # fmt: skip
            first = (missing or foreign or [None])[0]
            mismatches.add(v1_id=first, batch_id=batch_id, field="size", v1=n1, v2=n2,
                           problem=problem)  # fmt: skip
    counts["mismatched_batches"] = mismatches.count
    return _report("batch_sizes_match", source_id, counts, mismatches)


def sample_v1_ids(legacy: Legacy, size: int | None, seed: int | None = None) -> list[int]:
    """A uniform random sample of v1 ids (reservoir sampling over the id scan: one pass,
    memory of `size` ids), ascending. `size=None` returns every id."""
    rng = random.Random(seed)
    sample: list[int] = []
    seen = 0
    with opened(legacy) as source:
        for page in _id_pages(source):
            for v1_id in page:
                seen += 1
                if size is None or len(sample) < size:
                    sample.append(v1_id)
                else:
                    slot = rng.randrange(seen)
                    if slot < size:
                        sample[slot] = v1_id
    return sorted(sample)


def _pages(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _migrated_calls(target: DatabaseConnection, source_id: str, v1_ids: list[int]) -> dict:
    stmt = (
        select(MigrationLedger.v1_id, RawCall)
        .join(RawCall, RawCall.id == MigrationLedger.raw_call_id)
        .where(MigrationLedger.source == source_id, MigrationLedger.v1_id.in_(v1_ids))
    )
    with target.session_scope() as session:
        return {v1_id: call.to_dict() for v1_id, call in session.execute(stmt)}


def _v1_rows(source: LegacySource, v1_ids: list[int]) -> list:
    with source.engine.connect() as conn:
        return conn.execute(_select_v1_rows().where(v1.c.id.in_(v1_ids)).order_by(v1.c.id)).all()


def _sample(legacy_source, sample_size, seed) -> tuple[list[int], int | None]:
    if sample_size is not None and sample_size < 0:
        raise ValueError(f"sample_size must be >= 0 or None (got {sample_size})")
    if seed is None and sample_size is not None:
        seed = random.randrange(2**31)
    return sample_v1_ids(legacy_source, sample_size, seed), seed


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
    mismatches = _Mismatches(limit)
    with opened(legacy) as source:
        source_id = _start(source, target, source_id)
        if source_id is None:
            return _empty_report("timestamps_match")
        counts: dict[str, Any] = {"batches_compared": 0}
        v1_stream = _v1_batches(source, func.min(v1.c.created_at), func.max(v1.c.created_at))
        v2_stream = _v2_batches(
            target, source_id, func.min(RawCall.created_at), func.max(RawCall.created_at)
        )
        for batch_id, in_v1, in_v2 in _merge(v1_stream, v2_stream):
            if in_v1 is None or in_v2 is None:
                continue  # a missing batch is batch_sizes_match's finding
            counts["batches_compared"] += 1
            _compare_range(mismatches, batch_id, in_v1, in_v2)
        with source.engine.connect() as conn:
            overall = conn.execute(select(func.min(v1.c.created_at), func.max(v1.c.created_at)))
            v1_range = tuple(overall.one())
        with target.session_scope() as session:
            v2_range = tuple(
                session.execute(
                    select(func.min(RawCall.created_at), func.max(RawCall.created_at))
                    .join(MigrationLedger, MigrationLedger.raw_call_id == RawCall.id)
                    .where(MigrationLedger.source == source_id)
                ).one()
            )
        if v1_range[0] is not None:
            _compare_range(mismatches, None, v1_range, v2_range)
        counts["v1_first"] = _preview(_ts(v1_range[0]))
        counts["v1_last"] = _preview(_ts(v1_range[1]))
        ids, seed = _sample(source, sample_size, seed)
        counts.update(sampled_rows=len(ids), seed=seed)
        for page in _pages(ids):
            calls = _migrated_calls(target, source_id, page)
            for row in _v1_rows(source, page):
                call = calls.get(row.id)
                expected = parse_v1_timestamp(row.created_at, row.id)
                if call is None:
                    mismatches.add(v1_id=row.id, field="created_at", v1=expected, v2=None,
                                   problem="sampled row was not migrated")  # fmt: skip
                elif call["created_at"] != expected:
                    mismatches.add(v1_id=row.id, field="created_at", v1=expected,
                                   v2=call["created_at"], problem="timestamp differs")  # fmt: skip
    counts["mismatches"] = mismatches.count
    return _report("timestamps_match", source_id, counts, mismatches)


def _ts(value):
    if value is None:
        return None
    return value if isinstance(value, datetime) else parse_v1_timestamp(value, "?")


def _compare_range(mismatches: _Mismatches, batch_id, in_v1, in_v2) -> None:
    for label, a, b in (("first created_at", in_v1[0], in_v2[0]),
                        ("last created_at", in_v1[1], in_v2[1])):  # fmt: skip
        expected, got = _ts(a), _ts(b)
        if expected != got:
            mismatches.add(batch_id=batch_id, field=label, v1=expected, v2=got,
                           problem="batch time range differs" if batch_id is not None
                           else "time range of all rows differs")  # fmt: skip


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
    mismatches = _Mismatches(limit)
    with opened(legacy) as source:
        source_id = _start(source, target, source_id)
        if source_id is None:
            return _empty_report("sample_parity")
        ids, seed = _sample(source, sample_size, seed)
        compared = 0
        for page in _pages(ids):
            calls = _migrated_calls(target, source_id, page)
            for row in _v1_rows(source, page):
                call = calls.get(row.id)
                if call is None:
                    mismatches.add(v1_id=row.id, field="row", v1="present", v2="missing",
                                   problem="sampled row was not migrated")  # fmt: skip
                    continue
                compared += 1
                for name, expected, got in _parity_fields(row, call):
                    if expected != got:
                        mismatches.add(v1_id=row.id, batch_id=_batch(row.batch_id), field=name,
                                       v1=expected, v2=got, problem=f"{name} differs")  # fmt: skip
    counts = {"sampled_rows": len(ids), "compared_rows": compared, "seed": seed,
              "mismatches": mismatches.count}  # fmt: skip
    return _report("sample_parity", source_id, counts, mismatches)


def _parity_fields(row, call: dict) -> Iterator[tuple[str, Any, Any]]:
    request, response = call["request_json"] or {}, call["response_json"] or {}
    tokens, metadata = call["tokens_json"] or {}, call["metadata_json"] or {}
    yield "prompt", row.prompt, request.get("prompt")
    yield "response", row.response, response.get("text")
    yield "provider", row.provider, call["provider"]
    yield "tokens", row.tokens, tokens.get("total_tokens")
    expected_latency = None if row.latency_ms is None else float(row.latency_ms)
    yield "latency_ms", expected_latency, call["latency_ms"]
    yield "metadata", _v1_metadata(row.metadata, row.id), metadata.get("v1_metadata")
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
        source_id = _start(source, target, source_id)
        if source_id is None:
            return [_empty_report(name) for name in CHECKS]
        return [
            row_counts_match(source, target, source_id=source_id),
            batch_sizes_match(source, target, source_id=source_id),
            timestamps_match(
                source, target, source_id=source_id, sample_size=sample_size, seed=seed
            ),  # fmt: skip
            sample_parity(
                source, target, source_id=source_id, sample_size=sample_size, seed=seed
            ),  # fmt: skip
        ]


__all__ = [
    "CHUNK_BYTES", "CHUNK_ROWS", "LegacySource", "MigrationResult", "ValidationReport",
    "batch_sizes_match", "check_legacy_schema", "legacy_stats", "migrate_v1_to_v2",
    "opened", "parse_v1_timestamp", "pending_v1_rows", "resolve_source_id", "row_counts_match",
    "sample_parity", "sample_v1_ids", "source_fingerprint", "timestamps_match",
    "v1_row_to_raw_call", "validate_migration",
]  # fmt: skip
