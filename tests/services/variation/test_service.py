"""VariationService on SQLite and PostgreSQL: classes stored as groups, every metric of scripted
runs checked against values worked out by hand, and what each check concludes."""

import math

import numpy as np
import pytest

from study_query_dagster.db import GroupRepository, SemanticClusterRepository
from study_query_dagster.providers.embeddings import OfflineEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService
from study_query_dagster.services.variation import (
    EmbeddingServiceEmbedder,
    IncompleteClasses,
    VariationConfig,
    VariationService,
    run_scope,
)
from study_query_dagster.services.variation import measures as m
from study_query_dagster.services.variation.checks import VariationChecks

from .support import FAIL, REFUSE, make_run, prompt_set_content, split

SE_7_3 = 0.6108643
RIVERS = [
    "Snowy",
    "Darling",
    "Murrumbidgee",
    "Lachlan",
    "Cooper",
    "Flinders",
    "Gilbert",
    "Mitchell",
    "Diamantina",
    "Burdekin",
]
CONTENT = prompt_set_content(prompts=("capital", "river"), temperatures={"a": 0})
RUN_1 = {
    ("capital", "a"): ["Canberra"] * 10,
    ("capital", "b"): split(("Canberra", 7), ("Sydney", 3)),
    ("river", "a"): RIVERS,
    ("river", "b"): ["Murray"] * 8 + [REFUSE, FAIL],
}


@pytest.fixture
def embedder(db):
    service = EmbeddingService(db, OfflineEmbeddingProvider(), truncate=True)
    return EmbeddingServiceEmbedder(service)


def scope_of(db, group_id):
    with db.session_scope() as session:
        return run_scope(GroupRepository(session).get_group(group_id))


def cells(report_rows, *columns):
    return {(r["prompt"], r["target"]): tuple(r.get(c) for c in columns) for r in report_rows}


async def hash_cosine(a, b):
    result = await OfflineEmbeddingProvider().embed([a, b])
    x, y = np.asarray(result.array, dtype=np.float64)
    return float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))


async def test_classes_dispersion_and_checks(db, embedder):
    scope = scope_of(db, make_run(db, "set/run-1", CONTENT, RUN_1))
    service = VariationService.for_config(db, VariationConfig(), embedder)

    classes = await service.equivalence_classes(scope)
    assert cells(classes.rows, "n", "classes", "refusals", "excluded", "modal_answer") == {
        ("capital", "a"): (10, 1, 0, 0, "Canberra"),
        ("capital", "b"): (10, 2, 0, 0, "Canberra"),
        ("river", "a"): (10, 10, 0, 0, " | ".join(RIVERS)),
        ("river", "b"): (9, 2, 1, 1, "Murray"),
    }
    assert classes.groups == {"kept": 0, "removed": 0, "created": 15}
    assert (await service.equivalence_classes(scope)).groups == {
        "kept": 15,
        "removed": 0,
        "created": 0,
    }

    report = await service.dispersion(scope)
    se = cells(report.rows, m.SEMANTIC_ENTROPY, m.NUM_CLASSES, "n")
    assert se[("capital", "a")] == (0.0, 1, 10)
    assert se[("capital", "b")][0] == pytest.approx(SE_7_3, abs=5e-8)
    assert se[("river", "a")][0] == pytest.approx(math.log(10), abs=1e-12)
    p = 8 / 9  # Murray 8, refused 1 (the rate-limited item is excluded)
    assert se[("river", "b")] == (
        pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p))),
        2,
        9,
    )

    c = await hash_cosine("Canberra", "Sydney")
    spread = cells(report.rows, m.SEU, m.VENDI, m.REFUSAL_SHARE, m.MEAN_LENGTH, m.PARSED_AGREEMENT)
    assert spread[("capital", "a")] == (
        pytest.approx(0.0, abs=1e-6),
        pytest.approx(1.0, abs=1e-6),
        0.0,
        8.0,
        1.0,
    )
    # 21 pairs within Canberra, 3 within Sydney, 21 across: SEU = 21 (1 - c) / 45; G/n has the
    # eigenvalues of [[0.7, c sqrt(0.21)], [c sqrt(0.21), 0.3]].
    eig = np.linalg.eigvalsh([[0.7, c * math.sqrt(0.21)], [c * math.sqrt(0.21), 0.3]])
    assert spread[("capital", "b")][0] == pytest.approx(21 * (1 - c) / 45, abs=1e-6)
    assert spread[("capital", "b")][1] == pytest.approx(
        math.exp(-np.sum(eig * np.log(eig))), abs=1e-5
    )
    assert spread[("river", "b")][2:] == (pytest.approx(1 / 9), 6.0, 0.0)
    assert report.per_target()["a"]["mean_semantic_entropy"] == pytest.approx(math.log(10) / 2)
    assert report.share_zero_entropy == 0.25
    assert report.written == 4 * len(m.CELL_METRICS)  # every metric of every cell

    checks = VariationChecks(db, scope, service.strategy.key)
    assert checks.every_answer_in_one_class().passed
    assert checks.dispersion_in_bounds().passed
    unstable = checks.deterministic_targets_stable()
    assert not unstable.passed
    assert [(r["prompt"], r["target"], r["classes"], r["n"]) for r in unstable.rows] == [
        ("river", "a", 10, 10)
    ]
    assert checks.enough_samples_for_entropy().passed


async def test_agreement_between_targets(db):
    scope = scope_of(db, make_run(db, "set/run-1", CONTENT, RUN_1))
    service = VariationService.for_config(db, VariationConfig())
    await service.equivalence_classes(scope)
    report = await service.agreement(scope)
    pair = cells(report.rows, "other", m.JSD, m.CROSS_AGREEMENT, m.MODAL_AGREEMENT, "n", "n_other")
    assert pair[("capital", "a")] == (
        "b",
        pytest.approx(m.metrics.jsd([1, 0], [0.7, 0.3])),
        pytest.approx(0.7),
        1.0,
        10,
        10,
    )
    assert pair[("river", "a")] == ("b", pytest.approx(1.0), 0.0, 0.0, 10, 9)
    assert report.disagreements == ["river"]
    assert report.modal_answers["capital"] == {"a": "Canberra", "b": "Canberra"}

    outcome = VariationChecks(db, scope, service.strategy.key).targets_agree_on_modal_answer()
    assert not outcome.passed
    assert outcome.rows == [{"prompt": "river", "a": " | ".join(RIVERS), "b": "Murray"}]


async def test_drift_between_two_runs(db, embedder):
    first = make_run(db, "set/run-1", CONTENT, RUN_1)
    second = make_run(db, "set/run-2", CONTENT, {**RUN_1, ("capital", "a"): ["Sydney"] * 10})
    service = VariationService.for_config(db, VariationConfig(), embedder)
    for group_id in (first, second):
        scope = scope_of(db, group_id)
        await service.equivalence_classes(scope)
        await service.dispersion(scope)

    assert (await service.drift(scope_of(db, first))).baseline is None  # no earlier run
    report = await service.drift(scope_of(db, second))
    assert report.baseline == "set/run-1"
    rows = cells(
        report.rows,
        m.DRIFT_JSD,
        m.MODAL_CHANGED,
        m.DELTA_SEMANTIC_ENTROPY,
        m.DELTA_MEAN_LENGTH,
        m.DRIFT_P_VALUE,
        "before",
        "after",
    )
    assert rows[("capital", "a")][:4] == (pytest.approx(1.0), 1.0, 0.0, -2.0)
    assert rows[("capital", "a")][4] <= 0.002
    assert rows[("capital", "a")][5:] == ("Canberra", "Sydney")
    assert rows[("capital", "b")][:5] == (0.0, 0.0, 0.0, 0.0, 1.0)
    assert rows[("river", "a")][:5] == (0.0, 0.0, 0.0, 0.0, 1.0)
    shift = cells(report.rows, m.CENTROID_SHIFT)
    assert shift[("capital", "a")][0] == pytest.approx(
        1 - await hash_cosine("Canberra", "Sydney"), abs=1e-6
    )
    assert shift[("capital", "b")][0] == pytest.approx(0.0, abs=1e-6)
    assert report.most_drifting() == [("capital", "a")]
    assert report.shares[("capital", "a")] == [("Sydney", 0.0, 1.0), ("Canberra", 1.0, 0.0)]
    assert [v for _, v in report.history] == [pytest.approx(0.25)]

    outcome = VariationChecks(db, scope_of(db, second), service.strategy.key).no_significant_drift()
    assert not outcome.passed
    assert [(r["prompt"], r["target"], r["before"], r["after"]) for r in outcome.rows] == [
        ("capital", "a", "Canberra", "Sydney")
    ]
    assert "too small" not in outcome.description


async def test_drift_says_when_samples_are_too_small_to_test(db):
    content = prompt_set_content(targets=("a",), samples=3)
    make_run(db, "set/run-1", content, {("capital", "a"): ["Canberra"] * 3})
    second = make_run(db, "set/run-2", content, {("capital", "a"): ["Sydney"] * 3})
    service = VariationService.for_config(db, VariationConfig())
    scope = scope_of(db, second)
    await service.equivalence_classes(scope)
    report = await service.drift(scope)
    assert report.rows[0][m.DRIFT_JSD] == pytest.approx(1.0)
    assert report.rows[0]["testable"] is False
    outcome = VariationChecks(db, scope, "exact").no_significant_drift()
    assert outcome.passed  # p >= 0.1 whatever happens: not significant, and it says so
    assert "1 cell too small to test" in outcome.description
    assert "capital/a (n = 3 and 3)" in outcome.description


async def test_stale_classes_are_caught(db):
    group_id = make_run(db, "set/run-1", CONTENT, RUN_1)
    scope = scope_of(db, group_id)
    service = VariationService.for_config(db, VariationConfig())
    await service.equivalence_classes(scope)
    # A resumed execution adds an answer after the classes were stored.
    with db.session_scope() as session:
        from study_query_dagster.db import RawCallRepository

        call_id = RawCallRepository(session).insert_raw_call(
            provider="offline",
            model="offline-echo",
            status="success",
            request_json={"messages": []},
            response_json={"text": "Canberra"},
            metadata_json={"prompt_id": "capital", "target": "a", "sample_index": 10},
        )
        GroupRepository(session).add_group_members(group_id, [call_id])
    outcome = VariationChecks(db, scope, "exact").every_answer_in_one_class()
    assert not outcome.passed
    assert outcome.rows == [
        {"prompt_id": "capital", "target": "a", "call_id": call_id, "problem": "in no class"}
    ]
    with pytest.raises(IncompleteClasses, match="materialize answer_equivalence_classes"):
        await service.dispersion(scope)
    await service.equivalence_classes(scope)
    assert VariationChecks(db, scope, "exact").every_answer_in_one_class().passed
    with db.session_scope() as session:
        sizes = sorted(
            len(c.call_ids)
            for c in SemanticClusterRepository(session).clusters_of_run(group_id)
            if c.metadata["prompt_id"] == "capital"
        )
    assert sizes == [3, 7, 11]
