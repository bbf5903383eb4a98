"""One v1 `inference_runs` row -> the raw_calls row it becomes.

- `request_json={"prompt": prompt}`, `response_json={"text": response}`, provider,
  `status="success"` (v1 stored only answers), `modality="text"`, `latency_ms`, and
  `created_at` exactly (naive v1 timestamps are UTC, microseconds kept).
- `tokens_json`: `total_tokens` from the v1 `tokens` column, plus `prompt_tokens` and
  `completion_tokens` from the v1 metadata when they are non-negative integers (the original
  tool's providers put the split there), so cost analytics work on migrated calls.
- `model` from the v1 metadata's "model" string (1-255 characters) when there is one.
- `metadata_json` = {"migrated_from": "v1", "v1_source", "v1_id", "v1_batch_id",
  "v1_metadata"}: the v1 id and the v1 metadata as the v1 row had them, except where JSON
  cannot hold a value. Those are recorded in "v1_encoding":
  - `nonfinite_as_string`: paths (lists of keys and indices) into `v1_metadata` where a NaN,
    Infinity or -Infinity number (which the original's JSON writer produced) is stored as the
    string "NaN", "Infinity" or "-Infinity";
  - `nul_as_fffd`: the fields ("prompt", "response", "metadata") in which U+0000 is stored as
    U+FFFD (PostgreSQL's JSONB cannot hold U+0000, and both backends store the same).

A row that cannot be converted raises `UnmigratableRow` naming the v1 id, the field and the value.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any

from ...db.legacy_reader import V1_TABLE
from ...db.types import to_utc

NUL, REPLACEMENT = "\x00", "\ufffd"
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class UnmigratableRow(ValueError):
    """A v1 row the v2 schema cannot take: its v1 id, the field at fault and why."""

    def __init__(self, v1_id: Any, field: str, reason: str):
        self.v1_id, self.field, self.reason = v1_id, field, reason
        super().__init__(f"v1 {V1_TABLE} id={v1_id}: field '{field}' {reason}")


def _shown(value: Any, length: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= length else text[: length - 1] + "…"


def parse_v1_timestamp(value: Any, v1_id: Any) -> datetime:
    """A v1 created_at as an aware UTC datetime, to the microsecond. SQLite gives text (naive,
    UTC); PostgreSQL gives datetimes (naive for `timestamp`, aware for `timestamptz`)."""
    if isinstance(value, str):
        text = value.strip()
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        elif len(text) > 10 and "+" not in text[10:] and "-" not in text[10:]:
            text += "+00:00"  # naive v1 text is UTC (parsed aware: quicker than .replace)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise UnmigratableRow(
                v1_id, "created_at", f"is not a timestamp (got {_shown(value)})"
            ) from None
    if not isinstance(value, datetime):
        raise UnmigratableRow(v1_id, "created_at", f"is not a timestamp (got {_shown(value)})")
    return value if value.tzinfo is timezone.utc else to_utc(value)


def as_timestamp(value: Any) -> datetime | None:
    """A created_at from either database (driver value or datetime) as aware UTC, or None."""
    if value is None:
        return None
    return value if isinstance(value, datetime) else parse_v1_timestamp(value, "?")


def v1_metadata(text: str | None, v1_id: int) -> Any:
    """The v1 metadata column (JSON text, NaN and Infinity allowed) as a value."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnmigratableRow(v1_id, "metadata", f"is not valid JSON ({exc})") from None


class JsonSafe:
    """Makes a parsed JSON value storable on both backends: non-finite numbers become strings
    (their paths kept in `nonfinite`), U+0000 becomes U+FFFD in strings and keys (`had_nul`)."""

    def __init__(self):
        self.nonfinite: list[list] = []
        self.had_nul = False

    def __call__(self, value: Any, path: tuple = ()) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            self.nonfinite.append(list(path))
            return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, list):
            return [self(v, (*path, i)) for i, v in enumerate(value)]
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                safe_key = self._text(key)
                out[safe_key] = self(item, (*path, safe_key))
            return out
        return value

    def _text(self, text: str) -> str:
        if NUL in text:
            self.had_nul = True
            return text.replace(NUL, REPLACEMENT)
        return text


def restore_nonfinite(metadata: Any, paths: list[list]) -> Any:
    """The v1 metadata with the recorded non-finite numbers put back (the inverse of the
    `nonfinite_as_string` encoding)."""
    for path in paths:
        if not path:
            return NONFINITE[metadata]
        parent = metadata
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = NONFINITE[parent[path[-1]]]
    return metadata


def _maybe_unsafe(text: str | None) -> bool:
    """Whether JSON text may hold a value JSON columns cannot store (most rows cannot: the
    walk over the parsed value is skipped for them)."""
    if text is None:
        return False
    return "NaN" in text or "Infinity" in text or "\\u0000" in text or NUL in text


def batch_of(batch_id: str | None) -> str | None:
    """The batch group a v1 row joins: none for NULL or ''."""
    return batch_id if batch_id else None


def text_size(row: Any) -> int:
    """Characters of text a v1 row carries (what bounds a chunk's memory)."""
    return len(row.prompt or "") + len(row.response or "") + len(row.metadata or "")


def _count(value: Any) -> int | None:
    """A non-negative integer count, or None for anything else (not migrated as a count)."""
    kind = type(value)  # exact types: a bool is not a count
    if kind is int:
        return value if value >= 0 else None
    if kind is float and value.is_integer() and value >= 0:
        return int(value)
    return None


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _tokens(value: Any, v1_id: int) -> int | None:
    if value is None or (type(value) is int and value >= 0):
        return value
    count = _count(_number(value) if isinstance(value, str) else value)
    if count is None:
        raise UnmigratableRow(v1_id, "tokens", f"is not a count (got {_shown(value)})")
    return count


def _tokens_json(total: int | None, metadata: Any) -> dict | None:
    tokens = {} if total is None else {"total_tokens": total}
    if isinstance(metadata, dict):
        for key in ("prompt_tokens", "completion_tokens"):
            count = _count(metadata.get(key))
            if count is not None:
                tokens[key] = count
    return tokens or None


def _latency(value: Any, v1_id: int) -> float | None:
    if value is None or (type(value) is float and 0 <= value < math.inf):
        return value
    try:
        latency = float(value)
    except (TypeError, ValueError):
        raise UnmigratableRow(
            v1_id, "latency_ms", f"is not a number (got {_shown(value)})"
        ) from None
    if not math.isfinite(latency) or latency < 0:
        raise UnmigratableRow(
            v1_id, "latency_ms", f"must be a finite number >= 0 (got {_shown(value)})"
        )
    return latency


def _provider(value: Any, v1_id: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UnmigratableRow(v1_id, "provider", f"is empty (got {_shown(value)})")
    if len(value) > 64:
        raise UnmigratableRow(v1_id, "provider", f"is longer than 64 characters ({_shown(value)})")
    return value


def _text(value: Any, v1_id: int, field: str, replaced: list[str]) -> str | None:
    if type(value) is str and NUL not in value:
        return value
    if value is None or isinstance(value, str):
        if value and NUL in value:
            replaced.append(field)
            return value.replace(NUL, REPLACEMENT)
        return value
    raise UnmigratableRow(v1_id, field, f"is not text (got {_shown(value)})")


def v1_row_to_raw_call(row: Any, source_id: str) -> dict[str, Any]:
    """The raw_calls row for one v1 row, valid for `validate_raw_call` (whose rules are checked
    here, field by field: `UnmigratableRow` names the id and the field)."""
    v1_id = row.id
    nul: list[str] = []
    prompt = _text(row.prompt, v1_id, "prompt", nul)
    response = _text(row.response, v1_id, "response", nul)
    parsed = v1_metadata(row.metadata, v1_id)
    metadata, nonfinite = parsed, []
    if _maybe_unsafe(row.metadata):
        safe = JsonSafe()
        metadata, nonfinite = safe(parsed), safe.nonfinite
        if safe.had_nul:
            nul.append("metadata")
    batch_id = row.batch_id
    if batch_id is not None and (not isinstance(batch_id, str) or len(batch_id) > 255):
        raise UnmigratableRow(
            v1_id, "batch_id", f"is not a name of at most 255 characters ({_shown(batch_id)})"
        )
    model = metadata.get("model") if isinstance(metadata, dict) else None
    extra = {}
    if nonfinite or nul:
        extra["v1_encoding"] = {
            **({"nonfinite_as_string": nonfinite} if nonfinite else {}),
            **({"nul_as_fffd": nul} if nul else {}),
        }
    return {
        "provider": _provider(row.provider, v1_id),
        "model": model if isinstance(model, str) and 0 < len(model) <= 255 else None,
        "modality": "text",
        "status": "success",
        "request_json": {"prompt": prompt},
        "response_json": {"text": response},
        "latency_ms": _latency(row.latency_ms, v1_id),
        "tokens_json": _tokens_json(_tokens(row.tokens, v1_id), parsed),
        "metadata_json": {
            "migrated_from": "v1",
            "v1_source": source_id,
            "v1_id": v1_id,
            "v1_batch_id": batch_id,
            "v1_metadata": metadata,
            **extra,
        },
        "created_at": parse_v1_timestamp(row.created_at, v1_id),
    }
