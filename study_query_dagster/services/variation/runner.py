"""The entry points the variation assets and checks call: find the prompt set's run, build the
embedder its `embed:` names (when on), run one computation, close what was opened.

    report = measure(db, "capitals", root_run_id, embedders, VariationService.dispersion)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from ...db import DatabaseConnection
from ..runs import Embedders, find_run_group
from .checks import VariationChecks
from .embedder import EmbeddingServiceEmbedder
from .scope import RunScope, run_scope
from .service import VariationService
from .strategies import build_strategy

R = TypeVar("R")


def _embedding_service(db: DatabaseConnection, scope: RunScope, embedders: Embedders | None):
    embed = scope.prompt_set.embed
    if embedders is None or not embed.enabled:
        return None
    # The same provider, model and truncation as response_embeddings: the same cache entries.
    return embedders.create_service(
        db,
        provider=embed.provider or embedders.provider,
        model=embed.model or embedders.model,
        truncate=True,
    )


@asynccontextmanager
async def _opened(db, prompt_set_name, root_run_id, embedders):
    scope = run_scope(find_run_group(db, prompt_set_name, root_run_id))
    service = _embedding_service(db, scope, embedders)
    embedder = EmbeddingServiceEmbedder(service) if service is not None else None
    try:
        yield VariationService.for_config(db, scope.config, embedder), scope
    finally:
        if service is not None:
            await service.aclose()


def measure(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str | None,
    embedders: Embedders | None,
    step: Callable[[VariationService, RunScope], Awaitable[R]],
) -> R:
    """Run one computation (`VariationService.equivalence_classes`, `.dispersion`,
    `.agreement` or `.drift`) on the run of this root run id (else the set's newest run)."""

    async def run() -> R:
        async with _opened(db, prompt_set_name, root_run_id, embedders) as (service, scope):
            return await step(service, scope)

    return asyncio.run(run())


def open_checks(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str | None,
    embedders: Embedders | None,
) -> VariationChecks:
    """The checks of the run, reading the results of the strategy its prompt set configures."""
    scope = run_scope(find_run_group(db, prompt_set_name, root_run_id))
    config = scope.config
    service = _embedding_service(db, scope, embedders)
    try:
        embedder = EmbeddingServiceEmbedder(service) if service is not None else None
        strategy = build_strategy(
            config.strategy, embedder=embedder, threshold=config.effective_threshold
        )
        return VariationChecks(db, scope, strategy.key)
    finally:
        if service is not None:
            asyncio.run(service.aclose())
