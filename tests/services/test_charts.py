"""Charts: PNG bytes that decode to a real picture, embedded as a markdown data URI."""

from __future__ import annotations

import base64
import io
import re
from datetime import datetime, timezone

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from study_query_dagster.services.charts import (
    DPI,
    Chart,
    bar_chart,
    charts_markdown,
    cost_chart,
    latency_chart,
    markdown_image,
    model_labels,
    outcomes_chart,
    recent_latency_chart,
    time_series_chart,
    time_series_charts,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode(png: bytes) -> np.ndarray:
    assert png.startswith(PNG_SIGNATURE)
    return mpimg.imread(io.BytesIO(png), format="png")


def drawn_fraction(image: np.ndarray) -> float:
    """Share of pixels that are not the white background."""
    return float((image[..., :3] < 0.95).any(axis=-1).mean())


COMPARISON = pd.DataFrame(
    {
        "provider": ["openai", "hyperbolic", "azure_openai_gpt-4"],
        "model": ["gpt-4o-mini", "meta-llama/Meta-Llama-3.1-8B-Instruct", None],
        "avg_latency_ms": [250.0, 900.0, 1200.0],
        "p95_latency_ms": [400.0, 1500.0, np.nan],
        "estimated_cost_usd": [0.0125, np.nan, np.nan],
    }
)


def test_markdown_image_is_a_data_uri_of_the_png():
    png = bar_chart(["a", "b"], {"latency": [1.0, 2.0]}, title="t", ylabel="ms")
    text = markdown_image(png, alt="latency [ms]")
    match = re.fullmatch(r"!\[(.*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert match and match.group(1) == "latency (ms)"
    assert base64.b64decode(match.group(2)) == png


def test_latency_and_cost_charts_draw_the_data():
    labels = model_labels(COMPARISON)
    latency = latency_chart(labels, COMPARISON["avg_latency_ms"], COMPARISON["p95_latency_ms"])
    image = decode(latency.png)
    assert image.shape[:2] == (int(4.5 * DPI), 8 * DPI)
    assert drawn_fraction(image) > 0.02
    cost = cost_chart(labels, COMPARISON["estimated_cost_usd"], per="model")
    assert cost.title == "Estimated cost per model" and cost.reason is None
    # the picture changes when a known cost changes: the data is drawn
    other = cost_chart(labels, [0.0025, None, None], per="model")
    assert not np.array_equal(decode(other.png), decode(cost.png))


def test_no_empty_chart_frames_but_the_reason():
    labels = ["echo-cold", "echo-warm"]
    unpriced = cost_chart(labels, [None, None])
    free = cost_chart(labels, [0.0, 0.0])
    no_latency = latency_chart(labels, [None, None], [np.nan, np.nan])
    for chart, reason in (
        (unpriced, "no call has a known price"),
        (free, "every priced call was free"),
        (no_latency, "no successful call with a latency yet"),
    ):
        assert chart.png is None and reason in chart.reason
        assert chart.markdown() == f"**{chart.title}**: _{chart.reason}_"
    markdown = charts_markdown(
        [free, Chart("x", bar_chart(["a"], {"v": [1]}, title="x", ylabel="y"))]
    )
    assert "every priced call was free" in markdown and "data:image/png;base64," in markdown


def test_a_single_time_bucket_is_not_drawn_on_a_time_axis():
    one_day = pd.DataFrame(
        {
            "bucket": pd.to_datetime([datetime(2026, 1, 1, tzinfo=timezone.utc)] * 2, utc=True),
            "provider": ["openai", "offline"],
            "calls": [3, 4],
        }
    )
    [chart] = time_series_charts(one_day, ["calls"], "day")
    assert chart.png is None and "one day" in chart.reason
    two_days = pd.concat([one_day, one_day.assign(bucket=one_day["bucket"] + pd.Timedelta("1D"))])
    [drawn] = time_series_charts(two_days, ["calls"], "day")
    assert drawn.title == "calls per day and provider" and drawn.png is not None


def test_recent_latency_chart_is_in_call_order_and_says_so():
    recent = pd.DataFrame(
        {
            "id": [3, 1, 2],  # newest first, as the service returns them; ids out of time order
            "created_at": pd.to_datetime(
                [datetime(2026, 1, 1, 10, m, tzinfo=timezone.utc) for m in (3, 2, 1)], utc=True
            ),
            "latency_ms": [30.0, 10.0, 20.0],
        }
    )
    chart = recent_latency_chart(recent)
    assert chart.title == "Latency of the newest calls, oldest first (x: call id)"
    # bars in time order: ids 2, 1, 3 -> the same picture as drawing them so by hand
    expected = bar_chart(["2", "1", "3"], {"latency_ms": [20.0, 10.0, 30.0]}, title=chart.title,
                         ylabel="ms")  # fmt: skip
    assert np.array_equal(decode(chart.png), decode(expected))
    assert recent_latency_chart(recent.assign(latency_ms=np.nan)).png is None


def test_outcomes_chart_per_model():
    per_model = pd.DataFrame({"provider": ["offline"], "model": ["offline-echo"], "calls": [5],
                              "success": [4]})  # fmt: skip
    assert decode(outcomes_chart(per_model).png).shape[:2] == (int(4.5 * DPI), 8 * DPI)
    assert outcomes_chart(per_model.iloc[0:0]).reason == "no calls yet"


def test_unknown_values_draw_no_bar():
    # Same chart except for one value: unknown (NaN) must look different from zero... and
    # from a real bar. An "n/a" label is drawn instead of a bar.
    known = decode(bar_chart(["a", "b"], {"cost": [1.0, 0.5]}, title="c", ylabel="USD"))
    unknown = decode(bar_chart(["a", "b"], {"cost": [1.0, None]}, title="c", ylabel="USD"))
    zero = decode(bar_chart(["a", "b"], {"cost": [1.0, 0.0]}, title="c", ylabel="USD"))
    assert drawn_fraction(known) > drawn_fraction(unknown)
    assert not np.array_equal(unknown, zero)


def test_time_series_chart_one_line_per_provider():
    buckets = pd.to_datetime(
        [datetime(2026, 1, d, tzinfo=timezone.utc) for d in (1, 1, 2, 2, 3)], utc=True
    )
    series = pd.DataFrame(
        {
            "bucket": buckets,
            "provider": ["openai", "hyperbolic", "openai", "hyperbolic", "openai"],
            "calls": [5, 1, 7, 2, 3],
            "avg_latency_ms": [10.0, np.nan, 12.0, 30.0, 11.0],
        }
    )
    image = decode(time_series_chart(series, "calls"))
    assert image.shape[:2] == (int(4.5 * DPI), 8 * DPI)
    assert drawn_fraction(image) > 0.02
    assert not np.array_equal(image, decode(time_series_chart(series, "avg_latency_ms")))
    with pytest.raises(ValueError, match="time series has no column 'cost'"):
        time_series_chart(series, "cost")


def test_empty_frames_still_render():
    for png in (
        time_series_chart(pd.DataFrame(columns=["bucket", "provider", "calls"])),
        bar_chart([], {}, title="nothing", ylabel="x"),
    ):
        assert drawn_fraction(decode(png)) > 0.0  # title and "no data"


def test_model_labels():
    assert model_labels(COMPARISON) == [
        "openai/gpt-4o-mini",
        "hyperbolic/meta-llama/Meta-Llama-3.1-8B-Instruct",
        "azure_openai_gpt-4",
    ]
