"""The answer-variation assets under `materialize` on SQLite and PostgreSQL, on the shipped
scripted sample sets (prompt_sets/variation_*.yaml): every metric and every check outcome is
asserted against the value the script makes certain."""

import math
import shutil
from pathlib import Path

import dagster as dg
import pytest

from study_query_dagster.db import (
    DatabaseConnection,
    SemanticClusterRepository,
    VariationResultRepository,
)
from tests.support.pipeline import make_resources, study_assets_and_checks

SHIPPED = Path(__file__).resolve().parents[2] / "prompt_sets"
STUDY = dg.AssetSelection.assets("prompt_set", "inference_run", "response_embeddings")
VARIATION = dg.AssetSelection.groups("variation")
SELECTION = STUDY | VARIATION
SE_7_3 = -(0.7 * math.log(0.7) + 0.3 * math.log(0.3))  # 0.6108643...
VARIATION_CHECKS = {
    "every_answer_in_one_class",
    "dispersion_in_bounds",
    "deterministic_targets_stable",
    "enough_samples_for_entropy",
    "targets_agree_on_modal_answer",
    "no_significant_drift",
}


@pytest.fixture
def study(db_url, tmp_path):
    prompt_dir = tmp_path / "prompt_sets"
    prompt_dir.mkdir()
    resources = make_resources(db_url, prompt_dir, exports_dir=tmp_path / "exports")
    with dg.instance_for_test() as instance:

        def run(name: str):
            shutil.copy(SHIPPED / f"{name}.yaml", prompt_dir)
            instance.add_dynamic_partitions("prompt_sets", [name])
            result = dg.materialize(
                study_assets_and_checks(),
                partition_key=name,
                instance=instance,
                resources=resources,
                selection=SELECTION,
            )
            assert result.success
            return result

        yield run


def metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    found = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(found) >= VARIATION_CHECKS
    return found


def failing(result) -> dict[str, dg.AssetCheckSeverity]:
    return {n: c.severity for n, c in checks(result).items() if not c.passed}


def results(db_url, result) -> dict[tuple, tuple[float, int]]:
    """(prompt, target, other, metric) -> (value, n) of the run's newest stored values."""
    run_group_id = metadata(result, "inference_run")["run_group_id"]
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        rows = VariationResultRepository(session).latest(run_group_id, "exact")
        out = {(r.prompt_id, r.target, r.other, r.metric): (r.value, r.n) for r in rows}
    db.dispose()
    return out


def cell(values, prompt, target, other=None):
    return {m: v for (p, t, o, m), (v, _) in values.items() if (p, t, o) == (prompt, target, other)}


def test_stable(study, db_url, tmp_path):
    result = study("variation_stable")
    assert failing(result) == {}
    values = results(db_url, result)
    for prompt in ("capital", "boiling", "planets"):
        for target in ("steady-a", "steady-b"):
            got = cell(values, prompt, target)
            assert got["semantic_entropy"] == 0.0 and got["normalized_semantic_entropy"] == 0.0
            assert got["num_classes"] == 1 and got["modal_share"] == 1.0
            assert got["raw_agreement"] == 1.0 and got["parsed_agreement"] == 1.0
            assert got["refusal_share"] == 0.0
            assert got["seu"] == pytest.approx(0.0, abs=1e-6)
            assert got["vendi"] == pytest.approx(1.0, abs=1e-6)
            assert values[(prompt, target, None, "semantic_entropy")][1] == 10
        # "Canberra" and "Canberra." are one answer once normalised: the targets agree.
        pair = cell(values, prompt, "steady-a", "steady-b")
        assert pair == {"jsd": 0.0, "cross_agreement": 1.0, "modal_agreement": 1.0}
    assert len(values) == 6 * 10 + 3 * 3  # ten metrics per cell, three per pair of targets

    dispersion = metadata(result, "sample_dispersion")
    assert dispersion["mean_semantic_entropy"] == 0.0
    assert dispersion["share_cells_zero_entropy"] == 1.0
    assert dispersion["mean_semantic_entropy/steady-a"] == 0.0
    assert "data:image/png;base64," in dispersion["heatmap"]
    assert Path(dispersion["csv"]).exists()
    assert metadata(result, "answer_drift")["baseline"].startswith("none")
    classes = metadata(result, "answer_equivalence_classes")
    assert (classes["answers"], classes["classes"]) == (60, 6)
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        clusters = SemanticClusterRepository(session).clusters_of_run(
            metadata(result, "inference_run")["run_group_id"]
        )
        assert sorted(len(c.call_ids) for c in clusters) == [10] * 6
        assert all(c.representative in c.call_ids for c in clusters)
    db.dispose()


def test_noisy_at_temperature_zero(study, db_url):
    result = study("variation_noisy")
    assert failing(result) == {"deterministic_targets_stable": dg.AssetCheckSeverity.WARN}
    values = results(db_url, result)
    cold, warm = cell(values, "capital", "cold"), cell(values, "capital", "warm")
    assert cold["semantic_entropy"] == pytest.approx(SE_7_3, abs=1e-12)
    assert round(cold["semantic_entropy"], 7) == 0.6108643
    assert cold["num_classes"] == 2 and cold["modal_share"] == 0.7
    shares = [0.4, 0.3, 0.2, 0.1]
    assert warm["semantic_entropy"] == pytest.approx(-sum(p * math.log(p) for p in shares))
    assert warm["normalized_semantic_entropy"] == pytest.approx(
        warm["semantic_entropy"] / math.log(10)
    )
    assert warm["num_classes"] == 4 and warm["modal_share"] == 0.4
    assert cold["mean_length"] == pytest.approx((7 * 8 + 3 * 6) / 10)
    pair = cell(values, "capital", "cold", "warm")
    assert pair["cross_agreement"] == pytest.approx(0.7 * 0.4 + 0.3 * 0.3)
    assert pair["modal_agreement"] == 1.0
    check = checks(result)["deterministic_targets_stable"]
    assert "1 cell of deterministic targets (cold) gave varying answers" in check.description
    assert "| capital | cold | 2 | 10 |" in check.metadata["rows"].value


def test_disagreeing_targets(study, db_url):
    result = study("variation_disagree")
    assert failing(result) == {"targets_agree_on_modal_answer": dg.AssetCheckSeverity.WARN}
    values = results(db_url, result)
    capital = cell(values, "capital", "model-a", "model-b")
    m = (0.6, 0.4)  # mixture of (0.8, 0.2) and (0.4, 0.6)
    kl_a = 0.8 * math.log2(0.8 / m[0]) + 0.2 * math.log2(0.2 / m[1])
    kl_b = 0.4 * math.log2(0.4 / m[0]) + 0.6 * math.log2(0.6 / m[1])
    assert capital["jsd"] == pytest.approx((kl_a + kl_b) / 2, abs=1e-12)
    assert round(capital["jsd"], 7) == 0.1245112
    assert capital["cross_agreement"] == pytest.approx(0.44)
    assert capital["modal_agreement"] == 0.0
    assert cell(values, "boiling", "model-a", "model-b") == {
        "jsd": 0.0,
        "cross_agreement": 1.0,
        "modal_agreement": 1.0,
    }
    check = checks(result)["targets_agree_on_modal_answer"]
    assert check.description == "targets disagree on the modal answer to 1 prompt"
    assert "| capital | Canberra | Sydney |" in check.metadata["rows"].value
    agreement = metadata(result, "cross_target_agreement")
    assert agreement["prompts_with_modal_disagreement"] == 1


def test_drift_over_two_runs(study, db_url):
    first = study("variation_drift")
    assert failing(first) == {}
    assert metadata(first, "answer_drift")["baseline"].startswith("none")
    assert cell(results(db_url, first), "capital", "drifting")["semantic_entropy"] == 0.0

    second = study("variation_drift")  # the second run: the second script
    assert failing(second) == {"no_significant_drift": dg.AssetCheckSeverity.WARN}
    values = results(db_url, second)
    baseline = metadata(second, "answer_drift")["baseline"]
    assert baseline == f"variation_drift/{first.run_id}"
    drift = cell(values, "capital", "drifting", baseline)
    # Canberra 10/10 -> Sydney 7, Canberra 3: M = (0.65, 0.35)
    expected = (math.log2(1 / 0.65) + 0.3 * math.log2(0.3 / 0.65) + 0.7 * math.log2(0.7 / 0.35)) / 2
    assert drift["drift_jsd"] == pytest.approx(expected, abs=1e-12)
    assert round(drift["drift_jsd"], 7) == 0.4934226
    assert drift["modal_changed"] == 1.0
    assert drift["delta_semantic_entropy"] == pytest.approx(SE_7_3, abs=1e-12)
    assert drift["delta_mean_length"] == pytest.approx((7 * 6 + 3 * 8) / 10 - 8)
    assert drift["centroid_shift"] > 0.0
    # Monte Carlo over 999 shuffles: (1 + hits) / 1000, where the exact p is 574 / 184,756.
    assert drift["drift_p_value"] < 0.05
    assert drift["drift_p_value"] * 1000 == pytest.approx(round(drift["drift_p_value"] * 1000))
    steady = cell(values, "boiling", "drifting", baseline)
    assert (steady["drift_jsd"], steady["modal_changed"], steady["drift_p_value"]) == (0, 0, 1)
    assert steady["centroid_shift"] == pytest.approx(0.0, abs=1e-6)
    assert values[("capital", "drifting", baseline, "drift_jsd")][1] == 10

    check = checks(second)["no_significant_drift"]
    assert check.description.startswith(f"1 cell drifted from {baseline}")
    assert "too small" not in check.description
    assert "| capital | drifting |" in check.metadata["rows"].value
    assert "| Canberra | Sydney |" in check.metadata["rows"].value
    assert metadata(second, "answer_drift")["mean_drift_jsd"] == pytest.approx(
        expected / 2, abs=1e-4
    )


def test_variation_refreshes_after_each_new_run(db_url, tmp_path):
    """Declarative automation (variation_automation): nothing for a set that never ran, the
    four assets once its run and embeddings are new, then nothing until the next run."""
    from study_query_dagster.definitions import defs

    prompt_dir = tmp_path / "prompt_sets"
    prompt_dir.mkdir()
    shutil.copy(SHIPPED / "variation_stable.yaml", prompt_dir)
    resources = make_resources(db_url, prompt_dir, exports_dir=tmp_path / "exports")
    assets = [
        "answer_equivalence_classes",
        "sample_dispersion",
        "cross_target_agreement",
        "answer_drift",
    ]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["variation_stable"])

        def evaluate(cursor=None):
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=VARIATION, cursor=cursor
            )
            wanted = sorted(a for a in assets if result.get_num_requested(dg.AssetKey(a)))
            return result.cursor, wanted

        def materialize(selection):
            return dg.materialize(
                study_assets_and_checks(),
                partition_key="variation_stable",
                instance=instance,
                resources=resources,
                selection=selection,
            ).success

        cursor, wanted = evaluate()
        assert wanted == []  # registered, never run: nothing to measure
        assert materialize(STUDY)
        cursor, wanted = evaluate(cursor)
        assert wanted == sorted(assets)
        assert materialize(VARIATION)
        cursor, wanted = evaluate(cursor)
        assert wanted == []
        assert materialize(STUDY)  # a new run of the set
        cursor, wanted = evaluate(cursor)
        assert wanted == sorted(assets)
