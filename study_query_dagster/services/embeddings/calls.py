"""API calls: texts cut into calls within the provider's limits, and each call made with bounded
concurrency under the retry policy, ending in a result or an error (never an exception)."""

from __future__ import annotations

import asyncio
import time

from tenacity import RetryCallState

from ...log import get_logger
from ...providers.base import ProviderError
from ...providers.embeddings import BaseEmbeddingProvider
from ..retry import RetryPolicy
from .models import CallOutcome, PreparedItem, RequestKey

logger = get_logger(__name__)


def chunk_items(
    items: list[PreparedItem], max_inputs: int, max_tokens: int | None
) -> list[list[PreparedItem]]:
    """Calls of at most `max_inputs` inputs and `max_tokens` (counted) tokens, in order."""
    chunks: list[list[PreparedItem]] = []
    current: list[PreparedItem] = []
    tokens = 0
    for item in items:
        too_many = len(current) >= max_inputs
        too_big = max_tokens is not None and current and tokens + item.tokens > max_tokens
        if too_many or too_big:
            chunks.append(current)
            current, tokens = [], 0
        current.append(item)
        tokens += item.tokens
    if current:
        chunks.append(current)
    return chunks


class EmbeddingCaller:
    """Makes logical API calls: at most `concurrency` attempts in flight, retried per `retry`."""

    def __init__(self, provider: BaseEmbeddingProvider, retry: RetryPolicy, concurrency: int):
        self.provider = provider
        self.provider_name = provider.get_provider_name()
        self.retry = retry
        self._semaphore = asyncio.Semaphore(concurrency)
        self.attempts = 0  # every attempt sent, over the caller's life

    async def call(self, texts: list[str], key: RequestKey) -> CallOutcome:
        """One logical call: retried on transient errors; each retried error (with the wait
        that followed it) is kept in `retried`."""
        outcome = CallOutcome()
        started = time.perf_counter()

        def on_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            summary = (
                error.to_dict() if isinstance(error, ProviderError) else {"message": str(error)}
            )
            wait = state.next_action.sleep if state.next_action else 0.0
            outcome.retried.append(
                {"attempt": state.attempt_number, **summary, "wait_s": round(wait, 3)}
            )
            logger.info(
                "embedding call %s:%s attempt %d failed (%s), retrying in %.2f s",
                self.provider_name,
                key.model,
                state.attempt_number,
                getattr(error, "error_type", type(error).__name__),
                wait,
            )

        try:
            # The slot is held through the retries' waits: calls to a server that asks for
            # patience do not make room for more calls to it.
            async with self._semaphore:
                async for attempt in self.retry.asynchronous(on_retry):
                    with attempt:
                        outcome.attempts += 1
                        self.attempts += 1
                        outcome.result = await self.provider.embed(
                            texts,
                            model=key.model,
                            dimensions=key.dimensions,
                            encoding_format=key.encoding_format,
                        )
        except ProviderError as exc:
            outcome.error = exc
        except Exception as exc:  # a provider bug must not abort the batch
            outcome.error = ProviderError(
                f"{self.provider_name}: {type(exc).__name__}: {exc}",
                self.provider_name,
                error_type="unknown",
            )
        outcome.elapsed_ms = (time.perf_counter() - started) * 1000
        return outcome
