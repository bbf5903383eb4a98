"""What makes two requests "the same": canonical JSON, text normalisation, and the hash recipes
that key dedup, the response cache, resumed runs and the embedding cache.

Each recipe carries a key version that changes whenever the recipe does, so hashes made by an
old and a new recipe never collide. Stored hashes depend on these functions byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from json.encoder import c_encode_basestring, py_encode_basestring  # type: ignore[attr-defined]
from typing import Any

CHAT_KEY_VERSION = 1
EMBEDDING_KEY_VERSION = 1

# How json.dumps(..., ensure_ascii=False) writes one string (the C encoder when available).
_json_string = c_encode_basestring or py_encode_basestring


def canonical_json(value: Any) -> str:
    """Sorted keys, compact separators, unicode kept: one text per JSON value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def normalize_text(text: str) -> str:
    """NUL bytes removed, Unicode NFC, whitespace runs collapsed to one space, stripped."""
    text = unicodedata.normalize("NFC", text.replace("\x00", ""))
    return " ".join(text.split())


def chat_request_hash(
    provider: str,
    model: str | None,
    messages: list[Mapping[str, Any]],
    params: Mapping[str, Any],
    sample_index: int | None = None,
) -> str:
    """sha256 of the canonical JSON of the whole chat request (provider, model, messages as
    sent, params, sample index): the identity used for dedup, the response cache and resuming
    runs. Raises ValueError when the request is not JSON-serialisable."""
    payload = {
        "key_version": CHAT_KEY_VERSION,
        "provider": provider,
        "model": model,
        "messages": messages,
        "params": dict(params),
        "sample_index": sample_index,
    }
    try:
        text = canonical_json(payload)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"request is not JSON-serialisable: {exc}") from exc
    return sha256_hex(text)


def embedding_request_hash(
    text: str,
    *,
    provider: str,
    model: str,
    dimensions: int | None = None,
    encoding_format: str = "float",
) -> str:
    """The cache identity of one embedding request (the text is normalised first): sha256 of
    canonical_json({key_version, provider, model, normalized_text, dimensions, encoding_format})."""
    prefix, suffix = embedding_hash_frame(provider, model, dimensions, encoding_format)
    return hash_in_frame(prefix, normalize_text(text), suffix)


@lru_cache(maxsize=1024)
def embedding_hash_frame(
    provider: str, model: str, dimensions: int | None, encoding_format: str
) -> tuple[str, str]:
    """The canonical JSON around the text, split at the text: equal to `canonical_json` of the
    whole payload (a test checks it), built once per request key since a batch shares its key."""
    marker = "\x00text\x00"
    frame = canonical_json(
        {
            "key_version": EMBEDDING_KEY_VERSION,
            "provider": provider,
            "model": model,
            "normalized_text": marker,
            "dimensions": dimensions,
            "encoding_format": encoding_format,
        }
    )
    prefix, suffix = frame.split(_json_string(marker))
    return prefix, suffix


def hash_in_frame(prefix: str, normalized: str, suffix: str) -> str:
    """The hash of a normalised text inside a frame from `embedding_hash_frame`."""
    return sha256_hex(prefix + _json_string(normalized) + suffix)
