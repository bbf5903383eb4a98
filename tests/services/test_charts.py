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
    bar_chart,
    markdown_image,
    model_labels,
    provider_comparison_chart,
    time_series_chart,
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


def test_provider_comparison_chart_decodes_to_two_panels():
    png = provider_comparison_chart(COMPARISON)
    image = decode(png)
    assert image.shape[:2] == (int(4.5 * DPI), 10 * DPI)
    assert drawn_fraction(image) > 0.02
    # the cost panel (right half) differs when a known cost changes: the data is drawn
    other = COMPARISON.assign(estimated_cost_usd=[0.0025, np.nan, np.nan])
    right = slice(image.shape[1] // 2, None)
    assert not np.array_equal(decode(provider_comparison_chart(other))[:, right], image[:, right])


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
    empty = COMPARISON.iloc[0:0]
    for png in (
        provider_comparison_chart(empty),
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
