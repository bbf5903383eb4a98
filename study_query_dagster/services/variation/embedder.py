"""`Embedder`: the vectors the variation metrics and the `embedding` strategy need, from
whatever `EmbeddingService` the caller configured (its cache makes a second look free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Embedder(Protocol):
    """Vectors for texts, plus what identifies them (recorded with every result)."""

    def describe(self) -> dict[str, Any]: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def request_hashes(self, texts: Sequence[str]) -> list[str | None]: ...


class EmbeddingServiceEmbedder:
    """An `Embedder` over an `EmbeddingService`: one batch call per request (deduplicated
    texts), failing loudly when any text could not be embedded."""

    def __init__(self, service):
        self.service = service

    def describe(self) -> dict[str, Any]:
        return {"embedder": self.service.provider_name, "model": self.service.model}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        if not unique:
            return np.zeros((0, 0))
        responses = await self.service.get_embeddings_batch(unique)
        failed = [(t, r.error) for t, r in zip(unique, responses, strict=True) if r.error]
        if failed:
            text, error = failed[0]
            raise RuntimeError(
                f"{len(failed)} of {len(unique)} answers could not be embedded "
                f"(first: {text[:60]!r}: {error.message})"
            )
        by_text = {
            t: np.asarray(r.array, dtype=np.float64) for t, r in zip(unique, responses, strict=True)
        }
        return np.vstack([by_text[t] for t in texts])

    def request_hashes(self, texts: Sequence[str]) -> list[str | None]:
        return list(self.service.request_hashes(list(texts)))
