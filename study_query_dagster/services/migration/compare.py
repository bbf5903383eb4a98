"""Row-by-row comparison of v1 rows with their migrated raw_calls, by streamed chunk digests.

The expected raw_call of a v1 row is what the migration makes of it today (`convert`); the
stored one is read back through the ledger. Each is hashed over its compared columns (JSON with
sorted keys, so PostgreSQL's JSONB key order does not matter). Rows are compared a page of v1
ids at a time: each side is streamed into a dict of v1 id -> digest (never the rows themselves,
so memory does not depend on the size of a row or of the table); pages whose digests agree are
done, and only the rows whose digests differ are read again and reduced to the same flat
*form* (prompt, response, provider, model, tokens, latency, created_at, v1 id, batch id, v1
metadata, …) to name the fields that differ.

Rows to compare are every v1 row (`sample_size=None`) or a uniform random sample (seeded
reservoir sampling over the id scan: one pass, memory of `sample_size` ids).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ...db.legacy_reader import LegacySource
from ...db.migrated_reader import COMPARED, MigratedReader
from .convert import UnmigratableRow, v1_row_to_raw_call
from .gc_pause import paused_gc

SAMPLE_PAGE = 500  # sampled ids compared per round trip
DETAIL_PAGE = 100  # differing rows read again per round trip

# Form key -> (the name reports use, how to read it from a raw_calls row).
_FORM = {
    "prompt": lambda r: _get(r["request_json"], "prompt"),
    "request": lambda r: _other_keys(r["request_json"], "prompt"),
    "response": lambda r: _get(r["response_json"], "text"),
    "response_json": lambda r: _other_keys(r["response_json"], "text"),
    "provider": lambda r: r["provider"],
    "model": lambda r: r["model"],
    "status": lambda r: r["status"],
    "modality": lambda r: r["modality"],
    "error": lambda r: r.get("error_json"),
    "tokens": lambda r: r["tokens_json"],
    "latency_ms": lambda r: r["latency_ms"],
    "created_at": lambda r: r["created_at"],
    "v1_id": lambda r: _get(r["metadata_json"], "v1_id"),
    "batch_id": lambda r: _get(r["metadata_json"], "v1_batch_id"),
    "source": lambda r: _get(r["metadata_json"], "v1_source"),
    "metadata": lambda r: _get(r["metadata_json"], "v1_metadata"),
    "encoding": lambda r: _get(r["metadata_json"], "v1_encoding"),
    "metadata_json": lambda r: _other_keys(
        r["metadata_json"], "v1_id", "v1_batch_id", "v1_source", "v1_metadata", "v1_encoding"
    ),
}


def _get(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, dict) else None


def _other_keys(value: Any, *known: str) -> Any:
    if not isinstance(value, dict):
        return value
    return {k: v for k, v in value.items() if k not in known} or None


def form(raw: dict[str, Any]) -> dict[str, Any]:
    """The compared fields of a raw_calls row (a dict of its columns)."""
    return {name: read(raw) for name, read in _FORM.items()}


def _canonical_json():
    """JSON with sorted keys (datetimes as text), json's C encoder built once."""
    fallback = json.JSONEncoder(sort_keys=True, ensure_ascii=False, default=str)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return fallback.encode
    chunks = make(None, str, json.encoder.encode_basestring, None, ": ", ", ", True, False, True)
    return lambda value: "".join(chunks(value, 0))


_canonical = _canonical_json()


def _digest(raw: dict[str, Any]) -> bytes:
    """A digest of a raw_calls row's compared columns: equal rows, equal digests (whatever the
    order of keys inside their JSON)."""
    text = _canonical([raw.get(name) for name in COMPARED])
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def _expected(row: Any, source_id: str) -> dict[str, Any] | UnmigratableRow:
    try:
        return v1_row_to_raw_call(row, source_id)
    except UnmigratableRow as problem:
        return problem


@dataclass
class Difference:
    v1_id: int
    batch_id: str | None
    field: str
    v1: Any
    v2: Any
    problem: str


@dataclass
class RowComparison:
    """How many rows a comparison looked at (its differences went to `on_difference`)."""

    sampled_rows: int = 0
    compared_rows: int = 0  # rows present on both sides
    skipped_quarantined: int = 0
    seed: int | None = None
    full: bool = False


def sample_v1_ids(source: LegacySource, size: int | None, seed: int | None = None) -> list[int]:
    """A uniform random sample of v1 ids, ascending. `size=None` returns every id."""
    rng = random.Random(seed)
    sample: list[int] = []
    seen = 0
    for page in source.id_pages():
        for v1_id in page:
            seen += 1
            if size is None or len(sample) < size:
                sample.append(v1_id)
            else:
                slot = rng.randrange(seen)
                if slot < size:
                    sample[slot] = v1_id
    return sorted(sample)


def _pages(source: LegacySource, sample_size: int | None, seed: int | None):
    if sample_size is None:
        return source.id_pages(), None
    if sample_size < 0:
        raise ValueError(f"sample_size must be >= 0 or None (got {sample_size})")
    if seed is None:
        seed = random.randrange(2**31)
    ids = sample_v1_ids(source, sample_size, seed)
    return (ids[i : i + SAMPLE_PAGE] for i in range(0, len(ids), SAMPLE_PAGE)), seed


def compare_rows(
    source: LegacySource,
    reader: MigratedReader,
    source_id: str,
    *,
    sample_size: int | None,
    seed: int | None = None,
    quarantined: Iterable[int] = (),
    on_difference: Callable[[Difference], None],
) -> RowComparison:
    """Compare the sampled (or every) v1 row, except quarantined ones, with its migrated
    raw_call; each difference (v1 id, field, both values) goes to `on_difference` in v1 id
    order."""
    skip = set(quarantined)
    pages, seed = _pages(source, sample_size, seed)
    result = RowComparison(seed=seed, full=sample_size is None)
    with paused_gc():
        for page in pages:
            _compare_page(source, reader, source_id, page, skip, result, on_difference)
    return result


def _compare_page(source, reader, source_id, page, skip, result, on_difference) -> None:
    """Digests of one page of v1 ids on both sides; the differing rows read again."""
    wanted = set(page) - skip
    result.sampled_rows += len(page)
    result.skipped_quarantined += len(page) - len(wanted)
    if not wanted:
        return
    if result.full:
        v1_rows = source.stream_rows(page, whole_range=True)
        v2_rows = reader.rows(source_id, low=page[0], high=page[-1])
    else:
        v1_rows = source.rows(sorted(wanted))
        v2_rows = reader.rows(source_id, ids=sorted(wanted))
    expected = _digests(((r.id, _expected(r, source_id)) for r in v1_rows), wanted)
    stored = _digests(v2_rows, wanted)
    result.compared_rows += len(expected.keys() & stored.keys())
    differing = sorted(i for i in expected if expected[i] != stored.get(i))
    for start in range(0, len(differing), DETAIL_PAGE):
        ids = differing[start : start + DETAIL_PAGE]
        for difference in _differences(source, reader, source_id, ids):
            on_difference(difference)


def _digests(items: Iterator[tuple[int, Any]], wanted: set[int]) -> dict[int, bytes]:
    out = {}
    for v1_id, row_form in items:
        if v1_id not in wanted:
            continue
        if isinstance(row_form, UnmigratableRow):
            out[v1_id] = b"unmigratable:" + str(row_form).encode()
        else:
            out[v1_id] = _digest(row_form)
    return out


def _differences(source, reader, source_id, ids: list[int]) -> Iterator[Difference]:
    stored = {v1_id: form(raw) for v1_id, raw in reader.rows(source_id, ids=ids)}
    for row in source.rows(ids):
        batch = row.batch_id or None
        got = stored.get(row.id)
        expected = _expected(row, source_id)
        if not isinstance(expected, UnmigratableRow):
            expected = form(expected)
        if got is None:
            yield Difference(
                row.id, batch, "row", "present", "missing", "sampled row was not migrated"
            )
        elif isinstance(expected, UnmigratableRow):
            yield Difference(
                row.id,
                batch,
                expected.field,
                f"invalid: {expected.reason}",
                got.get(expected.field),
                "v1 row cannot be migrated any more",
            )
        else:
            for name, value in expected.items():
                if value != got[name]:
                    yield Difference(row.id, batch, name, value, got[name], f"{name} differs")
