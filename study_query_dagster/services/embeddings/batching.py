"""Cache misses to stored vectors: the misses of one request key cut into API calls, the first
call of an unverified deployment sent alone (it doubles as the probe), every call captured."""

from __future__ import annotations

import asyncio
from typing import Any

from ...log import get_logger
from .calls import EmbeddingCaller, chunk_items
from .capture import CallCapture
from .deployments import Deployments, is_invalid_deployment
from .models import CacheEntry, Call, EmbeddingError, PreparedItem, RequestKey

logger = get_logger(__name__)

Results = tuple[dict[str, CacheEntry], dict[str, EmbeddingError]]


class BatchEmbedder:
    def __init__(
        self,
        caller: EmbeddingCaller,
        capture: CallCapture,
        deployments: Deployments,
        *,
        max_inputs: int,
        max_tokens: int | None,
    ):
        self.caller = caller
        self.capture = capture
        self.deployments = deployments
        self.max_inputs = max_inputs
        self.max_tokens = max_tokens
        self.provider_name = caller.provider_name

    async def embed(
        self, key: RequestKey, items: list[PreparedItem], provenance: dict[str, Any]
    ) -> Results:
        """Vectors (or errors) by request hash for `items`, the unique misses of one key."""
        got: dict[str, CacheEntry] = {}
        failed: dict[str, EmbeddingError] = {}
        chunks = chunk_items(items, self.max_inputs, self.max_tokens)
        if chunks and self.deployments.known(key.model) is None:
            # If the deployment is missing, the rest are not sent.
            first_got, first_failed = await self._run_call(key, chunks.pop(0), provenance)
            got.update(first_got)
            failed.update(first_failed)
        if chunks and self.deployments.known(key.model) is False:
            error = self.deployments.invalid_error(key.model)
            failed.update({i.request_hash: error for chunk in chunks for i in chunk})
            return got, failed
        results = await asyncio.gather(*(self._run_call(key, c, provenance) for c in chunks))
        for chunk_got, chunk_failed in results:
            got.update(chunk_got)
            failed.update(chunk_failed)
        return got, failed

    async def probe(self, key: RequestKey, text: str, provenance: dict[str, Any]) -> bool:
        """A one-input call to check a deployment, captured but not cached; a refusal
        (401/403/404) is remembered, a transient failure is not."""
        call = Call(key, [text], [], provenance)
        call.outcome = await self.caller.call(call.texts, key)
        error = call.outcome.error
        if error is None:
            self.deployments.mark_valid(key.model)
            await asyncio.to_thread(self.capture.store_success, call)
            return True
        await asyncio.to_thread(self.capture.store_failure, call)
        if is_invalid_deployment(error):
            self.deployments.mark_invalid(key.model, error)
        else:
            logger.warning(
                "probe of %s:%s failed, will probe again later: %s",
                self.provider_name,
                key.model,
                error.message,
            )
        return False

    async def _run_call(
        self, key: RequestKey, chunk: list[PreparedItem], provenance: dict[str, Any]
    ) -> Results:
        call = Call(key, [i.text for i in chunk], [i.request_hash for i in chunk], provenance)
        call.outcome = await self.caller.call(call.texts, key)
        if call.outcome.error is None:
            self.deployments.mark_valid(key.model)
            try:
                return await asyncio.to_thread(self.capture.store_success, call), {}
            except Exception as exc:
                logger.exception("could not store %d embeddings of %s", len(chunk), key.model)
                error = EmbeddingError("storage_error", f"could not store the embedding: {exc}")
                return {}, dict.fromkeys(call.hashes, error)
        return {}, dict.fromkeys(call.hashes, await self._failed(call))

    async def _failed(self, call: Call) -> EmbeddingError:
        """Capture a failed call; the error its items get."""
        error = call.outcome.error
        assert error is not None
        call_id = await asyncio.to_thread(self.capture.store_failure, call)
        if is_invalid_deployment(error):
            self.deployments.mark_invalid(call.key.model, error)
            return self.deployments.invalid_error(call.key.model, call_id)
        return EmbeddingError(
            "provider_error", error.message, provider_error=error, raw_call_id=call_id
        )
