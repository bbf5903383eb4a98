"""Variation charts decode to real pictures; empty inputs still render ("no data")."""

from datetime import datetime, timedelta, timezone

from study_query_dagster.services.variation import charts
from study_query_dagster.services.variation import measures as m
from tests.services.test_charts import decode, drawn_fraction

ROWS = [
    {"prompt": "capital", "target": "a", m.SEMANTIC_ENTROPY: 0.0, m.NUM_CLASSES: 1, "n": 10},
    {"prompt": "capital", "target": "b", m.SEMANTIC_ENTROPY: 0.61, m.NUM_CLASSES: 2, "n": 10},
    {"prompt": "river", "target": "a", m.SEMANTIC_ENTROPY: 2.3, m.NUM_CLASSES: 10, "n": 10},
    {"prompt": "river", "target": "b", "n": 0},  # no answers: a blank cell
]


def test_heatmap():
    image = decode(charts.entropy_heatmap(ROWS, ["capital", "river"], ["a", "b"]))
    assert drawn_fraction(image) > 0.1
    assert drawn_fraction(decode(charts.entropy_heatmap([], ["p"], ["t"]))) < 0.1


def test_target_summary():
    png = charts.target_summary_chart(
        {
            "a": {"mean_semantic_entropy": 1.15, "parsed_agreement": 0.5},
            "b": {"mean_semantic_entropy": None, "parsed_agreement": 0.0},
        }
    )
    assert drawn_fraction(decode(png)) > 0.02


def test_drift_charts():
    shares = {("capital", "a"): [(f"answer {k}", 1.0 if k == 0 else 0.0, 0.125) for k in range(8)]}
    png = charts.drift_shares_chart(shares, [("capital", "a")], "set/run-1")
    assert drawn_fraction(decode(png)) > 0.1
    assert decode(charts.drift_shares_chart({}, [], "x")).size
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    history = [(start + timedelta(days=i), v) for i, v in enumerate([0.0, 0.4, 0.1])]
    assert drawn_fraction(decode(charts.drift_history_chart(history))) > 0.02
    assert decode(charts.drift_history_chart([])).size
