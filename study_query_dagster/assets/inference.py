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
from .metadata import database_kind, ident, md_list, md_table, measure, root_run_id, table
from .prompts import PROMPT_SETS, missing_credentials, prompt_set

TARGET_COLUMNS = ["target", "provider", "model", "params", "calls", "success_rate",
                  "p50_latency_ms", "p95_latency_ms", "total_tokens", "estimated_cost_usd"]  # fmt: skip
RETRY_HINT = "Re-execute this run to send only those; successful calls are not repeated."


def run_metadata(summary: RunSummary, expected: int) -> dict:
    return {
        "dagster/row_count": summary.calls,
        "expected_items": expected,
        "calls": summary.calls,
        "successes": summary.successes,
        "failures": summary.calls - summary.successes,
        "failures_by_type": dg.MetadataValue.json(summary.failures_by_type),
        "success_rate": round(summary.successes / summary.calls, 4) if summary.calls else 0.0,
        "latency_p50_ms": measure(summary.latency_p50_ms),
        "latency_p95_ms": measure(summary.latency_p95_ms),
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
        "estimated_cost_usd": summary.cost_usd,
        "unpriced_calls": summary.unpriced_calls,
        "per_target": table(summary.per_target, TARGET_COLUMNS),
        "answers_preview": md_table(summary.preview),
        "run_group_id": ident(summary.run_group_id),
    }


@dg.asset(
    partitions_def=PROMPT_SETS,
    group_name="inference",
    deps=[prompt_set],
    pool="llm_api",
    kinds={"llm", database_kind()},
)
def inference_run(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    llm: LLMProvidersResource,
    embedding: EmbeddingResource,
) -> dg.MaterializeResult:
    """Send every prompt x target x sample through InferenceService; each call (success or
    failure) is one raw_calls row in this run's `run` group. The answers that succeeded are
    materialized (and embedded downstream) even when other items failed: those turn the
    `every_request_captured` check red, or fail the step when nothing succeeded. Re-executing
    the run resumes it: items that already succeeded are not sent again."""
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
    if report.unfinished_keys and not report.outcomes.get("success"):
        # Nothing to embed downstream: fail the step, so "re-execute from failure" applies.
        raise dg.Failure(
            description=f"none of the {report.expected} items succeeded "
            f"(e.g. {', '.join(report.unfinished_keys[:20])}). {RETRY_HINT}",
            metadata=metadata,
        )
    if report.unfinished_keys:
        context.log.warning(
            f"{len(report.unfinished_keys)} of {report.expected} items did not succeed; the "
            f"answers are kept and embedded, every_request_captured names the rest. {RETRY_HINT}"
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS)
def every_request_captured(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """Each expected item (prompt x target x sample) has a captured answer, or a final refusal
    (content filter, bad request). Red (ERROR) when items have no row or still failed after
    their retries; not blocking, so the answers that did succeed are embedded all the same."""
    run = runs.open_run(database.get_connection(), context.partition_key, root_run_id(context))
    missing, unfinished = run.missing_items, run.unfinished_items
    failed = [key for key in unfinished if key not in set(missing)]
    description = (
        f"{len(unfinished)} of {run.prompt_set.expected_calls} items have no answer yet "
        f"({len(missing)} never captured, {len(failed)} failed after their retries). " + RETRY_HINT
        if unfinished
        else "every item answered or finally refused"
    )
    return dg.AssetCheckResult(
        passed=not unfinished,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "expected": run.prompt_set.expected_calls,
            "missing": len(missing),
            "missing_items": md_list(missing),
            "failed": len(failed),
            "failed_items": md_list(failed),
            "run_group_id": ident(run.group.id),
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
        metadata={"call_id": ident(call_id), "database_said": message},
    )
