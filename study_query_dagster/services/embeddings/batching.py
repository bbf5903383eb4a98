"""Cache misses to stored vectors: the misses of one request key cut into API calls, the first
call of an unverified deployment or vector size sent alone (it doubles as the probe), the
length of every answer's vectors checked, every call captured."""

from __future__ import annotations

import asyncio
from typing import Any

from ...log import get_logger
from ...providers.base import ProviderError
from .calls import EmbeddingCaller, chunk_items
from .capture import CallCapture
from .deployments import Deployments, is_invalid_deployment
from .models import CacheEntry, Call, EmbeddingError, PreparedItem, RequestKey
from .retrying import with_db_retry

logger = get_logger(__name__)

Results = tuple[dict[str, CacheEntry], dict[str, EmbeddingError]]
Size = tuple[str, int | None]  # (model, requested dimensions)


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
        self._sizes: dict[Size, int] = {}  # the vector length each size's calls returned
        self._mismatched: dict[Size, ProviderError] = {}

    async def embed(
        self, key: RequestKey, items: list[PreparedItem], provenance: dict[str, Any]
    ) -> Results:
        """Vectors (or errors) by request hash for `items`, the unique misses of one key."""
        got: dict[str, CacheEntry] = {}
        failed: dict[str, EmbeddingError] = {}
        chunks = chunk_items(items, self.max_inputs, self.max_tokens)
        size = (key.model, key.dimensions)
        if (
            chunks
            and self._known_failure(key) is None
            and (self.deployments.known(key.model) is None or size not in self._sizes)
        ):
            # If the deployment is missing or answers vectors of the wrong length, the rest
            # are not sent.
            first_got, first_failed = await self._run_call(key, chunks.pop(0), provenance)
            got.update(first_got)
            failed.update(first_failed)
        error = self._known_failure(key)
        if error is not None:
            failed.update({i.request_hash: error for chunk in chunks for i in chunk})
            return got, failed
        results = await asyncio.gather(*(self._run_call(key, c, provenance) for c in chunks))
        for chunk_got, chunk_failed in results:
            got.update(chunk_got)
            failed.update(chunk_failed)
        return got, failed

    def _known_failure(self, key: RequestKey) -> EmbeddingError | None:
        """The error every item of `key` gets without a call, if this service learnt one."""
        if self.deployments.known(key.model) is False:
            return self.deployments.invalid_error(key.model)
        mismatch = self._mismatched.get((key.model, key.dimensions))
        if mismatch is not None:
            return EmbeddingError("dimension_mismatch", mismatch.message, provider_error=mismatch)
        return None

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
                call.outcome.error = await self._check_size(call)
                if call.outcome.error is None:
                    return await asyncio.to_thread(self.capture.store_success, call), {}
            except Exception as exc:
                logger.exception("could not store %d embeddings of %s", len(chunk), key.model)
                error = EmbeddingError("storage_error", f"could not store the embedding: {exc}")
                return {}, dict.fromkeys(call.hashes, error)
        error = await self._failed(call)
        if error.kind == "dimension_mismatch":
            self._mismatched.setdefault((key.model, key.dimensions), error.provider_error)
        return {}, dict.fromkeys(call.hashes, error)

    async def _failed(self, call: Call) -> EmbeddingError:
        """Capture a failed call; the error its items get."""
        error = call.outcome.error
        assert error is not None
        call_id = await asyncio.to_thread(self.capture.store_failure, call)
        if error.error_type == "dimension_mismatch":
            return EmbeddingError(
                "dimension_mismatch", error.message, provider_error=error, raw_call_id=call_id
            )
        if is_invalid_deployment(error):
            self.deployments.mark_invalid(call.key.model, error)
            return self.deployments.invalid_error(call.key.model, call_id)
        return EmbeddingError(
            "provider_error", error.message, provider_error=error, raw_call_id=call_id
        )

    async def _check_size(self, call: Call) -> ProviderError | None:
        """A `dimension_mismatch` error when the vectors are not as long as the call asked, or
        (when it left the size to the model) as the vectors of that model stored before."""
        result = call.outcome.result
        assert result is not None
        key = call.key
        size = (key.model, key.dimensions)
        expected = key.dimensions or self._sizes.get(size)
        if expected is None:
            expected = await asyncio.to_thread(
                with_db_retry, self.capture.retry, self.capture.stored_dimension, key.model, None
            )
        got = result.dimension
        if expected is None or got == expected:
            self._sizes[size] = got
            return None
        if key.dimensions is not None:
            why = f"{expected} were asked for (does the server ignore `dimensions`?)"
        else:
            why = f"its vectors stored before have {expected}"
        return ProviderError(
            f"{self.provider_name}: {key.model} answered {got}-dimension vectors but {why}; "
            "they were not cached",
            self.provider_name,
            retryable=False,
            error_type="dimension_mismatch",
            request_id=result.request_id,
        )
