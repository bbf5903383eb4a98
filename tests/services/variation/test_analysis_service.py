"""Calibration and answer clusters as the services compute and store them, on SQLite and
PostgreSQL: scripted runs with reference answers whose every number is worked out by hand,
and answers with known embeddings whose clusters are known."""

import math

import pytest

from study_query_dagster.db import (
    ANSWER_CLUSTER,
    AnswerClusterRepository,
    GroupRepository,
    RawCallRepository,
    VariationResultRepository,
)
from study_query_dagster.providers.offline import OfflineProvider
from study_query_dagster.services.inference import InferenceService
from study_query_dagster.services.prompt_sets.variation import ClusterConfig
from study_query_dagster.services.variation import VariationConfig, VariationService, run_scope
from study_query_dagster.services.variation.answer_clusters import (
    SUMMARY_GROUP,
    AnswerClusterService,
    ClusterSummarizer,
)
from study_query_dagster.services.variation.checks import VariationChecks

from .support import FAIL, REFUSE, TableEmbedder, make_run, prompt_set_content, split


def entropy(*counts):
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def scope_of(db, group_id):
    with db.session_scope() as session:
        return run_scope(GroupRepository(session).get_group(group_id))


REFERENCES = {"capital": "Canberra", "river": "Murray", "planet": "Jupiter"}
CONTENT = prompt_set_content(
    prompts=("capital", "river", "planet"), references=REFERENCES, temperatures={"a": 0.5}
)
RUN = {
    ("capital", "a"): ["Canberra"] * 10,  # right, SE 0
    ("capital", "b"): split(("Canberra", 7), ("Sydney", 3)),  # right, SE 0.611
    ("river", "a"): ["Murray"] * 8 + [REFUSE, FAIL],  # right, SE of 8/1
    ("river", "b"): [REFUSE] * 6 + ["The Murray"] * 4,  # modal class `refused`: wrong
    ("planet", "a"): ["Saturn"] * 10,  # confidently wrong, SE 0
    ("planet", "b"): split(("Jupiter", 5), ("Saturn", 3), ("Mars", 2)),  # right, SE 1.030
}


async def calibrate(db, run):
    scope = scope_of(db, make_run(db, "set/run-1", CONTENT, run))
    service = VariationService.for_config(db, VariationConfig())
    await service.equivalence_classes(scope)
    await service.dispersion(scope)
    return scope, service, await service.calibration(scope)


async def test_calibration_by_hand(db):
    scope, service, report = await calibrate(db, RUN)
    cells = {(g.prompt_id, g.target): g for g in report.graded}
    assert {k: (g.correct, g.answer) for k, g in cells.items()} == {
        ("capital", "a"): (True, "Canberra"),
        ("capital", "b"): (True, "Canberra"),
        ("river", "a"): (True, "Murray"),
        ("river", "b"): (False, "refused"),
        ("planet", "a"): (False, "Saturn"),
        ("planet", "b"): (True, "Jupiter"),
    }
    assert cells["river", "a"].answer_accuracy == 8 / 9  # the refusal is wrong
    assert cells["river", "b"].answer_accuracy == 0.4  # "The Murray" is exactly "Murray"
    assert cells["capital", "b"].scores == {
        "semantic_entropy": pytest.approx(entropy(7, 3), abs=1e-15),
        "one_minus_modal_share": pytest.approx(0.3),
    }
    # a: right SE 0 and 0.349, wrong 0 (a tie, half a pair): 0.5 / 2. b: right 0.611 and
    # 1.030, wrong 0.673: 1 / 2. Every target: wrong 0 ties one right 0 (0.5), wrong 0.673
    # beats three (3): 3.5 / 8. 1 - modal share orders the cells the same way.
    by_target = {r["target"]: r for r in report.rows}
    for score in ("semantic_entropy", "one_minus_modal_share"):
        assert by_target["a"][f"auroc_{score}"] == 0.25
        assert by_target["b"][f"auroc_{score}"] == 0.5
        assert by_target["*"][f"auroc_{score}"] == 0.4375
    assert [by_target[t]["accuracy"] for t in ("a", "b", "*")] == pytest.approx([2 / 3] * 3)
    # Most certain half of a's 3 cells (2): capital (0, right), planet (0, wrong).
    assert by_target["a"]["accuracy_at_50_semantic_entropy"] == 0.5
    # Every target, 3 of 6: capital/a (0), planet/a (0, wrong), river/a (0.349).
    assert by_target["*"]["accuracy_at_50_semantic_entropy"] == pytest.approx(2 / 3)
    assert by_target["*"]["accuracy_at_80_semantic_entropy"] == 0.6  # 5 of 6, one wrong more
    assert "auroc_seu" not in by_target["*"]  # no embedder, no SEU
    assert set(report.outcome.curves) == {"a", "b", "*"}

    with db.session_scope() as session:
        rows = VariationResultRepository(session).latest(scope.run_group_id, "exact")
        stored = {(r.prompt_id, r.target, r.metric): (r.value, r.n) for r in rows}
        settings = rows[-1].settings_json
    assert stored["*", "*", "auroc_semantic_entropy"] == (0.4375, 6)
    assert stored["*", "a", "accuracy"] == (pytest.approx(2 / 3), 3)
    assert stored["river", "b", "correct"] == (0.0, 10)
    assert stored["river", "a", "answer_accuracy"] == (pytest.approx(8 / 9), 9)
    assert settings == {"correctness": "exact"}
    outcome = VariationChecks(db, scope, service.strategy.key).calibration_has_both_classes()
    assert outcome.passed and outcome.description == "every target (2) has right and wrong cells"


async def test_one_class_targets_are_flagged(db):
    run = dict(RUN)
    run["planet", "a"] = ["Jupiter"] * 10  # a: all right now
    run["river", "b"] = ["Murray"] * 10  # b: all right too
    run["capital", "b"] = ["Perth"] * 10  # ... but for this one
    scope, service, report = await calibrate(db, run)
    assert report.value("a", "auroc_semantic_entropy") is None
    outcome = VariationChecks(db, scope, service.strategy.key).calibration_has_both_classes()
    assert not outcome.passed
    assert outcome.rows == [
        {"target": "a", "cells": 3, "right": 3, "wrong": 0, "why": "all right"},
    ]
    assert "AUROC is undefined for 1 of 2 targets" in outcome.description


async def test_calibration_needs_dispersion_first_and_references_to_do_anything(db):
    scope = scope_of(db, make_run(db, "set/run-1", CONTENT, RUN))
    service = VariationService.for_config(db, VariationConfig())
    await service.equivalence_classes(scope)
    with pytest.raises(LookupError, match="materialize sample_dispersion"):
        await service.calibration(scope)

    plain = prompt_set_content(prompts=("capital",), temperatures={"a": 0.5})
    scope = scope_of(db, make_run(db, "plain/run-1", plain, {("capital", "a"): ["x"] * 10}))
    await service.equivalence_classes(scope)
    report = await service.calibration(scope)
    assert (report.graded, report.rows, report.written) == ([], [], 0)
    outcome = VariationChecks(db, scope, "exact").calibration_has_both_classes()
    assert outcome.passed and "no prompt has reference answers" in outcome.description


AXES = {"Canberra": [1, 0, 0], "Sydney": [0, 1, 0], "Melbourne": [0, 0, 1]}


async def test_answer_clusters_over_a_window_of_runs(db):
    content = prompt_set_content(embed=True, temperatures={"a": 0.5})
    first = make_run(
        db,
        "set/run-1",
        content,
        {
            ("capital", "a"): split(("Canberra", 6), ("Sydney", 4)),
            ("capital", "b"): split(("Melbourne", 5), ("Canberra", 4)) + [REFUSE],
        },
    )
    second = make_run(db, "set/run-2", content, {("capital", "a"): ["Sydney"] * 10})
    config = ClusterConfig(k_max=5, window=2)

    attempts = iter(range(1, 100))

    async def cluster():
        chat = InferenceService(OfflineProvider(), db, max_retry_after=1.0)
        with db.session_scope() as session:
            # a name of its own per call (an object's repr can repeat once it is collected)
            group = GroupRepository(session).create_group(SUMMARY_GROUP, f"s-{next(attempts)}")
        summarizer = ClusterSummarizer(chat, {}, group)
        service = AnswerClusterService(db, TableEmbedder(AXES), config, summarizer)
        report = await service.cluster(scope_of(db, second))
        await chat.aclose()
        return report, chat.provider_calls, group

    report, calls, summary_group = await cluster()
    assert report.runs == ["set/run-1", "set/run-2"]
    assert len(report.points) == 29  # the refusal is not an answer
    found = report.clustering
    assert (found.k, found.chosen_by, found.silhouette) == (3, "silhouette", 1.0)
    assert found.stability_ari == 1.0
    assert [(r["cluster"], r["size"], r["targets"]) for r in report.rows] == [
        (0, 10, "a 6, b 4"),
        (1, 14, "a 14"),
        (2, 5, "b 5"),
    ]
    assert calls == 3  # one summary per cluster

    with db.session_scope() as session:
        metadata, clusters = AnswerClusterRepository(session).clustering(second, report.key)
        calls_of = {c.id: c for c in RawCallRepository(session).calls_in_group(first)}
        summaries = RawCallRepository(session).calls_in_group(summary_group)
    assert metadata["method"] == "kmeans" and metadata["version"] == "1"
    assert metadata["params"] == {
        "method": "kmeans",
        "window": 2,
        "seed": 0,
        "k_min": 2,
        "k_max": 5,
        "k_rule": "silhouette",
        "restarts": 5,
        "embedder": "table",
        "model": "table-v1",
        "version": "1",
    }
    # K is swept from 1 up to the three distinct answers (k_max 5 is out of reach).
    assert [p["k"] for p in metadata["sweep"]] == [1, 2, 3]
    assert metadata["k"] == 3 and metadata["answers"] == 29
    canberra = clusters[0]
    assert canberra.metadata["answer"] == "Canberra" and canberra.metadata["size"] == 10
    # Identical vectors: the representative is the cluster's first answer, a call of run 1.
    assert canberra.representative == canberra.call_ids[0]
    assert calls_of[canberra.representative].response_json["text"] == "Canberra"
    assert canberra.metadata["summary"].startswith("[offline] reply")
    assert len(summaries) == 3
    assert "- Canberra" in summaries[0].request_json["messages"][0]["content"]

    # Again: the same clusters replace the old groups, the summaries come from the cache.
    again, calls, _ = await cluster()
    assert calls == 0 and again.rows == report.rows
    with db.session_scope() as session:
        assert GroupRepository(session).count_groups(ANSWER_CLUSTER, f"{second}/") == 3
        results = VariationResultRepository(session).latest(second, report.key)
    assert {r.metric: r.value for r in results} == {
        "clusters_k": 3.0,
        "clusters_silhouette": 1.0,
        "clusters_stability_ari": 1.0,
    }
