"""`study_results`: the results of a prompt set's latest run, per set (one partition per prompt
set, like the inference assets): the per-target table, latency and cost per target, answers
per prompt, CSV exports under `<exports>/<set>/<run>/` (never overwritten) and the
self-contained HTML study report `<reports>/<set>/<run>.html`, linked from the metadata."""

import dagster as dg

from ..resources.database import DatabaseResource
from ..resources.exports import ExportsResource
from ..services.charts import Chart, charts_markdown, cost_chart, latency_chart
from ..services.reports import publish_run_results
from ..services.reports.tables import ANSWER_TABLE, TARGET_TABLE
from .inference import inference_run
from .metadata import ident, md_list, measure, root_run_id, table
from .prompts import PROMPT_SETS
from .variation import answer_drift, cross_target_agreement, sample_dispersion

# Written again once the variation assets have measured the run (they run after study_job, in
# a run of their own): the report's variation section then has their findings.
AFTER_VARIATION = (
    dg.AutomationCondition.any_deps_updated().ignore(dg.AssetSelection.assets(inference_run))
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("after answer variation")

# Set on a run requested for the results of a given run (e.g. after it failed).
RESULTS_OF_TAG = "study/results_of_run"
DESCRIPTIONS = {
    "target": "the prompt set's target label",
    "params": "sampling parameters as sent",
    "success_rate": "successful calls / calls",
    "p50_latency_ms": "median latency of successful calls",
    "distinct_answers": "answers that differ in text (whitespace at the ends aside)",
    "top_answer_share": "share of the answered samples that gave the most frequent answer",
}


def target_charts(targets: list[dict]) -> list[Chart]:
    """Latency and cost per target, when there are targets to compare."""
    if len(targets) < 2:
        return [
            Chart("Latency and cost per target", reason="one target: its figures are in per_target")
        ]
    labels = [t["target"] for t in targets]
    return [
        latency_chart(
            labels, [t["p50_latency_ms"] for t in targets], [t["p95_latency_ms"] for t in targets]
        ),
        cost_chart(labels, [t["estimated_cost_usd"] for t in targets]),
    ]


@dg.asset(
    partitions_def=PROMPT_SETS,
    group_name="results",
    deps=[inference_run, sample_dispersion, cross_target_agreement, answer_drift],
    kinds={"html", "csv"},
    automation_condition=AFTER_VARIATION,
)
def study_results(
    context: dg.AssetExecutionContext, database: DatabaseResource, exports: ExportsResource
) -> dg.MaterializeResult:
    """The latest run of this prompt set (in study_job: the run that just finished), read as
    a researcher compares it: per target (label, provider, model, parameters), per prompt and
    target, every call exported as CSV, and the study report — the prompts × targets matrix
    with every sample's answer — as one HTML file that opens offline."""
    try:
        results = publish_run_results(
            database.get_connection(),
            context.partition_key,
            context.run.tags.get(RESULTS_OF_TAG) or root_run_id(context),
            reports_dir=exports.reports_path,
            exports_dir=exports.exports_path,
        )
    except LookupError as exc:
        raise dg.Failure(str(exc)) from None
    s, targets = results.summary, results.targets
    charts = target_charts(targets)
    report = results.report_path
    return dg.MaterializeResult(
        metadata={
            "report": dg.MetadataValue.path(str(report)),
            "report_url": dg.MetadataValue.url(report.as_uri()),
            "per_target": table(targets, TARGET_TABLE, descriptions=DESCRIPTIONS),
            "charts": dg.MetadataValue.md(charts_markdown(charts)),
            "answers_per_prompt": table(results.answers, ANSWER_TABLE, descriptions=DESCRIPTIONS),
            "exports": dg.MetadataValue.path(str(results.export_dir)),
            "run": ident(results.run.root_run_id),
            "run_group_id": ident(results.run.run_group_id),
            "dagster/row_count": len(results.calls),
            "items": s["expected"],
            "items_answered": s["items_succeeded"],
            "failed_calls": s["failed_calls"],
            "answered_rate": measure(s["success_rate"]),
            "latency_p50_ms": measure(s["p50_latency_ms"]),
            "latency_p95_ms": measure(s["p95_latency_ms"]),
            "total_tokens": s["total_tokens"],
            "estimated_cost_usd": measure(s["cost_usd"]),
            "variation": results.variation.note,
            "variation_findings": md_list(results.variation.findings, empty="none"),
        }
    )
