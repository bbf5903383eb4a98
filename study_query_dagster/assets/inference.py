"""`inference_run`: every prompt x target x sample of a prompt set, captured in raw_calls and
grouped as a `run`; with the checks that guard what the run left in the database."""

import asyncio

import dagster as dg

from ..config import get_settings
from ..db import probe_append_only
from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..resources.providers import LLMProvidersResource
from ..services import runs
from ..services.run_summary import RunSummary
from .metadata import md_list, md_table, root_run_id, rounded
from .prompts import PROMPT_SETS, missing_credentials, prompt_set


def run_metadata(summary: RunSummary, expected: int) -> dict:
    per_target = [
        {
            "provider": s["provider"],
            "model": s["model"],
            "calls": s["calls"],
            "success_rate": rounded(s["success_rate"]),
            "p50_ms": rounded(s["p50_latency_ms"], 1),
            "p95_ms": rounded(s["p95_latency_ms"], 1),
            "tokens": s["total_tokens"],
        }
        for s in summary.per_target
    ]
    return {
        "dagster/row_count": summary.calls,
        "expected_items": expected,
        "calls": summary.calls,
        "successes": summary.successes,
        "failures": summary.calls - summary.successes,
        "failures_by_type": dg.MetadataValue.json(summary.failures_by_type),
        "success_rate": round(summary.successes / summary.calls, 4) if summary.calls else 0.0,
        "latency_p50_ms": summary.latency_p50_ms,
        "latency_p95_ms": summary.latency_p95_ms,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
        "estimated_cost_usd": summary.cost_usd,
        "unpriced_calls": summary.unpriced_calls,
        "per_target": md_table(per_target),
        "answers_preview": md_table(summary.preview),
        "run_group_id": summary.run_group_id,
    }


@dg.asset(
    partitions_def=PROMPT_SETS,
    group_name="inference",
    deps=[prompt_set],
    pool="llm_api",
    kinds={"openai"},
)
def inference_run(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    llm: LLMProvidersResource,
    embedding: EmbeddingResource,
) -> dg.MaterializeResult:
    """Send every prompt x target x sample through InferenceService; each call (success or
    failure) is one raw_calls row in this run's `run` group. Re-executing a failed run resumes:
    items that already succeeded are not sent again."""
    root = root_run_id(context)
    with database.failures("the inference run"):
        try:
            result = asyncio.run(
                runs.start_or_resume_run(
                    database.get_connection(),
                    context.partition_key,
                    root,
                    llm,
                    preflight=lambda ps: missing_credentials(ps, llm, embedding),
                    extra_metadata={
                        "dagster_run_id": context.run.run_id,
                        "dagster_root_run_id": root,
                    },
                )
            )
        except (LookupError, runs.RunRefused) as exc:
            raise dg.Failure(str(exc)) from None
    report = result.report
    context.log.info(
        f"run group {report.run_group_id}: {report.attempted} sent, {report.skipped} already "
        f"done; outcomes {dict(report.outcomes)}"
    )
    metadata = {
        **run_metadata(result.summary, report.expected),
        "resumed_items_skipped": report.skipped,
        "items_sent": report.attempted,
    }
    if report.unfinished_keys:
        shown = ", ".join(report.unfinished_keys[:20])
        raise dg.Failure(
            description=(
                f"{len(report.unfinished_keys)} of {report.expected} items did not succeed "
                f"(e.g. {shown}). Re-execute this run from failure to retry only those; "
                "successful calls are not repeated."
            ),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS, blocking=True)
def every_request_captured(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """Each expected item (prompt x target x sample) has a raw_calls row in the run."""
    run = runs.open_run(database.get_connection(), context.partition_key, root_run_id(context))
    missing = run.missing_items
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "expected": run.prompt_set.expected_calls,
            "missing": len(missing),
            "missing_items": md_list(missing),
            "run_group_id": run.group.id,
        },
    )


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS)
def failure_rate(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """WARN when more calls failed than FAILURE_RATE_THRESHOLD (default 5%)."""
    run = runs.open_run(database.get_connection(), context.partition_key, root_run_id(context))
    calls, failed = len(run.state.calls), run.failed_calls
    rate = failed / calls if calls else 0.0
    threshold = get_settings().failure_rate_threshold
    return dg.AssetCheckResult(
        passed=rate <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{failed} of {calls} calls failed ({rate:.1%}; threshold {threshold:.1%})",
        metadata={"failure_rate": rate, "threshold": threshold, "failed": failed, "calls": calls},
    )


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS)
def raw_calls_are_immutable(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """The database itself refuses to UPDATE a captured call (tried inside a savepoint that is
    rolled back, so nothing changes either way)."""
    db = database.get_connection()
    run = runs.open_run(db, context.partition_key, root_run_id(context))
    if not run.state.calls:
        return dg.AssetCheckResult(passed=False, description="the run captured no calls")
    call_id = run.state.calls[0].id
    refused, message = probe_append_only(db, call_id)
    return dg.AssetCheckResult(
        passed=refused,
        description=message,
        metadata={"call_id": call_id, "database_said": message},
    )
