"""Capture of embedding calls: one `raw_calls` row per logical API call (success or failure),
one `embedding_vectors` row per vector (insert-or-ignore on the request hash, so concurrent
writers end with one entry and every writer returns the stored one), group memberships."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...db import DatabaseConnection, GroupRepository, RawCallRepository, VectorStore
from ...log import get_logger
from ..request_identity import EMBEDDING_KEY_VERSION, canonical_json, sha256_hex
from ..retry import RetryPolicy
from .models import CacheEntry, Call, CallOutcome
from .retrying import with_db_retry

logger = get_logger(__name__)


class CallCapture:
    """Writes the calls of one provider. Methods are blocking (run them in a thread)."""

    def __init__(self, db: DatabaseConnection, provider_name: str, retry: RetryPolicy):
        self.db = db
        self.provider_name = provider_name
        self.retry = retry

    def store_success(self, call: Call) -> dict[str, CacheEntry]:
        """The call, its vectors and its group membership in one transaction (retried on
        transient errors). Returns the stored entry per hash: another writer's when it stored
        the same hash first. A call without hashes (a probe) is captured, not cached."""
        return with_db_retry(self.retry, self._store_success, call)

    def store_failure(self, call: Call) -> int | None:
        """A `failed` (or `timeout`) row with the error (and what the API answered, if it
        answered); None when even that cannot be written (logged: the items fail either way)."""
        error = call.outcome.error
        assert error is not None
        row = {
            "provider": self.provider_name,
            "model": call.key.model,
            "modality": "embedding",
            "status": "timeout" if error.is_timeout else "failed",
            "request_hash": self.call_hash(call),
            "request_json": self.request_json(call),
            "error_json": error.to_dict(),
            "latency_ms": call.outcome.elapsed_ms,
            "metadata_json": self.call_metadata(call),
        }
        if call.outcome.result is not None:
            row["response_json"] = response_summary(call.outcome)
        try:
            call_id = with_db_retry(self.retry, self._insert, row, call.provenance.get("group_id"))
        except Exception:
            logger.exception("could not capture a failed embedding call (%s)", error.error_type)
            return None
        logger.info(
            "captured failed embedding call id=%s provider=%s model=%s inputs=%d error=%s",
            call_id,
            self.provider_name,
            call.key.model,
            len(call.texts),
            error.error_type,
        )
        return call_id

    def group_exists(self, group_id: int) -> bool:
        with self.db.session_scope() as session:
            return GroupRepository(session).get_group(group_id) is not None

    def stored_dimension(self, model: str, dimensions: int | None) -> int | None:
        """The length of this provider's vectors already stored for `model` at `dimensions`
        (None: the model's default size), or None when there are none."""
        with self.db.session_scope() as session:
            return VectorStore(session).stored_dimension(self.provider_name, model, dimensions)

    # --- rows ------------------------------------------------------------------------------

    def _store_success(self, call: Call) -> dict[str, CacheEntry]:
        outcome, key, texts, hashes = call.outcome, call.key, call.texts, call.hashes
        result = outcome.result
        assert result is not None
        vectors = result.array if result.array is not None else np.asarray(result, np.float32)
        with self.db.session_scope() as session:
            call_id = RawCallRepository(session).insert_raw_call(
                provider=self.provider_name,
                model=key.model,
                modality="embedding",
                status="success",
                request_hash=self.call_hash(call),
                request_json=self.request_json(call),
                response_json=response_summary(outcome),
                latency_ms=result.latency_ms,
                tokens_json=result.usage,
                metadata_json=self.call_metadata(call),
            )
            group_id = call.provenance.get("group_id")
            if group_id is not None:
                GroupRepository(session).add_group_members(group_id, [call_id], role="embedding")
            if not hashes:
                return {}
            # Sorted by hash so concurrent writers lock rows in the same order (no deadlock).
            order = sorted(range(len(hashes)), key=hashes.__getitem__)
            rows = [
                {
                    "call_id": call_id,
                    "model": key.model,
                    "vector": vectors[i],
                    "request_hash": hashes[i],
                    "text": texts[i],
                }
                for i in order
            ]
            store = VectorStore(session)
            ids = store.insert_embedding_vectors(rows, ignore_duplicates=True)
            entries = {
                hashes[i]: CacheEntry(vectors[i], embedding_id, call_id, key.model, texts[i])
                for i, embedding_id in zip(order, ids, strict=True)
            }
            for row in store.stored_by_other_calls(ids, call_id):
                entries[row.request_hash] = CacheEntry.of(row)
        logger.info(
            "embedded %d texts provider=%s model=%s call_id=%s in %.0f ms (attempts=%d)",
            len(texts),
            self.provider_name,
            key.model,
            call_id,
            outcome.elapsed_ms,
            outcome.attempts,
        )
        return entries

    def _insert(self, row: dict[str, Any], group_id: int | None) -> int:
        with self.db.session_scope() as session:
            call_id = RawCallRepository(session).insert_raw_call(**row)
            if group_id is not None:
                GroupRepository(session).add_group_members(group_id, [call_id], role="embedding")
            return call_id

    @staticmethod
    def request_json(call: Call) -> dict[str, Any]:
        return {
            "input": call.texts,
            "model": call.key.model,
            "dimensions": call.key.dimensions,
            "encoding_format": call.key.encoding_format,
        }

    def call_hash(self, call: Call) -> str:
        """The identity of one call: its key and its inputs' request hashes (a probe: its texts)."""
        payload = {
            "key_version": EMBEDDING_KEY_VERSION,
            "provider": self.provider_name,
            "model": call.key.model,
            "dimensions": call.key.dimensions,
            "encoding_format": call.key.encoding_format,
            "inputs": call.hashes or call.texts,
        }
        return sha256_hex(canonical_json(payload))

    @staticmethod
    def call_metadata(call: Call) -> dict[str, Any]:
        outcome = call.outcome
        meta: dict[str, Any] = {
            "request_hashes": call.hashes,
            "key_version": EMBEDDING_KEY_VERSION,
            "attempts": outcome.attempts,
            "elapsed_ms": round(outcome.elapsed_ms, 3),
            **{k: v for k, v in call.provenance.items() if v not in (None, {})},
        }
        if outcome.retried:
            meta["retried_errors"] = outcome.retried
        return meta


def response_summary(outcome: CallOutcome) -> dict[str, Any] | None:
    """What the API answered, without the vectors (those go to embedding_vectors)."""
    result = outcome.result
    if result is None:
        return None
    return {
        "count": len(result),
        "dimension": result.dimension,
        "model": result.model,
        "request_id": result.request_id,
    }
