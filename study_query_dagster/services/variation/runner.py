"""The entry points the variation assets and checks call: find the prompt set's run, build the
embedder its `embed:` names (when on) and the judge its `variation.judge` names (when a
strategy or correctness needs one), run one computation, close what was opened.

    report = measure(db, "capitals", root_run_id, embedders, VariationService.dispersion, llm)
    report = cluster_answers(db, "capitals", root_run_id, embedders, llm)

A judge or summary target whose credentials are missing stops the step before any call, naming
the variables to set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol, TypeVar

from ...db import DatabaseConnection
from ..inference import InferenceService
from ..prompt_sets.variation import ModelTarget
from ..runs import Embedders, find_run_group
from .answer_clusters import SUMMARY_GROUP, AnswerClusterService, ClustersReport, ClusterSummarizer
from .checks import VariationChecks
from .embedder import EmbeddingServiceEmbedder
from .judge import ENTAILMENT_GROUP, InferenceJudge
from .scope import RunScope, run_scope
from .service import VariationService
from .strategies import strategy_for_config

R = TypeVar("R")


class ChatModels(Protocol):
    """Where judge and summary services come from (LLMProvidersResource is one)."""

    def missing_env_vars(self, provider: str) -> list[str]: ...

    def create_service(
        self, provider: str, model: str, db: DatabaseConnection | None, limits=None
    ) -> InferenceService: ...


class ModelUnavailable(ValueError):
    """A judge or summary model cannot be called here; nothing was sent."""


def needs_judge(scope: RunScope) -> bool:
    config = scope.config
    return config.strategy == "entailment" or config.correctness == "judge"


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


async def _chat_service(
    stack: AsyncExitStack,
    db: DatabaseConnection,
    scope: RunScope,
    chat: ChatModels,
    target: ModelTarget,
    role: str,
) -> InferenceService:
    missing = chat.missing_env_vars(target.provider)
    if missing:
        raise ModelUnavailable(
            f"prompt set {scope.prompt_set_name!r}: {role} ({target.provider}) is not "
            f"configured: set {', '.join(missing)}"
        )
    return await stack.enter_async_context(
        chat.create_service(target.provider, target.model_name, db)
    )


async def _judge(stack, db, scope: RunScope, chat, strategy_key: str) -> InferenceJudge | None:
    """The run's judge: its calls go to the `entailment` group `<run>/<strategy key>`. None
    when the set needs none, or the step was given no chat models (it asks no judge)."""
    if not needs_judge(scope) or chat is None:
        return None
    target = scope.config.judge
    service = await _chat_service(stack, db, scope, chat, target, "variation.judge")
    group_id = await service.named_group(ENTAILMENT_GROUP, f"{scope.name}/{strategy_key}")
    return InferenceJudge(
        service,
        target.params.as_dict(),
        group_id=group_id,
        metadata={"prompt_set": scope.prompt_set_name, "run": scope.name},
    )


@asynccontextmanager
async def opened(
    db, prompt_set_name, root_run_id, embedders, chat
) -> AsyncIterator[tuple[VariationService, RunScope]]:
    """A `VariationService` for the run (its embedder and judge open until the block ends)."""
    scope = run_scope(find_run_group(db, prompt_set_name, root_run_id))
    async with AsyncExitStack() as stack:
        service = _embedding_service(db, scope, embedders)
        if service is not None:
            stack.push_async_callback(service.aclose)
        embedder = EmbeddingServiceEmbedder(service) if service is not None else None
        key = strategy_for_config(scope.config, embedder=embedder).key
        judge = await _judge(stack, db, scope, chat, key)
        yield VariationService.for_config(db, scope.config, embedder, judge), scope


def measure(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str | None,
    embedders: Embedders | None,
    step: Callable[[VariationService, RunScope], Awaitable[R]],
    chat: ChatModels | None = None,
) -> R:
    """Run one computation (`VariationService.equivalence_classes`, `.dispersion`,
    `.agreement`, `.drift` or `.calibration`) on the run of this root run id (else the set's
    newest run). `chat` supplies the judge when the set's variation block names one."""

    async def run() -> R:
        async with opened(db, prompt_set_name, root_run_id, embedders, chat) as (service, scope):
            return await step(service, scope)

    return asyncio.run(run())


def cluster_answers(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str | None,
    embedders: Embedders | None,
    chat: ChatModels | None = None,
) -> ClustersReport | str:
    """Cluster the answers of the run (and the runs before it, per `clusters.window`); a
    sentence saying why not when the set has `embed: off` or `clusters: {enabled: false}`."""
    scope = run_scope(find_run_group(db, prompt_set_name, root_run_id))
    config = scope.config.clusters
    if not config.enabled:
        return "clusters are off for this set (variation.clusters.enabled: false)"
    if not scope.prompt_set.embed.enabled:
        return "answers are clustered in embedding space: this set has embed: off"

    async def run() -> ClustersReport:
        async with AsyncExitStack() as stack:
            service = _embedding_service(db, scope, embedders)
            if service is None:
                raise ModelUnavailable("answer clusters need an embedder")
            stack.push_async_callback(service.aclose)
            embedder = EmbeddingServiceEmbedder(service)
            summarizer = None
            clusters = AnswerClusterService(db, embedder, config)
            if config.summary is not None:
                if chat is None:
                    raise ModelUnavailable("a cluster summary needs chat models (the llm resource)")
                chat_service = await _chat_service(
                    stack, db, scope, chat, config.summary, "variation.clusters.summary"
                )
                group_id = await chat_service.named_group(
                    SUMMARY_GROUP, f"{scope.name}/{clusters.key}"
                )
                summarizer = ClusterSummarizer(
                    chat_service, config.summary.params.as_dict(), group_id
                )
                clusters.summarizer = summarizer
            return await clusters.cluster(scope)

    return asyncio.run(run())


def open_checks(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str | None,
    embedders: Embedders | None,
) -> VariationChecks:
    """The checks of the run, reading the results of the strategy its prompt set configures."""
    scope = run_scope(find_run_group(db, prompt_set_name, root_run_id))
    service = _embedding_service(db, scope, embedders)
    try:
        embedder = EmbeddingServiceEmbedder(service) if service is not None else None
        key = strategy_for_config(scope.config, embedder=embedder).key
        return VariationChecks(db, scope, key)
    finally:
        if service is not None:
            asyncio.run(service.aclose())
