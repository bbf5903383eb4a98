"""Helpers for the variation tests: a table embedder (known vectors for known texts) and
captured-call rows shaped as the runs service writes them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class TableEmbedder:
    """An `Embedder` whose vectors are given per text: the clustering's geometry is then known
    exactly. (The embedding-strategy ordering test uses the real EmbeddingService instead.)"""

    def __init__(self, vectors: Mapping[str, Sequence[float]]):
        self.vectors = {t: np.asarray(v, dtype=np.float64) for t, v in vectors.items()}
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {"embedder": "table", "model": "table-v1"}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.vstack([self.vectors[t] for t in texts])

    def request_hashes(self, texts: Sequence[str]) -> list[str | None]:
        return [hashlib.sha256(t.encode()).hexdigest() for t in texts]


def unit(angle: float) -> list[float]:
    return [float(np.cos(angle)), float(np.sin(angle))]


@dataclass
class FakeCall:
    """The fields of a RawCall that cells read (a plain object, as a query would return)."""

    id: int
    status: str
    response_json: dict | None = None
    error_json: dict | None = None
    metadata_json: dict | None = field(default_factory=dict)


def call(id_, prompt, target, sample, text=None, *, status="success", error=None, finish="stop"):
    return FakeCall(
        id=id_,
        status=status,
        response_json={"text": text, "finish_reason": finish} if status == "success" else None,
        error_json={"type": error} if error else None,
        metadata_json={"prompt_id": prompt, "target": target, "sample_index": sample},
    )
