"""Similarity search over stored embeddings: the k nearest of one model (cosine, ties by id),
with the PostgreSQL HNSW index of that model and dimension created on first use."""

from __future__ import annotations

import numpy as np
from sqlalchemy.exc import IntegrityError, ProgrammingError

from ...db import DatabaseConnection, VectorStore
from .models import SimilarEmbedding


def query_vector(value: object) -> np.ndarray:
    vector = np.asarray(value, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        raise ValueError("similar: the query vector must be a non-empty list of numbers")
    return vector


class SimilaritySearch:
    """Blocking (run it in a thread)."""

    def __init__(self, db: DatabaseConnection):
        self.db = db
        self._indexed: set[tuple[str, int]] = set()

    def nearest(
        self, vector: np.ndarray, k: int, model: str, exclude: str | None = None
    ) -> list[SimilarEmbedding]:
        """The k nearest stored embeddings of `model`, leaving out the one whose request hash
        is `exclude` (a text query's own entry)."""
        dimension = int(vector.size)
        if self.db.dialect == "postgresql" and (model, dimension) not in self._indexed:
            self._ensure_index(model, dimension)
        with self.db.session_scope() as session:
            hits = VectorStore(session).nearest_embeddings(
                vector, k=k + (1 if exclude else 0), model=model
            )
            out = [
                SimilarEmbedding(e.text, distance, e.model, e.id, e.call_id, e.request_hash)
                for e, distance in hits
                if exclude is None or e.request_hash != exclude
            ]
        return out[:k]

    def _ensure_index(self, model: str, dimension: int) -> None:
        # Its own short transaction: CREATE INDEX blocks writers until it commits.
        try:
            with self.db.session_scope() as session:
                VectorStore(session).ensure_hnsw_index(model, dimension)
        except (IntegrityError, ProgrammingError):
            # Another process created the same index at the same moment: fine if it is there.
            with self.db.session_scope() as session:
                if not VectorStore(session).hnsw_index_exists(model, dimension):
                    raise
        self._indexed.add((model, dimension))
