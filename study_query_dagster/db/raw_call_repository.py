"""`RawCallRepository`: reads and writes the v2 store (raw_calls, groups, embeddings).

Every write validates its input first and raises `ValueError` naming the row, field and value,
so a bad row fails the whole call before anything reaches the database.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    Float,
    LargeBinary,
    String,
    Text,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    text,
    type_coerce,
)
from sqlalchemy.orm import Session

from ..log import get_logger
from .models_v2 import CALL_STATUSES, EmbeddingVector, Group, GroupMember, RawCall, RunFailure
from .queries import CallFilter, percentiles, provider_totals_query
from .types import Vector, utcnow
from .upsert import insert_ignore as _insert_ignore

logger = get_logger(__name__)

RAW_CALL_FIELDS = {
    "provider", "model", "modality", "status", "request_hash", "request_json", "response_json",
    "error_json", "latency_ms", "tokens_json", "metadata_json", "created_at",
}  # fmt: skip
CHUNK_SIZE = 1000
# pgvector limits: HNSW indexes `vector` up to 2000 dimensions; ef_search goes up to 1000.
HNSW_MAX_DIMENSIONS = 2000
HNSW_MAX_EF = 1000
HNSW_DEFAULT_EF = 40


def hnsw_index_name(model: str, dimension: int) -> str:
    """A safe identifier (< 63 chars) for the HNSW index of one model and dimension."""
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]
    return f"ix_embedding_vectors_hnsw_{int(dimension)}_{digest}"


def validate_raw_call(row: Mapping[str, Any], where: str = "raw_call") -> dict[str, Any]:
    unknown = set(row) - RAW_CALL_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    provider = row.get("provider")
    if not isinstance(provider, str) or not provider.strip():
        raise ValueError(f"{where}: field 'provider' is required (got {provider!r})")
    status = row.get("status")
    if status not in CALL_STATUSES:
        raise ValueError(
            f"{where}: field 'status' must be one of {', '.join(CALL_STATUSES)} (got {status!r})"
        )
    if row.get("request_json") is None:
        raise ValueError(f"{where}: field 'request_json' is required")
    latency = row.get("latency_ms")
    if latency is not None and (not isinstance(latency, int | float) or latency < 0):
        raise ValueError(f"{where}: field 'latency_ms' must be a number >= 0 (got {latency!r})")
    return {"modality": "text", **row}


def validate_embedding(row: Mapping[str, Any], where: str = "embedding") -> dict[str, Any]:
    out = dict(row)
    for field in ("call_id", "model", "vector"):
        if out.get(field) is None:
            raise ValueError(f"{where}: field '{field}' is required")
    vector = np.asarray(out["vector"], dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"{where}: field 'vector' must be a non-empty list of numbers")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{where}: field 'vector' contains NaN or infinity")
    dimension = out.setdefault("dimension", int(vector.size))
    if dimension != vector.size:
        raise ValueError(
            f"{where}: vector has {vector.size} components but dimension is {dimension}"
        )
    out["vector"] = vector
    if out.get("norm") is None:
        out["norm"] = float(np.linalg.norm(vector))
    return out


def _searchable_texts(request_json: Any, response_json: Any) -> Iterable[str]:
    """What a person wrote or a model answered: the prompt, message contents (plain or text
    parts), embedding inputs and the answer - not roles, parameters or ids."""
    request = request_json if isinstance(request_json, Mapping) else {}
    response = response_json if isinstance(response_json, Mapping) else {}
    contents = [m.get("content") for m in request.get("messages") or [] if isinstance(m, Mapping)]
    inputs = request.get("input")
    for value in [request.get("prompt"), *contents, response.get("text"),
                  *(inputs if isinstance(inputs, list) else [inputs])]:  # fmt: skip
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):  # content parts: [{"type": "text", "text": ...}]
            yield from (p["text"] for p in value if isinstance(p, Mapping)
                        and isinstance(p.get("text"), str))  # fmt: skip


class RawCallRepository:
    """v2 operations within one session (the caller owns the transaction)."""

    def __init__(self, session: Session):
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    # --- raw calls -------------------------------------------------------------------------

    def insert_raw_call(self, **fields: Any) -> int:
        row = validate_raw_call(fields)
        call_id = self.session.execute(insert(RawCall).returning(RawCall.id), row).scalar_one()
        logger.info(
            "captured raw_call id=%s provider=%s model=%s status=%s",
            call_id, row["provider"], row.get("model"), row["status"],
        )  # fmt: skip
        return call_id

    def insert_raw_calls(
        self, rows: Iterable[Mapping[str, Any]], chunk_size: int = CHUNK_SIZE
    ) -> list[int]:
        """Bulk insert; ids come back in input order. One round trip per chunk."""
        validated = [validate_raw_call(r, f"raw_calls row {i}") for i, r in enumerate(rows)]
        started = time.perf_counter()
        ids: list[int] = []
        for start in range(0, len(validated), chunk_size):
            # An executemany takes its columns from the first row and silently drops keys the
            # others add, so rows are sent in consecutive runs that share the same keys.
            for _, run in groupby(validated[start : start + chunk_size], key=frozenset):
                ids.extend(self._insert_chunk(list(run)))
        logger.info(
            "captured %d raw_calls in %.1f ms", len(ids), (time.perf_counter() - started) * 1000
        )
        return ids

    def _insert_chunk(self, chunk: list[dict[str, Any]]) -> list[int]:
        if self.dialect == "sqlite":
            # RETURNING with guaranteed order makes SQLAlchemy send one row per statement on
            # SQLite; unordered RETURNING lets it send up to 1,000 rows per INSERT
            # (insertmanyvalues). That beats an executemany too, which releases and retakes
            # the GIL once per row - costly while the event loop is busy calling providers.
            # Sorting restores input order: the transaction holds SQLite's only write lock,
            # and a rowid table with nothing ever deleted (raw_calls is append-only) numbers
            # one statement's rows max+1, max+2... in VALUES order.
            table = RawCall.__table__
            stmt = insert(table).returning(table.c.id)
            return sorted(self.session.connection().execute(stmt, chunk).scalars())
        # PostgreSQL: batched multi-row INSERT ... RETURNING, ids sorted to input order.
        stmt = insert(RawCall).returning(RawCall.id, sort_by_parameter_order=True)
        return list(self.session.execute(stmt, chunk).scalars())

    def get_raw_call(self, call_id: int) -> RawCall | None:
        return self.session.get(RawCall, call_id)

    def query_raw_calls(
        self,
        provider: str | Sequence[str] | None = None,
        model: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        modality: str | Sequence[str] | None = None,
        group_id: int | None = None,
        date_range: tuple[datetime | None, datetime | None] | None = None,
        limit: int | None = 100,
        offset: int = 0,
    ) -> list[RawCall]:
        """Matching calls, newest first."""
        where = CallFilter(provider, model, status, modality, group_id, date_range)
        stmt = where.apply(select(RawCall)).order_by(RawCall.created_at.desc(), RawCall.id.desc())
        stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list(self.session.scalars(stmt))

    def count_raw_calls(self, where: CallFilter | None = None) -> int:
        stmt = select(func.count()).select_from(RawCall)
        return self.session.scalar((where or CallFilter()).apply(stmt)) or 0

    def search_raw_calls(
        self, term: str, limit: int = 100, where: CallFilter | None = None
    ) -> list[RawCall]:
        """Calls whose prompt or answer contains `term` (case-insensitive), newest first,
        among those matching `where`.

        SQL narrows the candidates with LIKE over the JSON text; Python then keeps only rows
        where the term is in the prompt, a message's content, an embedding input or the
        answer (not in a key, a role, a parameter or an id).
        """
        if not term:
            raise ValueError("search term must not be empty")
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        stmt = (
            select(RawCall)
            .where(
                cast(RawCall.request_json, Text).ilike(pattern, escape="\\")
                | cast(RawCall.response_json, Text).ilike(pattern, escape="\\")
            )
            .order_by(RawCall.created_at.desc(), RawCall.id.desc())
            .execution_options(yield_per=500)
        )
        if where is not None:
            stmt = where.apply(stmt)
        needle = term.casefold()
        found: list[RawCall] = []
        for call in self.session.scalars(stmt):
            texts = _searchable_texts(call.request_json, call.response_json)
            if any(needle in text.casefold() for text in texts):
                found.append(call)
                if len(found) >= limit:
                    break
        return found

    # --- statistics ------------------------------------------------------------------------

    def get_provider_stats(self, where: CallFilter | None = None) -> list[dict[str, Any]]:
        """Per provider and model: counts by status, success rate, latency (avg/p50/p95 of
        successful calls), token sums, and how many calls carry a prompt/completion token
        split (`calls_with_token_split`) or lack one (`calls_without_token_split`, e.g.
        migrated v1 rows, which only know a total). Aggregated in SQL on both backends."""
        where = where or CallFilter()
        pct = percentiles(
            self.session,
            RawCall.latency_ms,
            [RawCall.provider, RawCall.model],
            [0.5, 0.95],
            CallFilter(**{**where.__dict__, "status": "success"}),
        )
        totals = provider_totals_query(where).order_by("provider", "model")
        out = []
        for r in self.session.execute(totals):
            p50, p95 = pct.get((r.provider, r.model), (None, None))
            out.append(
                {
                    "provider": r.provider,
                    "model": r.model,
                    "calls": r.calls,
                    **{s: int(getattr(r, s) or 0) for s in CALL_STATUSES},
                    "success_rate": (r.success or 0) / r.calls if r.calls else None,
                    "avg_latency_ms": _num(r.avg_ms),
                    "p50_latency_ms": _num(p50),
                    "p95_latency_ms": _num(p95),
                    "avg_tokens": _num(r.avg_tokens),
                    "prompt_tokens": int(r.prompt_tokens or 0),
                    "completion_tokens": int(r.completion_tokens or 0),
                    "total_tokens": int(r.total_tokens or 0),
                    "calls_with_token_split": int(r.split or 0),
                    "calls_without_token_split": int(r.unsplit or 0),
                }
            )
        return out

    # --- groups ----------------------------------------------------------------------------

    def create_group(
        self,
        group_type: str,
        name: str,
        description: str | None = None,
        metadata_json: dict | None = None,
    ) -> int:
        if not group_type or not name:
            raise ValueError(f"a group needs a type and a name (got {group_type!r}, {name!r})")
        group = Group(
            group_type=group_type, name=name, description=description, metadata_json=metadata_json
        )
        self.session.add(group)
        self.session.flush()
        logger.info("created group id=%s type=%s name=%s", group.id, group_type, name)
        return group.id

    def get_or_create_group(
        self,
        group_type: str,
        name: str,
        description: str | None = None,
        metadata_json: dict | None = None,
    ) -> int:
        """The id of group (type, name), created if missing. Safe against concurrent callers."""
        if not group_type or not name:
            raise ValueError(f"a group needs a type and a name (got {group_type!r}, {name!r})")
        stmt = _insert_ignore(self.session, Group, ["group_type", "name"]).values(
            group_type=group_type, name=name, description=description, metadata_json=metadata_json
        )
        self.session.execute(stmt)
        return self.session.execute(
            select(Group.id).where(Group.group_type == group_type, Group.name == name)
        ).scalar_one()

    def get_group(self, group_id: int) -> Group | None:
        return self.session.get(Group, group_id)

    def find_group(self, group_type: str, name: str) -> Group | None:
        return self.session.scalars(
            select(Group).where(Group.group_type == group_type, Group.name == name)
        ).one_or_none()

    def add_group_members(
        self,
        group_id: int,
        members: Iterable[int | Mapping[str, Any]],
        role: str | None = None,
    ) -> int:
        """Add calls to a group; calls already in it are ignored. Members are call ids or dicts
        with call_id and optional position/role; missing positions continue after the last one.
        Returns how many were added."""
        items = [{"call_id": m} if isinstance(m, int) else dict(m) for m in members]
        present = self._member_call_ids(group_id, [i["call_id"] for i in items])
        next_position = (
            self.session.scalar(
                select(func.max(GroupMember.position)).where(GroupMember.group_id == group_id)
            )
            or 0
        ) + 1
        rows = []
        for item in items:
            if item["call_id"] in present:
                continue
            present.add(item["call_id"])
            if item.get("position") is None:
                item["position"] = next_position
                next_position += 1
            item.setdefault("role", role)
            rows.append({"group_id": group_id, **item})
        if not rows:
            return 0
        # Insert-or-ignore still guards against a concurrent writer adding the same call.
        stmt = _insert_ignore(self.session, GroupMember, ["group_id", "call_id"])
        if self.dialect == "sqlite":
            # With RETURNING, SQLAlchemy sends many rows per INSERT (insertmanyvalues) instead
            # of an executemany, which releases and retakes the GIL once per row.
            stmt = stmt.returning(GroupMember.__table__.c.id)
        for start in range(0, len(rows), CHUNK_SIZE):
            self.session.connection().execute(stmt, rows[start : start + CHUNK_SIZE]).close()
        return len(rows)

    def _member_call_ids(self, group_id: int, call_ids: list[int]) -> set[int]:
        present: set[int] = set()
        for start in range(0, len(call_ids), CHUNK_SIZE):
            stmt = select(GroupMember.call_id).where(
                GroupMember.group_id == group_id,
                GroupMember.call_id.in_(call_ids[start : start + CHUNK_SIZE]),
            )
            present.update(self.session.scalars(stmt))
        return present

    def get_group_members(self, group_id: int) -> list[GroupMember]:
        """Members (with `.call` loaded), ordered by position."""
        stmt = (
            select(GroupMember)
            .where(GroupMember.group_id == group_id)
            .order_by(GroupMember.position, GroupMember.id)
        )
        return list(self.session.scalars(stmt))

    # --- failed Dagster runs -----------------------------------------------------------------

    def record_run_failure(
        self,
        run_id: str,
        job_name: str,
        *,
        partition_key: str | None = None,
        failed_steps: Sequence[str] = (),
        error: str | None = None,
        failed_at: datetime | None = None,
    ) -> bool:
        """Record a failed run once (a sensor may see it again): True if it was new."""
        row = {"run_id": run_id, "job_name": job_name, "partition_key": partition_key,
               "failed_steps": list(failed_steps), "error": error,
               "failed_at": failed_at or utcnow()}  # fmt: skip
        stmt = _insert_ignore(self.session, RunFailure, ["run_id"])
        result = self.session.connection().execute(stmt, row)
        return bool(result.rowcount)

    def recent_run_failures(self, limit: int = 20) -> list[RunFailure]:
        stmt = select(RunFailure).order_by(RunFailure.failed_at.desc(), RunFailure.id.desc())
        return list(self.session.scalars(stmt.limit(limit)))

    # --- embeddings ------------------------------------------------------------------------

    def insert_embedding_vectors(
        self, rows: Iterable[Mapping[str, Any]], *, ignore_duplicates: bool = False
    ) -> list[int]:
        """Bulk insert; returns ids in input order. With `ignore_duplicates`, rows whose
        request_hash is already stored are skipped and the stored row's id is returned
        (insert-or-ignore, then re-read), which is what concurrent cache writers need."""
        validated = [validate_embedding(r, f"embedding row {i}") for i, r in enumerate(rows)]
        if not validated:
            return []
        if not ignore_duplicates:
            stmt = insert(EmbeddingVector).returning(
                EmbeddingVector.id, sort_by_parameter_order=True
            )
            ids: list[int] = []
            for start in range(0, len(validated), CHUNK_SIZE):
                ids.extend(
                    self.session.execute(stmt, validated[start : start + CHUNK_SIZE]).scalars()
                )
            return ids
        if any(r.get("request_hash") is None for r in validated):
            raise ValueError("ignore_duplicates needs a request_hash on every embedding row")
        stmt = _insert_ignore(self.session, EmbeddingVector, ["request_hash"])
        for start in range(0, len(validated), CHUNK_SIZE):
            self.session.execute(stmt, validated[start : start + CHUNK_SIZE])
        hashes = [r["request_hash"] for r in validated]
        stored = self.embedding_ids_by_hash(hashes)
        return [stored[h] for h in hashes]

    def embedding_ids_by_hash(self, hashes: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        unique = list(dict.fromkeys(hashes))
        for start in range(0, len(unique), CHUNK_SIZE):
            chunk = unique[start : start + CHUNK_SIZE]
            stmt = select(EmbeddingVector.request_hash, EmbeddingVector.id).where(
                EmbeddingVector.request_hash.in_(chunk)
            )
            found.update({h: i for h, i in self.session.execute(stmt)})
        return found

    def embeddings_by_hash(
        self, hashes: Sequence[str], chunk_size: int = CHUNK_SIZE
    ) -> dict[str, StoredEmbedding]:
        """Stored embeddings for these request hashes (absent hashes are left out). One query
        per chunk of `chunk_size` hashes, never one per hash."""
        found: dict[str, StoredEmbedding] = {}
        unique = list(dict.fromkeys(hashes))
        postgres = self.dialect == "postgresql"
        # Raw bytes, decoded with one numpy call per row: pgvector's binary form (vector_send)
        # reads ~5x faster than its text form; on SQLite this skips the type's row processing.
        if postgres:
            vector = func.vector_send(EmbeddingVector.vector)
        else:
            vector = type_coerce(EmbeddingVector.vector, LargeBinary)
        columns = (EmbeddingVector.id, EmbeddingVector.request_hash, EmbeddingVector.call_id,
                   EmbeddingVector.model, EmbeddingVector.dimension, vector.label("vector"),
                   EmbeddingVector.text)  # fmt: skip
        for start in range(0, len(unique), chunk_size):
            stmt = select(*columns).where(
                EmbeddingVector.request_hash.in_(unique[start : start + chunk_size])
            )
            rows = self.session.execute(stmt)
            for id_, request_hash, call_id, model, dimension, data, text_ in rows:
                if postgres:
                    values = decode_vector_send(data)
                else:
                    values = np.frombuffer(data, dtype="<f4").astype(np.float32)
                found[request_hash] = StoredEmbedding(
                    id_, request_hash, call_id, model, dimension, values, text_
                )
        return found

    def ensure_hnsw_index(self, model: str, dimension: int) -> str | None:
        """Create (if missing) the PostgreSQL HNSW index that serves cosine searches over one
        model's vectors of one dimension, and return its name.

        `embedding_vectors.vector` has no fixed dimension (one column holds every model), so the
        index is on the expression `vector::vector(D)`, partial on (model, dimension);
        `nearest_embeddings` orders by the same expression. None on SQLite, or when pgvector
        cannot index that many dimensions (HNSW on `vector` stops at 2000).
        """
        if self.dialect != "postgresql" or not 0 < dimension <= HNSW_MAX_DIMENSIONS:
            return None
        name = hnsw_index_name(model, dimension)
        model_literal = literal(model, String()).compile(
            dialect=self.session.get_bind().dialect, compile_kwargs={"literal_binds": True}
        )
        started = time.perf_counter()
        # The name is built from hex digits and an int; the model is a quoted SQL literal.
        self.session.execute(
            text(
                f"CREATE INDEX IF NOT EXISTS {name} ON embedding_vectors "
                f"USING hnsw ((vector::vector({int(dimension)})) vector_cosine_ops) "
                f"WHERE model = {model_literal} AND dimension = {int(dimension)}"
            )
        )
        logger.info(
            "hnsw index %s ready for model=%s dimension=%d in %.0f ms",
            name, model, dimension, (time.perf_counter() - started) * 1000,
        )  # fmt: skip
        return name

    def hnsw_index_exists(self, model: str, dimension: int) -> bool:
        if self.dialect != "postgresql":
            return False
        stmt = text("SELECT 1 FROM pg_indexes WHERE indexname = :name")
        return (
            self.session.execute(stmt, {"name": hnsw_index_name(model, dimension)}).first()
            is not None
        )

    def nearest_embeddings(
        self, vector: Sequence[float] | np.ndarray, k: int = 10, model: str | None = None
    ) -> list[tuple[EmbeddingVector, float]]:
        """The k stored embeddings closest to `vector` by cosine distance (ties by id), with
        their distances. pgvector's `<=>` in SQL on PostgreSQL; numpy on SQLite."""
        query = np.asarray(vector, dtype=np.float32)
        if query.ndim != 1 or query.size == 0:
            raise ValueError("the query vector must be a non-empty list of numbers")
        if k <= 0:
            return []
        base = select(EmbeddingVector).where(EmbeddingVector.dimension == query.size)
        if model is not None:
            base = base.where(EmbeddingVector.model == model)
        if self.dialect == "postgresql":
            return self._nearest_pgvector(base, query, k, model)
        return self._nearest_numpy(base, query, k)

    def _nearest_pgvector(self, base, query: np.ndarray, k: int, model: str | None):
        dimension = int(query.size)
        column = EmbeddingVector.vector
        # For one model the expression matches `ensure_hnsw_index`, so that index can serve it.
        indexable = model is not None and dimension <= HNSW_MAX_DIMENSIONS and k < HNSW_MAX_EF
        if indexable:
            column = cast(column, VECTOR(dimension))
            # An HNSW scan yields at most ef_search rows; we read k + 1.
            ef_search = max(HNSW_DEFAULT_EF, k + 1)
            self.session.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef_search)}"))
        distance = column.op("<=>", return_type=Float)(
            bindparam("query_vector", query, type_=Vector())
        )
        # ORDER BY distance alone (an index can serve it; "distance, id" cannot), one row more
        # than asked to see whether the k-th distance is tied; ties are then settled by id.
        stmt = base.add_columns(distance.label("distance")).order_by(distance).limit(k + 1)
        rows = sorted(
            ((row[0], float(row[1])) for row in self.session.execute(stmt)),
            key=lambda hit: (hit[1], hit[0].id),
        )
        if len(rows) <= k or rows[k][1] != rows[k - 1][1]:
            return rows[:k]
        boundary = rows[k - 1][1]
        closer = [hit for hit in rows if hit[1] < boundary]
        tied = base.add_columns(distance.label("distance")).where(distance == boundary)
        tied = tied.order_by(EmbeddingVector.id).limit(k - len(closer))
        return closer + [(row[0], float(row[1])) for row in self.session.execute(tied)]

    def _nearest_numpy(self, base, query: np.ndarray, k: int):
        ids_stmt = base.with_only_columns(EmbeddingVector.id, EmbeddingVector.vector)
        rows = self.session.execute(ids_stmt.order_by(EmbeddingVector.id)).all()
        if not rows:
            return []
        ids = np.array([r[0] for r in rows])
        matrix = np.vstack([r[1] for r in rows]).astype(np.float64)
        q = query.astype(np.float64)
        denom = np.linalg.norm(matrix, axis=1) * np.linalg.norm(q)
        with np.errstate(invalid="ignore", divide="ignore"):
            distance = 1.0 - (matrix @ q) / denom
        distance = np.where(np.isfinite(distance), distance, np.nan)
        # Stable sort keeps id order among equal distances, as ORDER BY distance, id does.
        order = np.argsort(distance, kind="stable")[:k]
        chosen = {e.id: e for e in self.session.scalars(
            select(EmbeddingVector).where(EmbeddingVector.id.in_(ids[order].tolist()))
        )}  # fmt: skip
        return [(chosen[int(ids[i])], float(distance[i])) for i in order]


@dataclass(frozen=True)
class StoredEmbedding:
    """A stored embedding without its ORM overhead (what cache lookups need)."""

    id: int
    request_hash: str
    call_id: int
    model: str
    dimension: int
    vector: np.ndarray
    text: str | None


def decode_vector_send(data: bytes | memoryview) -> np.ndarray:
    """pgvector's binary format: int16 dimension, int16 unused, then big-endian float32s."""
    dimension = int.from_bytes(bytes(data[:2]), "big")
    vector = np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)
    if vector.size != dimension:
        raise ValueError(f"vector_send: header says {dimension} dimensions, got {vector.size}")
    return vector


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
