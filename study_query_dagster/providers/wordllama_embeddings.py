"""`WordLlamaEmbeddingProvider`: a real semantic embedder with no network. The `wordllama` wheel
ships a small static model (token embeddings averaged over a text, 256 dimensions, trained so
that 64- and 128-dimension prefixes work too) and its tokenizer; both are loaded from the
package's own directory with downloads disabled, once per process."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .base import ProviderError
from .embeddings import BaseEmbeddingProvider, EmbeddingResult, validate_embed_args

MODEL = "wordllama-l2-supercat"
CONFIG = "l2_supercat"  # the configuration whose 256-dimension weights are in the wheel
SHIPPED_DIMENSION = 256
DIMENSIONS = (64, 128, 256)
# Texts per tokenizer batch, padded to the batch's longest text: this bounds the memory of a
# call (batch x tokens x 256 floats) whatever its number of inputs.
BATCH_SIZE = 32


def _import_wordllama() -> Any:
    # wordllama calls logging.basicConfig() on import, which would give the root logger a
    # stderr handler in every process that embeds; the application configures logging itself.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        import wordllama
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return wordllama


@lru_cache(maxsize=len(DIMENSIONS))
def load_model(dimensions: int = SHIPPED_DIMENSION) -> Any:
    """The `WordLlamaInference` model at `dimensions` (one of DIMENSIONS).

    WordLlama looks for weights and tokenizer under `<cache_dir>/weights` and
    `<cache_dir>/tokenizers`, which is the layout of its package directory; its default
    lookup misses the packaged tokenizer and goes to the model hub, hence `cache_dir`.
    """
    if dimensions not in DIMENSIONS:
        raise ValueError(f"wordllama: dimensions must be one of {DIMENSIONS} (got {dimensions!r})")
    wordllama = _import_wordllama()
    return wordllama.WordLlama.load(
        CONFIG,
        cache_dir=Path(wordllama.__file__).parent,
        dim=SHIPPED_DIMENSION,
        trunc_dim=None if dimensions == SHIPPED_DIMENSION else dimensions,
        disable_download=True,
    )


def package_version() -> str:
    return _import_wordllama().__version__


class WordLlamaEmbeddingProvider(BaseEmbeddingProvider):
    """WordLlama's `l2_supercat` model, offline: unit vectors of 256 dimensions (or 64/128 with
    `dimensions`). Similar meanings score high (a paraphrase ~0.96, an unrelated text ~0)."""

    name = "wordllama"
    default_model = MODEL
    default_token_limit = None
    max_request_tokens = None

    def __init__(self, *, batch_size: int = BATCH_SIZE):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"wordllama: `batch_size` must be >= 1 (got {batch_size!r})")
        self.batch_size = batch_size

    async def embed(
        self,
        texts: Sequence[str],
        *,
        model: str = MODEL,
        dimensions: int | None = None,
        encoding_format: str = "float",
    ) -> EmbeddingResult:
        validate_embed_args(texts, model, dimensions, encoding_format, "wordllama.embed")
        if model != MODEL:
            raise ProviderError(
                f"wordllama: unknown model {model!r}; the only one is {MODEL!r}",
                self.name,
                404,
                error_type="not_found",
            )
        size = dimensions or SHIPPED_DIMENSION
        if size not in DIMENSIONS:
            raise ProviderError(
                f"wordllama: dimensions must be one of {DIMENSIONS} (got {size})",
                self.name,
                400,
                error_type="bad_request",
            )
        started = time.perf_counter()
        vectors = load_model(size).embed(list(texts), batch_size=self.batch_size)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        np.divide(vectors, norms, out=vectors, where=norms > 0)
        return EmbeddingResult(
            vectors.tolist(),
            array=vectors,
            model=f"{MODEL} (wordllama {package_version()})",
            latency_ms=(time.perf_counter() - started) * 1000,
        )
