"""Request preparation: argument checks, and each input turned into a normalised (maybe
truncated) text with its cache hash, or a per-item error. No I/O."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...providers.embeddings import ENCODING_FORMATS
from ..request_identity import embedding_hash_frame, hash_in_frame, normalize_text
from .models import EmbeddingError, EmbeddingRequest, PreparedItem, RequestKey


def utf8_token_bound(text: str) -> int:
    """A token count that is never too low for byte-level BPE tokenizers (cl100k_base,
    o200k_base): every token covers at least one UTF-8 byte. It needs no tokenizer data, at the
    price of over-counting (English averages about 4 bytes per token)."""
    return len(text.encode("utf-8"))


def check_model(value: Any, where: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: `model` must be a non-empty string (got {value!r})")


def check_dimensions(value: Any, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{where}: `dimensions` must be a positive integer (got {value!r})")


def check_format(value: Any, where: str) -> None:
    if value not in ENCODING_FORMATS:
        raise ValueError(
            f"{where}: `encoding_format` must be one of {', '.join(ENCODING_FORMATS)} "
            f"(got {value!r})"
        )


def check_metadata(value: Any, where: str) -> None:
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: `metadata` must be a dict (got {type(value).__name__})")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: `metadata` must be JSON-serialisable: {exc}") from exc


@dataclass(frozen=True)
class RequestPreparer:
    """Turns inputs into `PreparedItem`s for one provider.

    `token_limits` maps a model to its per-input limit (`default_token_limit` otherwise, None
    meaning no limit); `token_counter` counts a text's tokens.
    """

    provider_name: str
    default_token_limit: int | None
    token_limits: Mapping[str, int | None]
    token_counter: Callable[[str], int] = utf8_token_bound

    def prepare_all(self, items: Any, defaults: EmbeddingRequest) -> list[PreparedItem]:
        """One prepared item per input, in input order."""
        return [self.prepare(i, item, defaults) for i, item in enumerate(items)]

    def prepare(self, index: int, item: Any, defaults: EmbeddingRequest) -> PreparedItem:
        out = PreparedItem(index)
        request = item if isinstance(item, EmbeddingRequest) else EmbeddingRequest(item)
        model = request.model or defaults.model
        dimensions = request.dimensions if request.dimensions is not None else defaults.dimensions
        encoding_format = request.encoding_format or defaults.encoding_format
        truncate = defaults.truncate if request.truncate is None else request.truncate
        where = f"item {index}"
        try:
            check_model(model, where)
            check_dimensions(dimensions, where)
            check_format(encoding_format, where)
        except ValueError as exc:
            out.error = EmbeddingError("invalid_input", str(exc))
            return out
        out.key = RequestKey(model, dimensions, encoding_format)
        if not isinstance(request.text, str):
            out.error = EmbeddingError(
                "invalid_input",
                f"{where}: text must be a string (got {type(request.text).__name__})",
            )
            return out
        text = normalize_text(request.text)
        if not text:
            out.error = EmbeddingError(
                "invalid_input",
                f"{where}: text is empty after normalisation (got {request.text[:40]!r})",
            )
            return out
        limit = self.token_limits.get(model, self.default_token_limit)
        tokens = self.token_counter(text)
        if limit is not None and tokens > limit:
            if not truncate:
                counter = getattr(self.token_counter, "__name__", "the token counter")
                out.error = EmbeddingError(
                    "too_long",
                    f"{where}: about {tokens} tokens (counted with {counter}) exceeds the "
                    f"{limit}-token limit of {model}; pass truncate=True to cut it",
                )
                return out
            text = self.truncate(text, limit)
            tokens = self.token_counter(text)
            out.truncated = True
        out.text, out.tokens = text, tokens
        prefix, suffix = embedding_hash_frame(
            self.provider_name, model, dimensions, encoding_format
        )
        out.request_hash = hash_in_frame(prefix, text, suffix)
        return out

    def truncate(self, text: str, limit: int) -> str:
        """The longest prefix within `limit` tokens (binary search: any counter works)."""
        low, high = 0, len(text)
        while low < high:
            middle = (low + high + 1) // 2
            if self.token_counter(text[:middle]) <= limit:
                low = middle
            else:
                high = middle - 1
        return normalize_text(text[:low])
