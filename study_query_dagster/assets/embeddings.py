"""`response_embeddings`: the run's successful answers embedded through EmbeddingService (a
deterministic cache: an answer already embedded with the same model costs no call)."""

import asyncio

import dagster as dg

from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..services import runs
from .inference import inference_run
from .metadata import ident, root_run_id
from .prompts import PROMPT_SETS


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
        report = asyncio.run(
            runs.embed_run(
                database.get_connection(), context.partition_key, root_run_id(context), embedding
            )
        )
    if report is None:
        return dg.MaterializeResult(metadata={"embedded": 0, "note": "embed is off for this set"})
    dimension = report.dimensions[0] if len(report.dimensions) == 1 else str(report.dimensions)
    metadata = {
        "dagster/row_count": report.embedded,
        "answers": report.answers,
        "embedded": report.embedded,
        "cache_hits": report.cache_hits,
        "api_calls": report.api_calls,
        "dimension": dimension,
        "provider": report.provider,
        "model": report.model,
        "errors": report.failed,
        "run_group_id": ident(report.run_group_id),
    }
    if report.failed:
        raise dg.Failure(
            description=f"{report.failed} of {report.answers} answers could not be embedded: "
            + "; ".join(e["error"]["message"] for e in report.errors[:5]),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def _coverage(context, database: DatabaseResource, embedding: EmbeddingResource):
    return asyncio.run(
        runs.embedding_coverage(
            database.get_connection(), context.partition_key, root_run_id(context), embedding
        )
    )


@dg.asset_check(asset=response_embeddings, partitions_def=PROMPT_SETS)
def every_response_embedded(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, embedding: EmbeddingResource
):
    """Every successful answer of the run has a stored embedding (looked up by request hash)."""
    coverage = _coverage(context, database, embedding)
    if not coverage.enabled:
        return dg.AssetCheckResult(passed=True, description="embed is off for this set")
    return dg.AssetCheckResult(
        passed=not coverage.missing,
        description=f"{coverage.answers - coverage.missing} of {coverage.answers} answers embedded",
        metadata={
            "answers": coverage.answers,
            "missing": coverage.missing,
            "missing_call_ids": dg.MetadataValue.json(coverage.missing_call_ids[:100]),
        },
    )


@dg.asset_check(asset=response_embeddings, partitions_def=PROMPT_SETS)
def embedding_dimensions_consistent(
    context: dg.AssetCheckExecutionContext, database: DatabaseResource, embedding: EmbeddingResource
):
    """The run's answer vectors all have one dimension, and each matches its stored vector."""
    coverage = _coverage(context, database, embedding)
    if not coverage.enabled:
        return dg.AssetCheckResult(passed=True, description="embed is off for this set")
    shapes = coverage.shapes
    dimensions = sorted({d for d, _ in shapes})
    mismatched = sorted(f"{d}!={n}" for d, n in shapes if d != n)
    description = f"dimensions {dimensions}" + (f"; mismatched {mismatched}" if mismatched else "")
    return dg.AssetCheckResult(
        passed=len(dimensions) <= 1 and not mismatched,
        description=description,
        metadata={"dimensions": str(dimensions), "vectors": coverage.answers - coverage.missing},
    )
