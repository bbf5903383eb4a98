"""Charts for analytics metadata: matplotlib (Agg, no display) -> PNG bytes -> markdown image.

Dagster renders markdown metadata, and a PNG inlined as a `data:` URI needs no file server, so
`markdown_image(provider_comparison_chart(df))` is all an asset attaches. Figures are built with
the object API (`Figure` + `FigureCanvasAgg`), never pyplot, so no global state is shared
between threads or runs.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
UNKNOWN_LABEL = "n/a"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def markdown_image(png: bytes, alt: str = "chart") -> str:
    """A markdown image whose source is the PNG itself (a data URI)."""
    alt = alt.replace("[", "(").replace("]", ")")
    return f"![{alt}]({png_data_uri(png)})"


def render_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def no_data(figure: Figure, ax, title: str) -> None:
    ax.set_title(title)
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def bar_chart(
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    ylabel: str,
    size: tuple[float, float] = (8, 4.5),
) -> bytes:
    """Grouped bars, one group per label and one bar per series. A missing value (None/NaN)
    draws no bar but an "n/a" mark, so an unknown figure is never shown as zero."""
    figure = Figure(figsize=size, layout="constrained")
    ax = figure.add_subplot()
    if not labels or not series:
        no_data(figure, ax, title)
        return render_png(figure)
    _draw_bars(ax, labels, series)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return render_png(figure)


def _draw_bars(ax, labels: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> None:
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        numbers = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
        offset = x - 0.4 + width * (i + 0.5)
        ax.bar(offset, np.nan_to_num(numbers), width, label=name)
        for xpos, value in zip(offset, numbers, strict=True):
            if np.isnan(value):
                ax.annotate(UNKNOWN_LABEL, (xpos, 0), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    if len(series) > 1:
        ax.legend(fontsize=8)


def model_labels(frame: pd.DataFrame) -> list[str]:
    return [
        f"{p}/{m}" if isinstance(m, str) and m else str(p)
        for p, m in zip(frame["provider"], frame["model"], strict=True)
    ]


def provider_comparison_chart(comparison: pd.DataFrame) -> bytes:
    """Two panels from `StudyService.get_provider_comparison()`: latency (avg and p95 of
    successful calls) and estimated cost per provider/model; unknown costs read "n/a"."""
    figure = Figure(figsize=(10, 4.5), layout="constrained")
    latency_ax, cost_ax = figure.subplots(1, 2)
    if comparison.empty:
        no_data(figure, latency_ax, "Latency per model")
        no_data(figure, cost_ax, "Estimated cost per model")
        return render_png(figure)
    labels = model_labels(comparison)
    _draw_bars(
        latency_ax,
        labels,
        {
            "avg": _values(comparison["avg_latency_ms"]),
            "p95": _values(comparison["p95_latency_ms"]),
        },
    )
    latency_ax.set_title("Latency per model (successful calls)")
    latency_ax.set_ylabel("ms")
    _draw_bars(cost_ax, labels, {"cost": _values(comparison["estimated_cost_usd"])})
    cost_ax.set_title("Estimated cost per model")
    cost_ax.set_ylabel("USD")
    return render_png(figure)


def time_series_chart(
    series: pd.DataFrame, metric: str = "calls", *, title: str | None = None
) -> bytes:
    """One line per provider from `StudyService.get_time_series_data()` (long format)."""
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.add_subplot()
    title = title or f"{metric} over time"
    if series.empty:
        no_data(figure, ax, title)
        return render_png(figure)
    if metric not in series:
        raise ValueError(f"time series has no column {metric!r} (has {list(series.columns)})")
    # (bucket, provider) is unique in the service output; a gap (NaN) breaks the line.
    wide = series.pivot(index="bucket", columns="provider", values=metric).sort_index()
    for provider in wide.columns:
        column = wide[provider]
        ax.plot(column.index, column.to_numpy(dtype=float), marker="o", label=str(provider))
    ax.set_title(title)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    figure.autofmt_xdate()
    return render_png(figure)


def _values(column: pd.Series) -> list[float | None]:
    return [None if pd.isna(v) else float(v) for v in column]
