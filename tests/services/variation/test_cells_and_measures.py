"""From captured calls to cells, classes and metric values, with known answers."""

import math

import pytest

from study_query_dagster.db import StoredCluster
from study_query_dagster.services.variation import measures as m
from study_query_dagster.services.variation.cells import REFUSED, cells_from_calls
from study_query_dagster.services.variation.classes import classify
from study_query_dagster.services.variation.stored import (
    class_problems,
    classified_from_stored,
    cluster_specs,
)
from study_query_dagster.services.variation.strategies import ExactStrategy

from .support import call

EXACT = ExactStrategy()


def split_cell(prompt="capital", target="t", answers=(("Canberra", 7), ("Sydney", 3)), start=1):
    calls, sample = [], 0
    for text, count in answers:
        for _ in range(count):
            calls.append(call(start + sample, prompt, target, sample, text))
            sample += 1
    return calls


def values_by_metric(values):
    return {v.metric: v for v in values}


def test_each_item_counts_once_by_its_final_outcome():
    calls = [
        call(1, "p", "t", 0, status="failed", error="rate_limit"),
        call(2, "p", "t", 0, "Canberra"),  # retried to success
        call(3, "p", "t", 1, status="failed", error="content_filter"),  # refused
        call(4, "p", "t", 2, status="timeout", error="timeout"),  # transient: excluded
        call(5, "p", "t", 3, "I cannot help with that", finish="content_filter"),  # refused
        call(6, "p", "t", 4, "Canberra"),
        call(7, "p", "t", 4, "Sydney"),  # a second success of one item: the first counts
        call(8, "q", "t", 0, "Paris"),
        call(9, "z", "t", 0, status="success"),  # no text: an empty answer
    ]
    calls.append(call(10, None, None, 0, "not from a prompt-set run"))
    cells = {c.key: c for c in cells_from_calls(reversed(calls))}
    cell = cells[("p", "t")]
    assert [(a.call_id, a.sample_index, a.refused) for a in cell.answers] == [
        (2, 0, False),
        (3, 1, True),
        (5, 3, True),
        (6, 4, False),
    ]
    assert cell.n == 4 and cell.refusals == 2 and cell.excluded == 1
    assert cell.texts == ["Canberra", "Canberra"]
    assert cells[("z", "t")].texts == [""]
    assert set(cells) == {("p", "t"), ("q", "t"), ("z", "t")}


async def test_cell_metrics_of_a_seven_three_split():
    (cell,) = cells_from_calls(split_cell())
    (classified,) = await classify([cell], EXACT)
    values = values_by_metric(m.cell_metrics(classified))
    assert values[m.SEMANTIC_ENTROPY].value == pytest.approx(0.6108643, abs=5e-8)
    assert values[m.NORMALIZED_SEMANTIC_ENTROPY].value == pytest.approx(0.6108643 / math.log(10))
    assert values[m.NUM_CLASSES].value == 2
    assert values[m.MODAL_SHARE].value == 0.7
    assert values[m.RAW_AGREEMENT].value == 0.0
    assert values[m.PARSED_AGREEMENT].value == 0.0
    assert values[m.REFUSAL_SHARE].value == 0.0
    assert values[m.MEAN_LENGTH].value == pytest.approx((7 * 8 + 3 * 6) / 10)
    assert {v.n for v in values.values()} == {10}
    assert m.SEU not in values and m.VENDI not in values  # no vectors given
    assert classified.modal_answer() == "Canberra"


async def test_refusals_are_one_more_class():
    calls = split_cell(answers=(("Canberra", 8),))
    calls += [
        call(20 + i, "capital", "t", 8 + i, status="failed", error="content_filter")
        for i in range(2)
    ]
    (cell,) = cells_from_calls(calls)
    (classified,) = await classify([cell], EXACT)
    values = values_by_metric(m.cell_metrics(classified))
    assert values[m.SEMANTIC_ENTROPY].value == pytest.approx(
        -(0.8 * math.log(0.8) + 0.2 * math.log(0.2))
    )
    assert values[m.NUM_CLASSES].value == 2
    assert values[m.REFUSAL_SHARE].value == 0.2
    assert values[m.MEAN_LENGTH].n == 8  # lengths of the answers only
    assert classified.class_names == ("Canberra", REFUSED)


async def test_agreement_on_a_pooled_partition():
    a = split_cell(target="a", answers=(("Canberra", 10),))
    b = split_cell(target="b", answers=(("canberra.", 5), ("Sydney", 5)), start=100)
    cells = cells_from_calls(a + b)
    pooled = await classify(cells, EXACT)
    assert pooled[0].counts() == [10, 0] and pooled[1].counts() == [5, 5]
    values = values_by_metric(m.pair_metrics(*pooled))
    # P_a = (1, 0), P_b = (1/2, 1/2): the JSD example.
    assert values[m.JSD].value == pytest.approx(0.3113, abs=5e-5)
    assert values[m.CROSS_AGREEMENT].value == 0.5
    assert values[m.MODAL_AGREEMENT].value == 1.0  # b's tie includes Canberra
    assert (values[m.JSD].target, values[m.JSD].other) == ("a", "b")
    assert (values[m.JSD].n, values[m.JSD].n_other) == (10, 10)


async def test_drift_of_a_cell():
    before = cells_from_calls(split_cell(answers=(("Canberra", 10),)))[0]
    after = cells_from_calls(split_cell(answers=(("Sydney", 10),), start=50))[0]
    now, then = await classify([after, before], EXACT)
    outcome = m.drift_metrics(now, then, "set/run-1", permutations=999, seed=0)
    values = values_by_metric(outcome.values)
    assert values[m.DRIFT_JSD].value == pytest.approx(1.0)
    assert values[m.MODAL_CHANGED].value == 1.0
    assert values[m.DELTA_SEMANTIC_ENTROPY].value == 0.0
    assert values[m.DELTA_MEAN_LENGTH].value == pytest.approx(6 - 8)
    assert values[m.DRIFT_P_VALUE].value <= 0.002
    assert values[m.DRIFT_JSD].other == "set/run-1"
    assert outcome.test.testable(m.DRIFT_ALPHA)
    assert m.CENTROID_SHIFT not in values  # no embeddings given


async def test_stored_classes_round_trip_and_problems():
    cells = cells_from_calls(
        split_cell() + split_cell(target="u", answers=(("Perth", 4),), start=40)
    )
    classified = [(await classify([c], EXACT))[0] for c in cells]
    clusters = []
    for c in classified:
        for spec in cluster_specs(c, "exact", {}):
            clusters.append(
                StoredCluster(
                    len(clusters) + 1,
                    f"g{len(clusters)}",
                    spec.metadata,
                    list(spec.call_ids),
                    spec.representative,
                )
            )
    assert class_problems(cells, clusters) == []
    rebuilt = classified_from_stored(cells, clusters)
    assert [r.labels for r in rebuilt] == [c.labels for c in classified]
    assert rebuilt[0].class_names == ("Canberra", "Sydney")
    assert rebuilt[0].representatives == (0, 7)

    clusters[1].call_ids.append(3)  # call 3 now in both classes of its cell
    clusters[2].call_ids.pop()  # call 43 (the last Perth) in none
    problems = {(p.call_id, p.problem) for p in class_problems(cells, clusters)}
    assert problems == {(3, "in 2 classes"), (43, "in no class")}
    with pytest.raises(LookupError, match="materialize answer_equivalence_classes"):
        classified_from_stored(cells, clusters)
