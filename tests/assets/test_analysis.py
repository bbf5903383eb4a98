"""The deeper analysis under `materialize` on SQLite and PostgreSQL, on the shipped scripted set
prompt_sets/variation_calibration.yaml (scripted answers with log-probabilities, a scripted
entailment judge, reference answers): classes, likelihood-based entropy, calibration, judge
calls, clusters and every check outcome asserted against values worked out by hand."""

import math
import shutil
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from study_query_dagster.db import (
    ANSWER_CLUSTER,
    DatabaseConnection,
    GroupRepository,
    RawCall,
    RawCallRepository,
    SemanticClusterRepository,
    VariationResultRepository,
)
from study_query_dagster.providers.offline import SCRIPTED_LOGPROB
from study_query_dagster.services.prompt_sets import load_prompt_set
from study_query_dagster.services.variation.judge import ENTAILMENT_GROUP
from study_query_dagster.services.variation.strategies import strategy_for_config
from tests.support.pipeline import make_resources, study_assets_and_checks

NAME = "variation_calibration"
SHIPPED = Path(__file__).resolve().parents[2] / "prompt_sets" / f"{NAME}.yaml"
STUDY = dg.AssetSelection.assets("prompt_set", "inference_run", "response_embeddings")
VARIATION = dg.AssetSelection.groups("variation")
KEY = strategy_for_config(load_prompt_set(SHIPPED).prompt_set.variation).key
WARN = dg.AssetCheckSeverity.WARN


def entropy(*weights):
    total = sum(weights)
    return -sum(w / total * math.log(w / total) for w in weights)


@pytest.fixture
def study(db_url, tmp_path):
    prompt_dir = tmp_path / "prompt_sets"
    prompt_dir.mkdir()
    shutil.copy(SHIPPED, prompt_dir)
    resources = make_resources(db_url, prompt_dir, exports_dir=tmp_path / "exports")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", [NAME])

        def run(selection):
            result = dg.materialize(
                study_assets_and_checks(),
                partition_key=NAME,
                instance=instance,
                resources=resources,
                selection=selection,
            )
            assert result.success
            return result

        yield run


@pytest.fixture
def database(db_url):
    db = DatabaseConnection(db_url)
    yield db
    db.dispose()


def metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def failing(result) -> dict:
    return {c.check_name: c.severity for c in result.get_asset_check_evaluations() if not c.passed}


def judge_calls(db) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).where(RawCall.model == "offline-judge"))


def stored(db, run_group_id) -> dict:
    with db.session_scope() as session:
        rows = VariationResultRepository(session).latest(run_group_id, KEY)
        return {(r.prompt_id, r.target, r.other, r.metric): (r.value, r.n) for r in rows}


def test_calibration_end_to_end(study, database):
    result = study(STUDY | VARIATION)
    # The targets disagree on planet and safe; `sure` is always right: AUROC undefined for it.
    assert failing(result) == {
        "targets_agree_on_modal_answer": WARN,
        "calibration_has_both_classes": WARN,
    }
    check = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert check["calibration_has_both_classes"].description == (
        "AUROC is undefined for 1 of 2 targets: their cells are all right or all wrong (sure)"
    )
    run_group_id = metadata(result, "inference_run")["run_group_id"]

    # Entailment joins "Canberra" and "It is Canberra." (exact matching would not): 9 classes
    # for sampler, 5 for sure. Judge calls: capital 2 + 1, planet 1 + 2, author 1 for the
    # classes; boiling 2 and safe 1 more when the targets' answers are pooled for agreement.
    classes = metadata(result, "answer_equivalence_classes")
    assert (classes["answers"], classes["classes"], classes["strategy"]) == (50, 14, "entailment")
    assert (classes["judge_requests"], classes["judge_provider_calls"]) == (7, 7)
    assert metadata(result, "cross_target_agreement")["judge_provider_calls"] == 3
    assert judge_calls(database) == 10
    with database.session_scope() as session:
        group = GroupRepository(session).newest_group(ENTAILMENT_GROUP, f"{NAME}/")
        members = RawCallRepository(session).calls_in_group(group.id)
        clusters = SemanticClusterRepository(session).clusters_of_run(run_group_id, KEY)
    assert group.name.endswith(f"/{KEY}") and len(members) == 10
    [canberra] = [
        c
        for c in clusters
        if c.metadata["target"] == "sampler" and c.metadata["prompt_id"] == "capital"
        if c.metadata["size"] == 4
    ]
    assert canberra.metadata["answer"] == "Canberra"

    values = stored(database, run_group_id)
    se = {(p, t): v[0] for (p, t, o, metric), v in values.items() if metric == "semantic_entropy"}
    assert se["capital", "sampler"] == pytest.approx(entropy(4, 1), abs=1e-15)
    assert se["planet", "sampler"] == pytest.approx(entropy(3, 1, 1), abs=1e-15)
    assert se["author", "sampler"] == pytest.approx(entropy(3, 2), abs=1e-15)
    assert se["safe", "sampler"] == se["capital", "sure"] == 0.0
    # Scripted answers weigh exp(-0.25) per word: "It is Canberra." is less likely.
    a, b = math.exp(SCRIPTED_LOGPROB), math.exp(3 * SCRIPTED_LOGPROB)
    lse = values["capital", "sampler", None, "likelihood_semantic_entropy"]
    assert lse == (pytest.approx(entropy(3 * a + b, a), abs=1e-12), 5)
    assert round(lse[0], 7) == 0.5231913  # above the discrete 0.5004024
    assert values["planet", "sampler", None, "likelihood_semantic_entropy"][0] == pytest.approx(
        se["planet", "sampler"], abs=1e-12
    )
    assert not any(k[1] == "sure" and k[3] == "likelihood_semantic_entropy" for k in values)

    # Calibration: sampler is right on capital (0.500) and boiling (0), wrong on planet (0.950),
    # author (0.673) and safe (0: confidently wrong): 4.5 of 6 pairs. With sure's five right
    # cells at 0: 7 + 7 + 3 of 21.
    assert values["*", "sampler", None, "auroc_semantic_entropy"] == (0.75, 5)
    assert values["*", "*", None, "auroc_semantic_entropy"] == (pytest.approx(17 / 21), 10)
    assert values["*", "*", None, "auroc_one_minus_modal_share"][0] == pytest.approx(17 / 21)
    assert values["*", "*", None, "auroc_likelihood_semantic_entropy"] == (0.75, 5)
    assert ("*", "sure", None, "auroc_semantic_entropy") not in values
    assert values["*", "sampler", None, "accuracy"] == (0.4, 5)
    assert values["*", "*", None, "accuracy"] == (0.7, 10)
    assert values["*", "sampler", None, "accuracy_at_50_semantic_entropy"][0] == pytest.approx(
        2 / 3
    )
    assert values["*", "*", None, "accuracy_at_50_semantic_entropy"][0] == 1.0
    assert values["*", "*", None, "accuracy_at_80_semantic_entropy"][0] == 0.875
    assert values["capital", "sampler", None, "answer_accuracy"] == (0.8, 5)
    assert values["safe", "sure", None, "correct"] == (1.0, 5)  # "No, it is not safe" contains "no"
    seu = values["*", "*", None, "auroc_seu"][0]
    assert 0.0 <= seu <= 1.0

    calibration = metadata(result, "uncertainty_calibration")
    assert calibration["accuracy"] == 0.7 and calibration["wrong_cells"] == 3
    assert calibration["accuracy/sampler"] == 0.4 and calibration["accuracy/sure"] == 1.0
    assert calibration["auroc_semantic_entropy"] == round(17 / 21, 4)
    assert "data:image/png;base64," in calibration["roc"]
    assert Path(calibration["csv"]).exists()

    # Answer clusters: every answer in exactly one cluster, equal answers together.
    found = metadata(result, "answer_clusters")
    assert found["answers"] == 50 and 2 <= found["clusters"] <= 8
    assert found["params"]["method"] == "kmeans" and found["params"]["k_max"] == 8
    assert "data:image/png;base64," in found["scatter"]
    with database.session_scope() as session:
        groups = GroupRepository(session)
        prefix = f"{run_group_id}/{found['key']}/"
        assert groups.count_groups(ANSWER_CLUSTER, prefix) == found["clusters"]
        cluster_of: dict[int, int] = {}
        for number in range(found["clusters"]):
            group = groups.find_group(ANSWER_CLUSTER, f"{prefix}{number}")
            for member in groups.get_group_members(group.id):
                assert member.call_id not in cluster_of
                cluster_of[member.call_id] = number
        answers = RawCallRepository(session).calls_in_group(run_group_id)
        text_cluster = {}
        for call in answers:
            text = call.response_json["text"]
            assert text_cluster.setdefault(text, cluster_of[call.id]) == cluster_of[call.id]
    assert len(cluster_of) == 50

    # Measured again (same run): the judge's verdicts come from the cache.
    again = study(VARIATION)
    assert metadata(again, "answer_equivalence_classes")["judge_provider_calls"] == 0
    assert judge_calls(database) == 10
    assert stored(database, run_group_id)["*", "*", None, "auroc_semantic_entropy"][0] == (
        pytest.approx(17 / 21)
    )

    # A second run of the set: same answers, same questions, so no judge call either; and no
    # drift from the first run.
    second = study(STUDY | VARIATION)
    assert judge_calls(database) == 10
    assert failing(second) == failing(result)
    drift = metadata(second, "answer_drift")
    assert drift["baseline"] == f"{NAME}/{result.run_id}" and drift["mean_drift_jsd"] == 0.0
