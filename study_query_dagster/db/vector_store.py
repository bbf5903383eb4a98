"""`VectorStore`: stored embeddings (`embedding_vectors`): the cache rows keyed by request hash,
fast bulk lookups, and cosine nearest-neighbour search (pgvector HNSW on PostgreSQL, numpy on
SQLite, same answers)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    Float,
    LargeBinary,
    String,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    text,
    type_coerce,
)

from ..log import get_logger
from .dialect import CHUNK_SIZE, Repository, insert_ignore
from .models_v2 import EmbeddingVector, RawCall
from .types import Vector

logger = get_logger(__name__)

# pgvector limits: HNSW indexes `vector` up to 2000 dimensions; ef_search goes up to 1000.
HNSW_MAX_DIMENSIONS = 2000
HNSW_MAX_EF = 1000
HNSW_DEFAULT_EF = 40


def hnsw_index_name(model: str, dimension: int) -> str:
    """A safe identifier (< 63 chars) for the HNSW index of one model and dimension."""
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:16]
    return f"ix_embedding_vectors_hnsw_{int(dimension)}_{digest}"


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


class VectorStore(Repository):
    """Embedding rows within one session (the caller owns the transaction)."""

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
        stmt = insert_ignore(self.session, EmbeddingVector, ["request_hash"])
        for start in range(0, len(validated), CHUNK_SIZE):
            self.session.execute(stmt, validated[start : start + CHUNK_SIZE])
        hashes = [r["request_hash"] for r in validated]
        stored = self.embedding_ids_by_hash(hashes)
        return [stored[h] for h in hashes]

    def stored_by_other_calls(self, ids: Iterable[int], call_id: int) -> list[EmbeddingVector]:
        """Of these embedding rows, those another call stored first (lost insert-or-ignore
        races), so a writer returns the stored vector rather than its own."""
        stmt = select(EmbeddingVector).where(
            EmbeddingVector.id.in_(list(ids)), EmbeddingVector.call_id != call_id
        )
        return list(self.session.scalars(stmt))

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
        columns = (
            EmbeddingVector.id,
            EmbeddingVector.request_hash,
            EmbeddingVector.call_id,
            EmbeddingVector.model,
            EmbeddingVector.dimension,
            vector.label("vector"),
            EmbeddingVector.text,
        )
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

    def stored_dimension(self, provider: str, model: str, dimensions: int | None) -> int | None:
        """The length of the vectors stored for `provider`'s `model` by calls that asked for
        `dimensions` (None: calls that left the size to the model), or None if there are none.
        The embedding cache checks new vectors against it."""
        asked = RawCall.request_json["dimensions"].as_integer()
        stmt = (
            select(EmbeddingVector.dimension)
            .join(RawCall, RawCall.id == EmbeddingVector.call_id)
            .where(
                EmbeddingVector.model == model,
                RawCall.provider == provider,
                asked.is_(None) if dimensions is None else asked == dimensions,
            )
            .limit(1)
        )
        return self.session.scalar(stmt)

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
            name,
            model,
            dimension,
            (time.perf_counter() - started) * 1000,
        )
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
        chosen = {
            e.id: e
            for e in self.session.scalars(
                select(EmbeddingVector).where(EmbeddingVector.id.in_(ids[order].tolist()))
            )
        }
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
