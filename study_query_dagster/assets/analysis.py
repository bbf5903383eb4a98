"""Deeper answer analysis (group `variation`, partitioned by prompt set): calibration of the
uncertainty measures against reference answers, and the clusters of a run's answers in
embedding space."""

import dagster as dg

from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..resources.exports import ExportsResource
from ..resources.providers import LLMProvidersResource
from ..services.variation import VariationService
from ..services.variation import analysis_charts as charts
from ..services.variation.calibrate import SCORES, auroc_metric
from ..services.variation.runner import cluster_answers
from .embeddings import response_embeddings
from .inference import inference_run
from .metadata import md_table, root_run_id, rounded
from .variation import (
    CHECK,
    VARIATION,
    WARN,
    check_result,
    csv_metadata,
    image,
    run_step,
    sample_dispersion,
)


def _rounded_rows(rows: list[dict]) -> list[dict]:
    return [{k: rounded(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in rows]


@dg.asset(**VARIATION, deps=[sample_dispersion])
def uncertainty_calibration(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedding: EmbeddingResource,
    exports: ExportsResource,
    llm: LLMProvidersResource,
) -> dg.MaterializeResult:
    """Against the prompts' `reference:` answers (by `variation.correctness`): accuracy per
    target, and how well semantic entropy, likelihood-based semantic entropy, SEU and
    1 - modal share predict a wrong answer (AUROC, accuracy at coverage, ROC chart). The unit
    is the cell; its answer is its modal class's representative."""
    report = run_step(context, database, embedding, VariationService.calibration, llm)
    if not report.graded:
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": 0,
                "calibration": "none: no prompt of this run has reference answers",
            }
        )
    overall = report.overall
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(report.graded),
            "correctness": report.correctness,
            "prompts_with_reference": report.prompts_with_reference,
            "accuracy": rounded(report.accuracy, 4),
            **{f"accuracy/{t}": rounded(v, 4) for t, v in report.per_target_accuracy.items()},
            **{
                auroc_metric(score): rounded(overall.get(auroc_metric(score)), 4)
                for score in SCORES
                if overall.get(auroc_metric(score)) is not None
            },
            "wrong_cells": overall["wrong"],
            "values_stored": report.written,
            **report.usage,
            "roc": image(charts.roc_chart(report.outcome.curves), "ROC curves per target"),
            "accuracy_at_coverage": image(
                charts.coverage_chart(report.outcome.coverage), "accuracy at coverage per score"
            ),
            "targets": md_table(_rounded_rows(report.rows)),
            "cells": md_table(report.cell_rows),
            **csv_metadata(exports, "calibration", context.partition_key, report.cell_rows),
        }
    )


@dg.asset_check(asset=uncertainty_calibration, **CHECK)
def calibration_has_both_classes(context, database: DatabaseResource, embedding: EmbeddingResource):
    """WARN for targets whose cells are all right or all wrong: AUROC is undefined for them."""
    return check_result(context, database, embedding, "calibration_has_both_classes", WARN)


@dg.asset(**VARIATION, deps=[inference_run, response_embeddings])
def answer_clusters(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedding: EmbeddingResource,
    exports: ExportsResource,
    llm: LLMProvidersResource,
) -> dg.MaterializeResult:
    """Families of answers across the whole run (or `variation.clusters.window` runs): k-means
    with a K sweep (silhouette or knee) or HDBSCAN on the answers' embeddings, stored as
    `answer_cluster` groups with method, version and parameters; the representative of each
    is the answer nearest its centroid, optionally summed up by `clusters.summary`."""
    with database.failures("the answer-clustering step"):
        report = cluster_answers(
            database.get_connection(),
            context.partition_key,
            root_run_id(context),
            embedding,
            llm,
        )
    if isinstance(report, str) or report.clustering is None:
        why = report if isinstance(report, str) else report.skipped
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "skipped": why})
    found = report.clustering
    names = {
        int(r["cluster"]) if r["cluster"] != "noise" else -1: f"{r['cluster']}: "
        + (r.get("summary") or r["representative"])
        for r in report.rows
    }
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(report.rows),
            "answers": len(report.points),
            "clusters": found.k,
            "method": found.method,
            "chosen_by": found.chosen_by,
            "silhouette": rounded(found.silhouette, 4),
            "stability_ari": rounded(found.stability_ari, 4),
            "key": report.key,
            "params": dg.MetadataValue.json(report.settings),
            "runs": dg.MetadataValue.json(report.runs),
            "group_id": report.group_id,
            **report.usage,
            "scatter": image(
                charts.cluster_scatter(
                    report.projection,
                    found.labels.tolist(),
                    [p.target for p in report.points],
                    names,
                ),
                "answers by cluster (colour) and target (marker)",
            ),
            "sweep": image(
                charts.sweep_chart([vars(p) for p in found.sweep], found.k, found.knee_k),
                "inertia and silhouette over K",
            ),
            "clusters_table": md_table(report.rows),
            **csv_metadata(exports, "clusters", context.partition_key, report.rows),
        }
    )
