"""`response_embeddings`: the run's successful answers embedded through EmbeddingService (a
deterministic cache: an answer already embedded with the same model costs no call)."""

import asyncio

import dagster as dg

from ..db import GroupRepository
from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..services.study_runs import (
    EMBEDDING_GROUP,
    answer_embeddings,
    embed_run_answers,
    run_prompt_set,
    successful_answers,
)
from .inference import _run_group_for_check, inference_run, root_run_id
from .prompts import PROMPT_SETS


def embedding_target(ps, embedding: EmbeddingResource) -> tuple[str, str | None]:
    return ps.embed.provider or embedding.provider, ps.embed.model or embedding.model


@dg.asset(
    partitions_def=PROMPT_SETS,
    group_name="embeddings",
    deps=[inference_run],
    pool="llm_api",
    kinds={"numpy"},
)
def response_embeddings(
    context: dg.AssetExecutionContext, database: DatabaseResource, embedding: EmbeddingResource
) -> dg.MaterializeResult:
    """Embeds every successful answer of the prompt set's run (skipped when the set has
    `embed: off`). Vectors are cached by request hash, so re-runs and repeated answers are free."""
    with database.failures("the embedding of the run's answers"):
        return _embed_answers(context, database, embedding)


def _embed_answers(context, database, embedding) -> dg.MaterializeResult:
    db = database.get_connection()
    run_group = _run_group_for_check(context, db)
    ps = run_prompt_set(run_group)
    if not ps.embed.enabled:
        return dg.MaterializeResult(metadata={"embedded": 0, "note": "embed is off for this set"})
    provider, model = embedding_target(ps, embedding)

    async def embed():
        async with embedding.create_service(db, provider=provider, model=model,
                                            truncate=True) as service:  # fmt: skip
            with db.session_scope() as session:
                group_id = GroupRepository(session).get_or_create_group(
                    EMBEDDING_GROUP, run_group.name,
                    description=f"embedding calls for run {run_group.name}",
                    metadata_json={"run_group_id": run_group.id, "root_run_id": root_run_id(context)},
                )  # fmt: skip
            return await embed_run_answers(db, run_group.id, service, group_id)

    report = asyncio.run(embed())
    metadata = {
        "dagster/row_count": report.embedded,
        "answers": report.answers,
        "embedded": report.embedded,
        "cache_hits": report.cache_hits,
        "api_calls": report.api_calls,
        "dimension": report.dimensions[0]
        if len(report.dimensions) == 1
        else str(report.dimensions),
        "provider": report.provider,
        "model": report.model,
        "errors": len(report.errors),
        "run_group_id": run_group.id,
    }
    if report.errors:
        raise dg.Failure(
            description=f"{len(report.errors)} of {report.answers} answers could not be embedded: "
            + "; ".join(e["error"]["message"] for e in report.errors[:5]),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _stored_embeddings(context, database: DatabaseResource, embedding: EmbeddingResource):
    """(prompt set, answers, call ids without embedding, stored embeddings) for the run."""
    db = database.get_connection()
    run_group = _run_group_for_check(context, db)
    ps = run_prompt_set(run_group)
    if not ps.embed.enabled:
        return ps, 0, [], {}
    provider, model = embedding_target(ps, embedding)
    # Hashing needs no call; the service applies the same normalisation and truncation.
    service = embedding.create_service(db, provider=provider, model=model, truncate=True)
    try:
        missing, stored = answer_embeddings(db, run_group.id, service)
    finally:
        asyncio.run(service.aclose())
    return ps, len(successful_answers(db, run_group.id)), missing, stored


@dg.asset_check(asset=response_embeddings, partitions_def=PROMPT_SETS)
def every_response_embedded(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, embedding: EmbeddingResource
):
    """Every successful answer of the run has a stored embedding (looked up by request hash)."""
    ps, answers, missing, _ = _stored_embeddings(context, database, embedding)
    if not ps.embed.enabled:
        return dg.AssetCheckResult(passed=True, description="embed is off for this set")
    return dg.AssetCheckResult(
        passed=not missing,
        description=f"{answers - len(missing)} of {answers} answers embedded",
        metadata={
            "answers": answers,
            "missing": len(missing),
            "missing_call_ids": dg.MetadataValue.json(missing[:100]),
        },  # fmt: skip
    )


@dg.asset_check(asset=response_embeddings, partitions_def=PROMPT_SETS)
def embedding_dimensions_consistent(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, embedding: EmbeddingResource
):
    """The run's answer vectors all have one dimension, and each matches its stored vector."""
    ps, _, _, stored = _stored_embeddings(context, database, embedding)
    if not ps.embed.enabled:
        return dg.AssetCheckResult(passed=True, description="embed is off for this set")
    shapes = {(e.dimension, len(e.vector)) for e in stored.values()}
    dimensions = sorted({d for d, _ in shapes})
    mismatched = sorted(f"{d}!={n}" for d, n in shapes if d != n)
    return dg.AssetCheckResult(
        passed=len(dimensions) <= 1 and not mismatched,
        description=f"dimensions {dimensions}"
        + (f"; mismatched {mismatched}" if mismatched else ""),
        metadata={"dimensions": str(dimensions), "vectors": len(stored)},
    )
