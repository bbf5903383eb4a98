"""Analytics over every captured call (group `analytics`): tables and charts in each
materialization's metadata, numbers Dagster plots across materializations, and CSV exports.
They refresh by themselves after new inference runs or migrations (declarative automation)."""

import dagster as dg
import pandas as pd
from pydantic import Field

from ..db import RunFailureRepository
from ..resources.database import DatabaseResource
from ..resources.exports import ExportsResource
from ..services import formatting
from ..services.charts import (
    bar_chart,
    markdown_image,
    model_labels,
    provider_comparison_chart,
    time_series_chart,
)
from ..services.study import StudyService
from .inference import inference_run
from .migration import migrated_raw_calls

AC = dg.AutomationCondition

# Once when the asset is new, so the UI is never empty; then whenever an upstream asset (an
# inference run of any prompt set, a migration) was updated after this asset was last
# requested, once nothing upstream or here is running. The latch is reset by a request, and
# only when nothing was updated since that request's tick: an update that lands while a
# refresh is already running is not swallowed by it. (Dagster's `since_last_handled` also
# resets on the asset's own materialization, which loses exactly that update.)
# `newly_missing` fires once, so a refresh that fails is not relaunched until the next update.
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
    deps=[inference_run, migrated_raw_calls],
    automation_condition=REFRESH,
    kinds={"pandas"},
)


def markdown_table(frame: pd.DataFrame, *, limit: int = 50) -> str:
    return formatting.markdown_table(
        frame.to_dict("records"),
        list(frame.columns),
        limit=limit,
        empty="_no calls yet_",
        more="more rows in the CSV export",
    )


@dg.asset(**ANALYTICS)
def provider_comparison(
    context: dg.AssetExecutionContext, database: DatabaseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    """Per provider and model: calls, success rate, latency avg/p50/p95, tokens and estimated
    cost (empty where a model has no price), as a table and a chart."""
    frame = StudyService(database.get_connection()).get_provider_comparison()
    path = exports.write_csv("provider_comparison", frame)
    total_calls = int(frame["calls"].sum()) if not frame.empty else 0
    successes = int(frame["success"].sum()) if not frame.empty else 0
    costs = frame["estimated_cost_usd"].dropna()
    columns = ["provider", "model", "calls", "success_rate", "p50_latency_ms", "p95_latency_ms",
               "avg_tokens", "estimated_cost_usd", "cost_status"]  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "table": dg.MetadataValue.md(markdown_table(frame[columns])),
            "chart": dg.MetadataValue.md(
                markdown_image(provider_comparison_chart(frame), "latency and cost per model")
            ),
            "models": len(frame),
            "calls": total_calls,
            "success_rate": successes / total_calls if total_calls else None,
            "worst_p95_latency_ms": formatting.to_float(frame["p95_latency_ms"].max())
            if len(frame)
            else None,
            "estimated_cost_usd": float(costs.sum()) if len(costs) else None,
            "models_without_price": int((frame["cost_status"] == "unknown").sum()),
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


class TimeSeriesConfig(dg.Config):
    granularity: str = Field("day", description="day | hour | minute")


@dg.asset(**ANALYTICS)
def usage_time_series(
    context: dg.AssetExecutionContext,
    config: TimeSeriesConfig,
    database: DatabaseResource,
    exports: ExportsResource,
) -> dg.MaterializeResult:
    """Calls, failures, tokens and latency per provider over time, with line charts."""
    frame = StudyService(database.get_connection()).get_time_series_data(
        config.granularity, metric=["calls", "failures", "total_tokens", "avg_latency_ms",
                                    "p95_latency_ms"],
    )  # fmt: skip
    path = exports.write_csv(f"usage_time_series_{config.granularity}", frame)
    latest = frame[frame["bucket"] == frame["bucket"].max()] if not frame.empty else frame
    charts = "\n\n".join(
        markdown_image(time_series_chart(frame, metric), f"{metric} per {config.granularity}")
        for metric in ("calls", "failures", "p95_latency_ms")
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "charts": dg.MetadataValue.md(charts),
            "table": dg.MetadataValue.md(
                markdown_table(frame.sort_values("bucket", ascending=False))
            ),
            "granularity": config.granularity,
            "buckets": int(frame["bucket"].nunique()) if not frame.empty else 0,
            "latest_bucket_calls": int(latest["calls"].sum()) if not frame.empty else 0,
            "latest_bucket_failures": int(latest["failures"].sum()) if not frame.empty else 0,
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


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
    outcomes_chart = bar_chart(
        model_labels(per_model),
        {"succeeded": list(per_model["success"]),
         "failed, timed out or cancelled": list(per_model["calls"] - per_model["success"])},
        title="Calls per model", ylabel="calls",
    )  # fmt: skip
    with db.session_scope() as session:
        failures = [
            {
                "failed_at": f.failed_at,
                "run_id": f.run_id,
                "job": f.job_name,
                "partition": f.partition_key,
                "steps": ", ".join(f.failed_steps or []),
                "error": f.error,
            }  # fmt: skip
            for f in RunFailureRepository(session).recent_run_failures(limit=20)
        ]
    flat = {
        **{k: ", ".join(v) if isinstance(v, list) else v for k, v in stats.items()
           if not isinstance(v, dict)},
        **{f"status_{k}": v for k, v in stats["by_status"].items()},
    }  # fmt: skip
    path = exports.write_csv("study_summary", pd.DataFrame([flat]))
    lines = [f"- **{k}**: {v}" for k, v in stats.items()]
    return dg.MaterializeResult(
        metadata={
            "summary": dg.MetadataValue.md("\n".join(lines)),
            "chart": dg.MetadataValue.md(
                markdown_image(outcomes_chart, "calls per model: succeeded and not")
            ),
            "failed_runs": dg.MetadataValue.md(markdown_table(pd.DataFrame(failures))),
            "failed_runs_recorded": len(failures),
            **{
                key: stats[key]
                for key in (
                    "total_calls",
                    "success_rate",
                    "failures",
                    "total_tokens",
                    "p50_latency_ms",
                    "p95_latency_ms",
                    "estimated_cost_usd",
                )
                if key in stats and isinstance(stats[key], int | float | type(None))
            },  # fmt: skip
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(**ANALYTICS)
def recent_calls(
    context: dg.AssetExecutionContext, database: DatabaseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    """The 50 newest calls with their prompt, answer or error, and their latencies."""
    frame = StudyService(database.get_connection()).get_recent_inferences(limit=50)
    path = exports.write_csv("recent_calls", frame)
    oldest_first = frame.iloc[::-1]
    latency_chart = bar_chart(
        [str(i) for i in oldest_first["id"]],
        {"latency_ms": [None if pd.isna(v) else v for v in oldest_first["latency_ms"]]},
        title="Latency of the newest calls (by call id)", ylabel="ms",
    )  # fmt: skip
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "table": dg.MetadataValue.md(markdown_table(frame)),
            "chart": dg.MetadataValue.md(markdown_image(latency_chart, "latency of recent calls")),
            "newest_call_id": int(frame["id"].max()) if not frame.empty else None,
            "csv": dg.MetadataValue.path(str(path)),
        }
    )


class PromptSearchConfig(dg.Config):
    term: str = Field(description="Text to look for in prompts and answers (case-insensitive).")
    limit: int = Field(50, ge=1, le=1000)


@dg.op
def search_prompts(
    context: dg.OpExecutionContext, config: PromptSearchConfig, database: DatabaseResource
) -> int:
    """Calls whose prompt or answer contains the term, shown as a table in the run."""
    frame = StudyService(database.get_connection()).search_prompts(config.term, config.limit)
    context.add_output_metadata(
        {
            "matches": len(frame),
            "results": dg.MetadataValue.md(markdown_table(frame, limit=config.limit)),
        }
    )
    context.log.info(f"{len(frame)} calls match {config.term!r}")
    return len(frame)


@dg.job(description="Search captured prompts and answers (launchpad config: term, limit).")
def prompt_search_job():
    search_prompts()
