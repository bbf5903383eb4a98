"""One v1 `inference_runs` row -> the raw_calls row it becomes (validated; errors name the v1 id).

- `request_json={"prompt": prompt}`, `response_json={"text": response}`,
  `tokens_json={"total_tokens": tokens}` (None when v1 had no count), `latency_ms`, provider,
  `status="success"` (v1 stored only answers), `modality="text"`, `model` from the v1
  metadata's "model" string when there is one, and `created_at` exactly (naive v1 timestamps
  are UTC).
- `metadata_json` = {"migrated_from": "v1", "v1_source", "v1_id", "v1_batch_id", "v1_metadata"}
  keeps the v1 id and the v1 metadata untouched.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ...db import validate_raw_call
from ...db.legacy_reader import V1_TABLE
from ...db.types import to_utc


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


def as_timestamp(value: Any) -> datetime | None:
    """A created_at from either database (driver value or datetime) as aware UTC, or None."""
    if value is None:
        return None
    return value if isinstance(value, datetime) else parse_v1_timestamp(value, "?")


def v1_metadata(text: str | None, v1_id: int) -> Any:
    """The v1 metadata column (JSON text) as a value."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"v1 {V1_TABLE} id={v1_id}: metadata is not valid JSON ({exc})") from None


def batch_of(batch_id: str | None) -> str | None:
    """The batch group a v1 row joins: none for NULL or ''."""
    return batch_id if batch_id else None


def text_size(row: Any) -> int:
    """Characters of text a v1 row carries (what bounds a chunk's memory)."""
    return len(row.prompt or "") + len(row.response or "") + len(row.metadata or "")


def v1_row_to_raw_call(row: Any, source_id: str) -> dict[str, Any]:
    """The raw_calls row for one v1 row (validated; errors name the v1 id)."""
    try:
        return _convert(row, source_id)
    except (TypeError, ValueError) as exc:
        if f"id={row.id}" in str(exc):
            raise
        raise ValueError(f"v1 {V1_TABLE} id={row.id}: {exc}") from exc


def _convert(row: Any, source_id: str) -> dict[str, Any]:
    metadata = v1_metadata(row.metadata, row.id)
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
