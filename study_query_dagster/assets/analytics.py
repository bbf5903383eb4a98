"""Analytics over every captured call, all prompt sets together (group `analytics`): tables and
charts in each materialization's metadata, numbers Dagster plots across materializations, and
CSV exports (the latest table of each view). They refresh by themselves after new inference
runs (declarative automation), after migrations and after failed runs (sensors). Per-set
results of each run are the `study_results` asset (assets/results.py)."""

import dagster as dg
import pandas as pd
from pydantic import Field

from ..db import RunFailureRepository
from ..resources.database import DatabaseResource
from ..resources.exports import ExportsResource
from ..services import formatting
from ..services.charts import (
    charts_markdown,
    cost_chart,
    latency_chart,
    model_labels,
    outcomes_chart,
    recent_latency_chart,
    time_series_charts,
)
from ..services.study import RECENT_COLUMNS, SEARCH_COLUMNS, StudyService
from .inference import inference_run
from .metadata import ident, measure, table

AC = dg.AutomationCondition

# Once when the asset is new, so the UI is never empty; then whenever an upstream asset (an
# inference run of any prompt set) was updated after this asset was last requested, once
# nothing upstream or here is running. The latch is reset by a request, and only when nothing
# was updated since that request's tick: an update that lands while a refresh is already
# running is not swallowed by it. (Dagster's `since_last_handled` also resets on the asset's
# own materialization, which loses exactly that update.) `newly_missing` fires once, so a
# refresh that fails is not relaunched until the next update. Migrations and failed runs,
# which materialize no inference_run, request a refresh through sensors (automation.py): as
# an upstream asset, migrated_raw_calls would make the UI ask "Are you sure?" before every
# manual refresh wherever no legacy database was ever migrated.
REFRESH = (
    (
        AC.newly_missing()
        | AC.any_deps_updated().since(AC.newly_requested() & ~AC.any_deps_updated())
    )
    & ~AC.in_progress()
    & ~AC.any_deps_in_progress()
).with_label("after new calls")

ANALYTICS = dict(
    group_name="analytics",
    deps=[inference_run],
    automation_condition=REFRESH,
    kinds={"pandas"},
)

# What the tables show of each row; the CSV keeps every column.
SHOWN_FIGURES = [
    "calls",
    "success_rate",
    "p50_latency_ms",
    "p95_latency_ms",
    "avg_tokens",
    "estimated_cost_usd",
    "cost_status",
]
MODEL_COLUMNS = ["provider", "model", *SHOWN_FIGURES]
TARGET_COLUMNS = ["prompt_set", "target", "provider", "model", "params", *SHOWN_FIGURES]
NO_FAILED_RUNS = "_no failed runs recorded_"


def records(frame: pd.DataFrame) -> list[dict]:
    """Frame rows as dicts with None for missing values (pandas gives NaN/NaT)."""
    return [
        {k: (None if not isinstance(v, list | dict) and pd.isna(v) else v) for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


@dg.asset(**ANALYTICS)
def provider_comparison(
    context: dg.AssetExecutionContext, database: DatabaseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    """All prompt sets together: per target (each prompt set's target label, with provider,
    model and parameters) and per provider and model — calls, success rate, latency p50/p95,
    tokens and estimated cost (empty where a model has no price) — with latency and cost
    charts per model."""
    study = StudyService(database.get_connection())
    frame = study.get_provider_comparison()
    targets = study.get_target_comparison(per_prompt_set=True)
    path = exports.write_csv("provider_comparison", frame)
    target_path = exports.write_csv("target_comparison", targets)
    total_calls = int(frame["calls"].sum()) if not frame.empty else 0
    successes = int(frame["success"].sum()) if not frame.empty else 0
    costs = frame["estimated_cost_usd"].dropna()
    labels = model_labels(frame)
    charts = [
        latency_chart(labels, frame["p50_latency_ms"], frame["p95_latency_ms"], per="model"),
        cost_chart(labels, frame["estimated_cost_usd"], per="model"),
    ]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "per_target": table(records(targets), TARGET_COLUMNS),
            "per_model": table(records(frame), MODEL_COLUMNS),
            "charts": dg.MetadataValue.md(charts_markdown(charts)),
            "targets": len(targets),
            "models": len(frame),
            "calls": total_calls,
            "success_rate": measure(successes / total_calls) if total_calls else None,
            "worst_p95_latency_ms": measure(frame["p95_latency_ms"].max()) if len(frame) else None,
            "estimated_cost_usd": measure(costs.sum()) if len(costs) else None,
            "models_without_price": int((frame["cost_status"] == "unknown").sum()),
            "csv": dg.MetadataValue.path(str(path)),
            "targets_csv": dg.MetadataValue.path(str(target_path)),
        }
    )


class TimeSeriesConfig(dg.Config):
    granularity: str = Field("day", description="day | hour | minute")


SERIES_COLUMNS = [
    "bucket",
    "provider",
    "calls",
    "failures",
    "total_tokens",
    "avg_latency_ms",
    "p95_latency_ms",
]


@dg.asset(**ANALYTICS)
def usage_time_series(
    context: dg.AssetExecutionContext,
    config: TimeSeriesConfig,
    database: DatabaseResource,
    exports: ExportsResource,
) -> dg.MaterializeResult:
    """Calls, failures, tokens and latency per provider over time, with line charts."""
    frame = StudyService(database.get_connection()).get_time_series_data(
        config.granularity, metric=SERIES_COLUMNS[2:]
    )
    path = exports.write_csv(f"usage_time_series_{config.granularity}", frame)
    latest = frame[frame["bucket"] == frame["bucket"].max()] if not frame.empty else frame
    charts = time_series_charts(frame, ["calls", "failures", "p95_latency_ms"], config.granularity)
    shown = frame.sort_values("bucket", ascending=False).assign(
        bucket=lambda f: f["bucket"].dt.strftime("%Y-%m-%d %H:%M UTC")
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "charts": dg.MetadataValue.md(charts_markdown(charts)),
            "table": table(records(shown), SERIES_COLUMNS),
            "granularity": config.granularity,
            "buckets": int(frame["bucket"].nunique()) if not frame.empty else 0,
            "latest_bucket_calls": int(latest["calls"].sum()) if not frame.empty else 0,
            "latest_bucket_failures": int(latest["failures"].sum()) if not frame.empty else 0,
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


SUMMARY_NUMBERS = (
    "total_calls",
    "success_rate",
    "failures",
    "total_tokens",
    "p50_latency_ms",
    "p95_latency_ms",
    "estimated_cost_usd",
)
FAILED_RUN_COLUMNS = ["failed_at", "run_id", "job", "partition", "steps", "error"]


@dg.asset(**ANALYTICS)
def study_summary(
    context: dg.AssetExecutionContext, database: DatabaseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    """Totals over everything captured: calls, failures, tokens, latency, cost, date range,
    providers, and the Dagster runs that failed (recorded by the run-failure sensor)."""
    db = database.get_connection()
    study = StudyService(db)
    stats = study.get_summary_stats()
    per_model = study.get_provider_comparison()
    with db.session_scope() as session:
        failures = [
            {
                "failed_at": f.failed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "run_id": f.run_id,
                "job": f.job_name,
                "partition": f.partition_key,
                "steps": ", ".join(f.failed_steps or []),
                "error": f.error,
            }
            for f in RunFailureRepository(session).recent_run_failures(limit=20)
        ]
    flat = {
        **{
            k: ", ".join(v) if isinstance(v, list) else v
            for k, v in stats.items()
            if not isinstance(v, dict)
        },
        **{f"status_{k}": v for k, v in stats["by_status"].items()},
    }
    path = exports.write_csv("study_summary", pd.DataFrame([flat]))
    lines = [f"- **{k}**: {_readable(v)}" for k, v in stats.items()]
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md("\n".join(lines)),
            "chart": dg.MetadataValue.md(outcomes_chart(per_model).markdown()),
            "failed_runs": table(failures, FAILED_RUN_COLUMNS)
            if failures
            else dg.MetadataValue.md(NO_FAILED_RUNS),
            "failed_runs_recorded": len(failures),
            **{key: measure(stats[key]) for key in SUMMARY_NUMBERS},
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


def _readable(value) -> str:
    if isinstance(value, float):
        return f"{formatting.round_sig(value, 4):,}"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return "" if value is None else str(value)


@dg.asset(**ANALYTICS)
def recent_calls(
    context: dg.AssetExecutionContext, database: DatabaseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    """The 50 newest calls with their prompt, answer or error, and their latencies."""
    frame = StudyService(database.get_connection()).get_recent_inferences(limit=50)
    path = exports.write_csv("recent_calls", frame)
    shown = frame.assign(created_at=frame["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S UTC"))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "table": table(records(shown), RECENT_COLUMNS),
            "chart": dg.MetadataValue.md(recent_latency_chart(frame).markdown()),
            "newest_call_id": ident(int(frame["id"].max()) if not frame.empty else None),
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


class PromptSearchConfig(dg.Config):
    term: str = Field(description="Text to look for in prompts and answers (case-insensitive).")
    limit: int = Field(50, ge=1, le=1000, description="How many matches to show, newest first.")


@dg.op
def search_prompts(
    context: dg.OpExecutionContext, config: PromptSearchConfig, database: DatabaseResource
) -> int:
    """Calls whose prompt or answer contains the term, shown as a table in the run: how many
    match in all, and the newest `limit` of them."""
    study = StudyService(database.get_connection())
    frame = study.search_prompts(config.term, config.limit)
    total = study.count_prompt_matches(config.term)
    shown = frame.assign(created_at=frame["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S UTC"))
    context.add_output_metadata(
        {
            "matches": total,
            "shown": len(frame),
            "results": table(records(shown), SEARCH_COLUMNS, limit=config.limit),
        }
    )
    if total > len(frame):
        context.log.info(f"{total} calls match {config.term!r}; showing the newest {len(frame)}")
    else:
        context.log.info(f"{total} calls match {config.term!r}")
    return total


@dg.job(description="Search captured prompts and answers (launchpad config: term, limit).")
def prompt_search_job():
    search_prompts()
