"""`inference_run`: every prompt x target x sample of a prompt set, captured in raw_calls and
grouped as a `run`; with the checks that guard what the run left in the database."""

import asyncio

import dagster as dg

from ..config import get_settings
from ..db import GroupRepository, probe_append_only
from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..resources.providers import LLMProvidersResource
from ..services.formatting import markdown_table
from ..services.rate_limits import ProviderLimits
from ..services.study_runs import (
    RUN_GROUP,
    RunSummary,
    execute_prompt_set,
    find_run_group,
    load_item_state,
    missing_items,
    run_group_name,
    run_prompt_set,
    summarize_run,
)
from .prompts import PROMPT_SETS, load_stored_prompt_set, missing_credentials, prompt_set


def root_run_id(context) -> str:
    # A re-execution (from failure or of the whole run) keeps the original run as its root.
    return context.run.root_run_id or context.run.run_id


def run_metadata(summary: RunSummary, expected: int) -> dict:
    success = summary.by_status.get("success", 0)
    per_target = [
        {
            "provider": s["provider"], "model": s["model"], "calls": s["calls"],
            "success_rate": round(s["success_rate"], 3) if s["success_rate"] is not None else None,
            "p50_ms": round(s["p50_latency_ms"], 1) if s["p50_latency_ms"] is not None else None,
            "p95_ms": round(s["p95_latency_ms"], 1) if s["p95_latency_ms"] is not None else None,
            "tokens": s["total_tokens"],
        }
        for s in summary.per_target
    ]  # fmt: skip
    return {
        "dagster/row_count": summary.calls,
        "expected_items": expected,
        "calls": summary.calls,
        "successes": success,
        "failures": summary.calls - success,
        "failures_by_type": dg.MetadataValue.json(summary.failures_by_type),
        "success_rate": round(success / summary.calls, 4) if summary.calls else 0.0,
        "latency_p50_ms": summary.latency_p50_ms,
        "latency_p95_ms": summary.latency_p95_ms,
        "prompt_tokens": summary.prompt_tokens,
        "completion_tokens": summary.completion_tokens,
        "total_tokens": summary.total_tokens,
        "estimated_cost_usd": summary.cost_usd,
        "unpriced_calls": summary.unpriced_calls,
        "per_target": dg.MetadataValue.md(markdown_table(per_target)),
        "answers_preview": dg.MetadataValue.md(markdown_table(summary.preview)),
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
    with database.failures("the inference run"):
        return _run_prompt_set(context, database, llm, embedding)


def _run_prompt_set(context, database, llm, embedding) -> dg.MaterializeResult:
    name = context.partition_key
    db = database.get_connection()
    prompt_set_group_id, stored, content_hash = load_stored_prompt_set(db, name)
    root = root_run_id(context)
    group_name = run_group_name(name, root)
    with db.session_scope() as session:
        existing = GroupRepository(session).find_group(RUN_GROUP, group_name)
    # A re-execution finishes the version its run started with, even if the file changed since.
    ps = run_prompt_set(existing) if existing is not None else stored
    problems = missing_credentials(ps, llm, embedding)
    if problems:  # before any call: nothing is sent, nothing is written
        raise dg.Failure(f"prompt set {name!r} cannot run here: " + "; ".join(problems))
    if existing is not None:
        run_group_id = existing.id
    else:
        with db.session_scope() as session:
            run_group_id = GroupRepository(session).get_or_create_group(
                RUN_GROUP,
                group_name,
                description=f"Dagster run {root} of prompt set {name}",
                metadata_json={
                    "prompt_set": name, "content_hash": content_hash, "root_run_id": root,
                    "prompt_set_group_id": prompt_set_group_id,
                    "content": stored.model_dump(mode="json", exclude_defaults=True),
                },
            )  # fmt: skip

    # Targets calling the same provider share its concurrency and RPM/TPM limits.
    limits: dict[str, ProviderLimits] = {}

    def make_service(provider: str, model: str):
        shared = limits.setdefault(provider, llm.provider_limits(provider))
        return llm.create_service(provider, model, db, limits=shared)

    report = asyncio.run(
        execute_prompt_set(
            db,
            ps,
            run_group_id=run_group_id,
            prompt_set_group_id=prompt_set_group_id,
            make_service=make_service,
            extra_metadata={"dagster_run_id": context.run.run_id, "dagster_root_run_id": root},
        )
    )
    context.log.info(
        f"run group {run_group_id}: {report.attempted} sent, {report.skipped} already done; "
        f"outcomes {dict(report.outcomes)}"
    )
    metadata = {
        **run_metadata(summarize_run(db, run_group_id), report.expected),
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


def _run_group_for_check(context, db):
    return find_run_group(db, context.partition_key, root_run_id(context))


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS, blocking=True)
def every_request_captured(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """Each expected item (prompt x target x sample) has a raw_calls row in the run."""
    db = database.get_connection()
    group = _run_group_for_check(context, db)
    ps = run_prompt_set(group)
    missing = missing_items(db, ps, group.id)
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={
            "expected": ps.expected_calls,
            "missing": len(missing),
            "missing_items": dg.MetadataValue.md(
                "\n".join(f"- {k}" for k in missing[:50]) or "none"
            ),
            "run_group_id": group.id,
        },
    )


@dg.asset_check(asset=inference_run, partitions_def=PROMPT_SETS)
def failure_rate(context: dg.AssetCheckExecutionContext, database: DatabaseResource):
    """WARN when more calls failed than FAILURE_RATE_THRESHOLD (default 5%)."""
    db = database.get_connection()
    group = _run_group_for_check(context, db)
    state = load_item_state(db, group.id)
    calls = len(state.calls)
    failed = sum(1 for c in state.calls if c.status != "success")
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
    group = _run_group_for_check(context, db)
    state = load_item_state(db, group.id)
    if not state.calls:
        return dg.AssetCheckResult(passed=False, description="the run captured no calls")
    call_id = state.calls[0].id
    refused, message = probe_append_only(db, call_id)
    return dg.AssetCheckResult(
        passed=refused,
        description=message,
        metadata={"call_id": call_id, "database_said": message},
    )
