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
from ..services.reports.tables import TARGET_TABLE
from ..services.run_summary import RunSummary
from .metadata import database_kind, ident, md_list, md_table, measure, root_run_id, table
from .prompts import PROMPT_SETS, missing_credentials, prompt_set

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
        "per_target": table(summary.per_target, TARGET_TABLE),
        "answers_preview": md_table(summary.preview),
        "run_group_id": ident(summary.run_group_id),
    }


def _extra_metadata(context: dg.OpExecutionContext) -> dict:
    return {"dagster_run_id": context.run.run_id, "dagster_root_run_id": root_run_id(context)}


@dg.op(ins={"stored": dg.In(dg.Nothing)}, out=dg.DynamicOut(runs.ShardPlan))
def plan_inference(
    context: dg.OpExecutionContext,
    database: DatabaseResource,
    llm: LLMProvidersResource,
    embedding: EmbeddingResource,
):
    """Start (or pick up) the run of the prompt set: refuse it before any call when a target
    cannot be called here, then cut its items into the set's `shards` and reserve their
    positions. One output per shard."""
    with database.failures("the planning of the inference run"):
        try:
            plan = runs.plan_run(
                database.get_connection(),
                context.partition_key,
                root_run_id(context),
                preflight=lambda ps: missing_credentials(ps, llm, embedding),
            )
        except (LookupError, runs.RunRefused) as exc:
            raise dg.Failure(str(exc)) from None
    pending = sum(shard.pending for shard in plan.shards)
    context.log.info(
        f"run group {plan.run_group_id}: {pending} of {plan.prompt_set.expected_calls} items to "
        f"send in {len(plan.shards)} shard(s)"
    )
    for shard in plan.shards:
        yield dg.DynamicOutput(shard, mapping_key=shard.key)


@dg.op(pool="llm_api", tags={"kind": "llm"})
def send_shard(
    context: dg.OpExecutionContext,
    database: DatabaseResource,
    llm: LLMProvidersResource,
    shard: runs.ShardPlan,
) -> runs.ShardReport:
    """Send the shard's items that have not succeeded yet; each call (success or failure) is
    one raw_calls row in the run's group. Fails when none of its items succeeded, so that
    re-executing from failure sends them again (and only them)."""
    with database.failures("the inference run"):
        report = asyncio.run(
            runs.run_planned_shard(
                database.get_connection(), shard, llm, extra_metadata=_extra_metadata(context)
            )
        )
    context.log.info(
        f"shard {shard.shard + 1}/{shard.shards}: {report.attempted} sent, {report.skipped} "
        f"already done; outcomes {dict(report.outcomes)}"
    )
    if report.unfinished and not report.outcomes.get("success"):
        # Nothing to embed downstream: fail the step, so "re-execute from failure" applies.
        where = f" of shard {shard.shard + 1}/{shard.shards}" if shard.shards > 1 else ""
        raise dg.Failure(
            description=f"none of the {report.expected} items{where} succeeded "
            f"(e.g. {', '.join(report.unfinished_keys[:20])}). " + RETRY_HINT,
            metadata={"items": report.expected, "unfinished": report.unfinished},
        )
    return report


@dg.op(out=dg.Out(dg.Nothing))
def finish_inference(
    context: dg.OpExecutionContext,
    database: DatabaseResource,
    reports: list[runs.ShardReport],
) -> None:
    """The run's calls join the prompt set's group; the run's figures become the asset's
    metadata."""
    with database.failures("the summary of the inference run"):
        result = runs.finish_run(database.get_connection(), reports)
    report = result.report
    context.log.info(
        f"run group {report.run_group_id}: {report.attempted} sent, {report.skipped} already "
        f"done; outcomes {dict(report.outcomes)}"
    )
    if report.unfinished:
        context.log.warning(
            f"{report.unfinished} of {report.expected} items did not succeed; the answers are "
            f"kept and embedded, every_request_captured names the rest. {RETRY_HINT}"
        )
    context.add_output_metadata(
        {
            **run_metadata(result.summary, report.expected),
            "resumed_items_skipped": report.skipped,
            "items_sent": report.attempted,
            "shards": len(reports),
        }
    )


@dg.graph_asset(
    partitions_def=PROMPT_SETS,
    group_name="inference",
    ins={"stored": dg.AssetIn(key=prompt_set.key, dagster_type=dg.Nothing)},
    kinds={"llm", database_kind()},
)
def inference_run(stored):
    """Send every prompt x target x sample through InferenceService; each call (success or
    failure) is one raw_calls row in this run's `run` group. A step plans the run, one step
    per shard (`shards:` in the prompt set, default 1) sends its slice of the items, and a
    last step summarises. The answers that succeeded are materialized (and embedded
    downstream) even when other items failed: those turn the `every_request_captured` check
    red, or fail their shard's step when none of its items succeeded. Re-executing the run
    resumes it: items that already succeeded are not sent again."""
    return finish_inference(plan_inference(stored).map(send_shard).collect())


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS)
def every_request_captured(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """Each expected item (prompt x target x sample) has a captured answer, or a final refusal
    (content filter, bad request). Red (ERROR) when items have no row or still failed after
    their retries; not blocking, so the answers that did succeed are embedded all the same."""
    run = runs.open_run(database.get_connection(), context.partition_key, root_run_id(context))
    items = run.item_outcomes()
    missing, failed = items.counts.get("missing", 0), items.counts.get("unfinished", 0)
    description = (
        f"{items.open} of {run.prompt_set.expected_calls} items have no answer yet "
        f"({missing} never captured, {failed} failed after their retries). " + RETRY_HINT
        if items.open
        else "every item answered or finally refused"
    )
    return dg.AssetCheckResult(
        passed=not items.open,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "expected": run.prompt_set.expected_calls,
            "missing": missing,
            "missing_items": md_list(items.missing_keys, total=missing),
            "failed": failed,
            "failed_items": md_list(items.failed_keys, total=failed),
            "run_group_id": ident(run.group.id),
        },
    )


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS)
def failure_rate(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """WARN when more calls failed than FAILURE_RATE_THRESHOLD (default 5%)."""
    run = runs.open_run(database.get_connection(), context.partition_key, root_run_id(context))
    calls, failed = run.calls, run.failed_calls
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
    call_id = run.totals.first_call_id
    if call_id is None:
        return dg.AssetCheckResult(passed=False, description="the run captured no calls")
    refused, message = probe_append_only(db, call_id)
    return dg.AssetCheckResult(
        passed=refused,
        description=message,
        metadata={"call_id": ident(call_id), "database_said": message},
    )
