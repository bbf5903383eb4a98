"""`VariationResultRepository`: the append-only answer-variation metrics (`variation_results`)
and the mean answer embeddings drift compares (pgvector's AVG on PostgreSQL, numpy on SQLite).

Rows are never changed: a recomputation appends, and `latest` returns the newest row per
(prompt, target, other, metric) of a run and strategy.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any

import numpy as np
from sqlalchemy import String, column, func, insert, select, values

from .dialect import CHUNK_SIZE, Repository
from .models_v2 import EmbeddingVector, Group, VariationResult
from .types import utcnow
from .vector_codec import decode_vector_send
from .vector_store import VectorStore

REQUIRED = (
    "run_group_id",
    "prompt_set",
    "prompt_id",
    "target",
    "metric",
    "value",
    "n",
    "strategy",
    "strategy_key",
    "method_version",
)
OPTIONAL = ("other", "n_other", "settings_json", "created_at")
KEY = (
    VariationResult.prompt_id,
    VariationResult.target,
    VariationResult.other,
    VariationResult.metric,
)


def validate_result(row: Mapping[str, Any], where: str = "variation result") -> dict[str, Any]:
    unknown = set(row) - set(REQUIRED) - set(OPTIONAL)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    for field in REQUIRED:
        if row.get(field) is None or row.get(field) == "":
            raise ValueError(f"{where}: field '{field}' is required")
    value = row["value"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where}: field 'value' must be a finite number (got {value!r})")
    for field in ("n", "n_other"):
        count = row.get(field)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise ValueError(f"{where}: field '{field}' must be an integer >= 1 (got {count!r})")
    return {"created_at": utcnow(), **row, "value": float(value)}


@dataclass(frozen=True)
class HistoryPoint:
    run_group_id: int
    run_created_at: datetime
    prompt_id: str
    target: str
    other: str | None
    value: float


class VariationResultRepository(Repository):
    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Validate every row first (nothing is written if one is bad), then insert them."""
        validated = [validate_result(r, f"variation result {i}") for i, r in enumerate(rows)]
        for start in range(0, len(validated), CHUNK_SIZE):
            self.session.execute(insert(VariationResult), validated[start : start + CHUNK_SIZE])
        return len(validated)

    def _newest_ids(self, *where):
        return (
            select(func.max(VariationResult.id))
            .where(*where)
            .group_by(VariationResult.run_group_id, VariationResult.strategy_key, *KEY)
        )

    def latest(
        self,
        run_group_id: int,
        strategy_key: str,
        metrics: Sequence[str] | None = None,
        *,
        method_version: str | None = None,
    ) -> list[VariationResult]:
        """The newest row per (prompt, target, other, metric) of a run and strategy."""
        where = [
            VariationResult.run_group_id == run_group_id,
            VariationResult.strategy_key == strategy_key,
        ]
        if metrics is not None:
            where.append(VariationResult.metric.in_(list(metrics)))
        if method_version is not None:
            where.append(VariationResult.method_version == method_version)
        stmt = select(VariationResult).where(VariationResult.id.in_(self._newest_ids(*where)))
        return list(self.session.scalars(stmt.order_by(VariationResult.id)))

    def history(
        self, prompt_set: str, metric: str, strategy_key: str, method_version: str
    ) -> list[HistoryPoint]:
        """Every run's newest value of `metric` for a prompt set, oldest run first (for charts
        over time)."""
        newest = self._newest_ids(
            VariationResult.prompt_set == prompt_set,
            VariationResult.metric == metric,
            VariationResult.strategy_key == strategy_key,
            VariationResult.method_version == method_version,
        )
        stmt = (
            select(
                VariationResult.run_group_id,
                Group.created_at,
                VariationResult.prompt_id,
                VariationResult.target,
                VariationResult.other,
                VariationResult.value,
            )
            .join(Group, Group.id == VariationResult.run_group_id)
            .where(VariationResult.id.in_(newest))
            .order_by(Group.created_at, Group.id, VariationResult.id)
        )
        return [HistoryPoint(*row) for row in self.session.execute(stmt)]

    def answer_centroids(
        self, hashes_by_key: Mapping[Hashable, Sequence[str]]
    ) -> dict[Hashable, np.ndarray]:
        """The mean stored embedding per key, each answer counted as often as it occurs (a
        repeated answer shares one cached vector but weighs once per answer). Keys whose hashes
        have no stored vector are left out. PostgreSQL averages in SQL (pgvector's AVG over a
        VALUES list of (key, hash)); SQLite reads the vectors and averages with numpy."""
        keys = list(hashes_by_key)
        pairs = [(str(i), h) for i, k in enumerate(keys) for h in hashes_by_key[k] if h]
        if not pairs:
            return {}
        if self.dialect == "postgresql":
            means = self._centroids_pgvector(pairs)
        else:
            means = self._centroids_numpy(pairs)
        return {keys[int(i)]: vector for i, vector in means.items()}

    def _centroids_pgvector(self, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for chunk in _whole_key_chunks(pairs):
            answers = values(
                column("key", String), column("request_hash", String), name="answers"
            ).data(chunk)
            stmt = (
                select(answers.c.key, func.vector_send(func.avg(EmbeddingVector.vector)))
                .join(EmbeddingVector, EmbeddingVector.request_hash == answers.c.request_hash)
                .group_by(answers.c.key)
            )
            for key, data in self.session.execute(stmt):
                out[key] = decode_vector_send(data).astype(np.float64)
        return out

    def _centroids_numpy(self, pairs: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        stored = VectorStore(self.session).embeddings_by_hash([h for _, h in pairs])
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for key, request_hash in pairs:
            hit = stored.get(request_hash)
            if hit is None:
                continue
            vector = hit.vector.astype(np.float64)
            sums[key] = sums[key] + vector if key in sums else vector
            counts[key] = counts.get(key, 0) + 1
        return {key: total / counts[key] for key, total in sums.items()}


def _whole_key_chunks(pairs: list[tuple[str, str]]) -> Iterable[list[tuple[str, str]]]:
    """(key, hash) pairs (grouped by key) in chunks of about CHUNK_SIZE that never split a key,
    so that each key's average is taken in one statement."""
    chunk: list[tuple[str, str]] = []
    for _, group in groupby(pairs, key=lambda pair: pair[0]):
        rows = list(group)
        if chunk and len(chunk) + len(rows) > CHUNK_SIZE:
            yield chunk
            chunk = []
        chunk.extend(rows)
    if chunk:
        yield chunk
