"""Embedding a run's answers (the `response_embeddings` asset) and the coverage its checks read,
a page of answers at a time, so a run of any size is embedded in flat memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..db import DatabaseConnection, GroupRepository, RunCallsRepository, VectorStore
from .embeddings import EmbeddingService
from .prompt_sets import PromptSet
from .run_groups import find_run_group, prompt_set_of_run

EMBEDDING_GROUP = "embeddings"
PAGE = 2000  # answers embedded (or looked up) per batch
SAMPLE = 100  # errors and missing call ids a report keeps (the rest are counted)


class Embedders(Protocol):
    """Where the run's embedder comes from (EmbeddingResource is one): the default provider and
    model, overridden by the prompt set's `embed:`."""

    provider: str
    model: str | None

    def create_service(
        self,
        db: DatabaseConnection,
        *,
        provider: str | None = None,
        model: str | None = None,
        **options: Any,
    ) -> EmbeddingService: ...


@dataclass
class EmbeddingReport:
    run_group_id: int
    answers: int
    embedded: int
    cache_hits: int
    api_calls: int
    dimensions: list[int]
    failed: int
    errors: list[dict[str, Any]]  # the first SAMPLE failures
    model: str
    provider: str


def answer_pages(db: DatabaseConnection, run_group_id: int) -> Iterator[list[tuple[int, str]]]:
    """(call id, answer text) of the run's successful calls with a non-empty answer, a page
    at a time in call order."""
    after = 0
    while True:
        with db.read_session() as session:
            page = RunCallsRepository(session).answers_page(run_group_id, after, PAGE)
        if not page:
            return
        after = page[-1][0]
        answers = [(i, t) for i, t in page if isinstance(t, str) and t.strip()]
        if answers:
            yield answers


def _embedder(db: DatabaseConnection, ps: PromptSet, embedders: Embedders) -> EmbeddingService:
    # Truncated to the model's input limit: an answer longer than that is still embedded. An
    # in-process cache of a few pages: answers repeated further apart are found in the
    # database (one query per page), and the memory does not grow with the run.
    return embedders.create_service(
        db,
        provider=ps.embed.provider or embedders.provider,
        model=ps.embed.model or embedders.model,
        truncate=True,
        cache_size=4 * PAGE,
    )


async def embed_run(
    db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None, embedders: Embedders
) -> EmbeddingReport | None:
    """Embed every successful answer of the run (None when the set has `embed: off`). The
    embedding calls join an `embeddings` group named like the run."""
    run = find_run_group(db, prompt_set_name, root_run_id)
    ps = prompt_set_of_run(run)
    if not ps.embed.enabled:
        return None
    async with _embedder(db, ps, embedders) as service:
        with db.session_scope() as session:
            group_id = GroupRepository(session).get_or_create_group(
                EMBEDDING_GROUP,
                run.name,
                description=f"embedding calls for run {run.name}",
                metadata_json={"run_group_id": run.id, "root_run_id": root_run_id},
            )
        return await embed_run_answers(db, run.id, service, group_id)


async def embed_run_answers(
    db: DatabaseConnection, run_group_id: int, service: EmbeddingService, group_id: int
) -> EmbeddingReport:
    calls_before = service.stats["api_calls"]
    answers = embedded = cache_hits = failed = 0
    dimensions: set[int] = set()
    errors: list[dict[str, Any]] = []
    for page in answer_pages(db, run_group_id):
        responses = await service.get_embeddings_batch(
            [text for _, text in page],
            group_id=group_id,
            metadata={"run_group_id": run_group_id},
        )
        answers += len(page)
        for (call_id, _), response in zip(page, responses, strict=True):
            if response.error is not None:
                failed += 1
                if len(errors) < SAMPLE:
                    errors.append({"call_id": call_id, "error": response.error.to_dict()})
                continue
            embedded += 1
            cache_hits += bool(response.cached)
            dimensions.add(response.dimension)
    return EmbeddingReport(
        run_group_id=run_group_id,
        answers=answers,
        embedded=embedded,
        cache_hits=cache_hits,
        api_calls=service.stats["api_calls"] - calls_before,
        dimensions=sorted(dimensions),
        failed=failed,
        errors=errors,
        model=service.model,
        provider=service.provider_name,
    )


@dataclass
class EmbeddingCoverage:
    """Which of a run's answers have a stored embedding (for the embedding checks)."""

    enabled: bool
    answers: int = 0
    missing: int = 0
    missing_call_ids: list[int] = field(default_factory=list)  # the first SAMPLE
    shapes: set[tuple[int, int]] = field(default_factory=set)  # (dimension, vector length)


async def embedding_coverage(
    db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None, embedders: Embedders
) -> EmbeddingCoverage:
    """Answers matched to stored embeddings by the request hash the embedder gives each one
    (hashing needs no call; the service applies the same normalisation and truncation)."""
    run = find_run_group(db, prompt_set_name, root_run_id)
    ps = prompt_set_of_run(run)
    if not ps.embed.enabled:
        return EmbeddingCoverage(enabled=False)
    coverage = EmbeddingCoverage(enabled=True)
    async with _embedder(db, ps, embedders) as service:
        for page in answer_pages(db, run.id):
            hashes = service.request_hashes([text for _, text in page])
            with db.read_session() as session:
                stored = VectorStore(session).embeddings_by_hash([h for h in hashes if h])
            coverage.answers += len(page)
            for (call_id, _), request_hash in zip(page, hashes, strict=True):
                if request_hash not in stored:
                    coverage.missing += 1
                    if len(coverage.missing_call_ids) < SAMPLE:
                        coverage.missing_call_ids.append(call_id)
            for embedding in stored.values():
                coverage.shapes.add((embedding.dimension, len(embedding.vector)))
    return coverage
