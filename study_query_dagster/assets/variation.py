"""Answer variation (group `variation`, partitioned by prompt set): the equivalence classes of
each cell, how much each target's answers vary, how targets disagree and how answers drift
from the baseline run; each asset with its checks."""

import dagster as dg
import pandas as pd

from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..resources.exports import ExportsResource
from ..resources.providers import LLMProvidersResource
from ..services.charts import markdown_image
from ..services.variation import VariationService
from ..services.variation import charts as variation_charts
from ..services.variation import measures as m
from ..services.variation.checks import CheckOutcome
from ..services.variation.runner import measure, open_checks
from .embeddings import response_embeddings
from .inference import inference_run
from .metadata import md_table, root_run_id, rounded
from .prompts import PROMPT_SETS

# Per prompt set: measured once its run and embeddings are updated (a set registered but never
# run waits), and not while they are being written.
VARIATION = dict(
    partitions_def=PROMPT_SETS,
    group_name="variation",
    kinds={"numpy"},
    automation_condition=dg.AutomationCondition.eager(),
)
CHECK = dict(partitions_def=PROMPT_SETS)


def run_step(context, database: DatabaseResource, embedding: EmbeddingResource, step, llm=None):
    """One VariationService computation on the partition's run (`llm` supplies a judge)."""
    with database.failures("the answer-variation step"):
        return measure(
            database.get_connection(),
            context.partition_key,
            root_run_id(context),
            embedding,
            step,
            llm,
        )


def csv_metadata(exports: ExportsResource, kind: str, partition: str, rows: list[dict]) -> dict:
    path = exports.write_csv(f"variation_{kind}_{partition}", pd.DataFrame(rows))
    return {"csv": dg.MetadataValue.path(str(path))}


def image(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_image(png, alt))


@dg.asset(**VARIATION, deps=[inference_run, response_embeddings])
def answer_equivalence_classes(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedding: EmbeddingResource,
    exports: ExportsResource,
    llm: LLMProvidersResource,
) -> dg.MaterializeResult:
    """Groups each cell's answers (one prompt, one target) into classes of equivalent answers
    with the set's `variation.strategy`, stored as `semantic_cluster` groups (the medoid is the
    `representative`). Refusals form one class `refused`; transient failures are excluded."""
    report = run_step(context, database, embedding, VariationService.equivalence_classes, llm)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(report.rows),
            "answers": report.answers,
            "classes": report.classes,
            "excluded_items": sum(r["excluded"] for r in report.rows),
            "strategy": report.strategy,
            "settings": dg.MetadataValue.json(report.settings),
            "groups": dg.MetadataValue.json(report.groups),
            **report.usage,  # the judge's calls (strategy entailment)
            "cells": md_table(report.rows),
            **csv_metadata(exports, "classes", context.partition_key, report.rows),
        }
    )


@dg.asset(**VARIATION, deps=[answer_equivalence_classes])
def sample_dispersion(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedding: EmbeddingResource,
    exports: ExportsResource,
) -> dg.MaterializeResult:
    """Per cell: semantic entropy (and normalised), likelihood-based semantic entropy (where
    log-probabilities were captured), classes, modal share, raw and parsed agreement, SEU and
    Vendi (with `embed: on`), mean length and refusal share."""
    report = run_step(context, database, embedding, VariationService.dispersion)
    per_target = report.per_target()
    columns = [
        "prompt",
        "target",
        "n",
        "excluded",
        "classes",
        m.SEMANTIC_ENTROPY,
        m.NORMALIZED_SEMANTIC_ENTROPY,
        m.LIKELIHOOD_SEMANTIC_ENTROPY,
        m.MODAL_SHARE,
        m.PARSED_AGREEMENT,
        m.SEU,
        m.VENDI,
        m.MEAN_LENGTH,
        m.REFUSAL_SHARE,
    ]
    rows = [{c: r.get(c) for c in columns} for r in report.rows]
    prompts = list(dict.fromkeys(r["prompt"] for r in rows))
    targets = list(dict.fromkeys(r["target"] for r in rows))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "mean_semantic_entropy": rounded(report.mean_semantic_entropy, 4),
            "share_cells_zero_entropy": rounded(report.share_zero_entropy, 4),
            **{
                f"mean_semantic_entropy/{t}": rounded(v["mean_semantic_entropy"], 4)
                for t, v in per_target.items()
            },
            "embedding_metrics": report.embeddings,
            "values_stored": report.written,
            "heatmap": image(
                variation_charts.entropy_heatmap(report.rows, prompts, targets),
                "semantic entropy per prompt and target",
            ),
            "per_target": image(
                variation_charts.target_summary_chart(per_target),
                "mean semantic entropy and parsed agreement per target",
            ),
            "cells": md_table(rows),
            **csv_metadata(exports, "dispersion", context.partition_key, rows),
        }
    )


@dg.asset(**VARIATION, deps=[answer_equivalence_classes])
def cross_target_agreement(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedding: EmbeddingResource,
    exports: ExportsResource,
    llm: LLMProvidersResource,
) -> dg.MaterializeResult:
    """Per prompt and pair of targets, over classes pooled across the targets: Jensen-Shannon
    divergence (base 2), cross agreement and modal agreement."""
    report = run_step(context, database, embedding, VariationService.agreement, llm)
    modal = [{"prompt": p, **answers} for p, answers in report.modal_answers.items()]
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(report.rows),
            "mean_jsd": rounded(report.mean_jsd, 4),
            "prompts_with_modal_disagreement": len(report.disagreements),
            "values_stored": report.written,
            **report.usage,
            "pairs": md_table(report.rows),
            "modal_answers": md_table(modal),
            **csv_metadata(exports, "agreement", context.partition_key, report.rows),
        }
    )


@dg.asset(**VARIATION, deps=[answer_equivalence_classes])
def answer_drift(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    embedding: EmbeddingResource,
    exports: ExportsResource,
    llm: LLMProvidersResource,
) -> dg.MaterializeResult:
    """Per cell, this run against its baseline run (`variation.baseline`: the previous run by
    default): JSD, modal change, entropy and length deltas, centroid shift (with `embed: on`)
    and a permutation-test p-value. Nothing to compare on a set's first run."""
    report = run_step(context, database, embedding, VariationService.drift, llm)
    if report.baseline is None:
        return dg.MaterializeResult(
            metadata={"dagster/row_count": 0, "baseline": "none: this is the set's first run"}
        )
    cells = report.most_drifting()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(report.rows),
            "baseline": report.baseline,
            "mean_drift_jsd": rounded(report.mean_jsd, 4),
            "cells_with_modal_change": sum(1 for r in report.rows if r[m.MODAL_CHANGED]),
            "values_stored": report.written,
            **report.usage,
            "class_shares": image(
                variation_charts.drift_shares_chart(report.shares, cells, report.baseline),
                "answer classes per run for the most drifting cells",
            ),
            "drift_over_time": image(
                variation_charts.drift_history_chart(report.history), "mean drift JSD per run"
            ),
            "cells": md_table(report.rows),
            **csv_metadata(exports, "drift", context.partition_key, report.rows),
        }
    )


# --- checks ----------------------------------------------------------------------------------


def check_result(context, database, embedding, name: str, severity) -> dg.AssetCheckResult:
    checks = open_checks(
        database.get_connection(), context.partition_key, root_run_id(context), embedding
    )
    outcome: CheckOutcome = getattr(checks, name)()
    return dg.AssetCheckResult(
        passed=outcome.passed,
        severity=severity,
        description=outcome.description,
        metadata={"rows": md_table(outcome.rows, empty="none"), **outcome.numbers},
    )


ERROR, WARN = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN


@dg.asset_check(asset=answer_equivalence_classes, blocking=True, **CHECK)
def every_answer_in_one_class(context, database: DatabaseResource, embedding: EmbeddingResource):
    """Each answer of the run is in exactly one class of its cell, for the set's strategy."""
    return check_result(context, database, embedding, "every_answer_in_one_class", ERROR)


@dg.asset_check(asset=sample_dispersion, blocking=True, **CHECK)
def dispersion_in_bounds(context, database: DatabaseResource, embedding: EmbeddingResource):
    """0 <= semantic entropy <= ln n, 1 <= Vendi <= n, 1 <= classes <= n for every cell."""
    return check_result(context, database, embedding, "dispersion_in_bounds", ERROR)


@dg.asset_check(asset=sample_dispersion, **CHECK)
def deterministic_targets_stable(context, database: DatabaseResource, embedding: EmbeddingResource):
    """WARN (a finding, not an error): targets at temperature 0 or with a fixed seed whose
    answers to a prompt vary."""
    return check_result(context, database, embedding, "deterministic_targets_stable", WARN)


@dg.asset_check(asset=sample_dispersion, **CHECK)
def enough_samples_for_entropy(context, database: DatabaseResource, embedding: EmbeddingResource):
    """WARN for cells with fewer than 5 answers: their semantic entropy is biased low."""
    return check_result(context, database, embedding, "enough_samples_for_entropy", WARN)


@dg.asset_check(asset=cross_target_agreement, **CHECK)
def targets_agree_on_modal_answer(
    context, database: DatabaseResource, embedding: EmbeddingResource
):
    """WARN listing the prompts on which targets' most frequent answers differ."""
    return check_result(context, database, embedding, "targets_agree_on_modal_answer", WARN)


@dg.asset_check(asset=answer_drift, **CHECK)
def no_significant_drift(context, database: DatabaseResource, embedding: EmbeddingResource):
    """WARN for cells whose modal answer changed with JSD >= 0.2 and p < 0.05 against the
    baseline run (listed with the answers before and after); names cells too small to test."""
    return check_result(context, database, embedding, "no_significant_drift", WARN)
