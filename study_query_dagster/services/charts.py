"""Charts for analytics metadata: matplotlib (Agg, no display) -> PNG bytes -> markdown image.

Dagster renders markdown metadata, and a PNG inlined as a `data:` URI needs no file server.
Figures are built with the object API (`Figure` + `FigureCanvasAgg`), never pyplot, so no
global state is shared between threads or runs.

A chart is only drawn when it can show something: `Chart` carries either the PNG or the reason
there is none (no priced call, a single time bucket...), and its markdown says that reason
instead of showing an empty frame. Titles say what the axes really hold.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Chart:
    """A picture, or why there is none."""

    title: str
    png: bytes | None = None
    reason: str | None = None

    def markdown(self) -> str:
        if self.png is not None:
            return markdown_image(self.png, self.title)
        return f"**{self.title}**: _{self.reason}_"


def charts_markdown(charts: Iterable[Chart]) -> str:
    return "\n\n".join(chart.markdown() for chart in charts)


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


def _values(column: Iterable) -> list[float | None]:
    return [None if v is None or pd.isna(v) else float(v) for v in column]


def latency_chart(
    labels: Sequence[str], p50: Iterable, p95: Iterable, *, per: str = "target"
) -> Chart:
    """p50 and p95 latency of successful calls per label, or why not."""
    title = f"Latency per {per} (successful calls)"
    p50, p95 = _values(p50), _values(p95)
    if not labels or all(v is None for v in p50 + p95):
        return Chart(title, reason="no successful call with a latency yet")
    return Chart(title, bar_chart(labels, {"p50": p50, "p95": p95}, title=title, ylabel="ms"))


def cost_chart(labels: Sequence[str], costs: Iterable, *, per: str = "target") -> Chart:
    """Estimated cost per label, or why not (nothing priced, or everything free)."""
    title = f"Estimated cost per {per}"
    costs = _values(costs)
    known = [c for c in costs if c is not None]
    if not known:
        return Chart(title, reason="no call has a known price (see the price table)")
    if not any(known):
        return Chart(title, reason="every priced call was free (e.g. the offline provider)")
    return Chart(title, bar_chart(labels, {"cost": costs}, title=title, ylabel="USD"))


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


def time_series_charts(
    series: pd.DataFrame, metrics: Sequence[str], granularity: str
) -> list[Chart]:
    """A line chart per metric over time, once there are two time buckets to draw a line
    between (one point on a time axis spans years of empty axis)."""
    buckets = series["bucket"].nunique() if not series.empty else 0
    charts = []
    for metric in metrics:
        title = f"{metric} per {granularity} and provider"
        if buckets < 2:
            reason = (
                "no calls yet"
                if buckets == 0
                else f"all calls so far fall in one {granularity}; the line appears with the next"
            )
            charts.append(Chart(title, reason=reason))
        elif series[metric].isna().all():
            charts.append(Chart(title, reason=f"no {metric} recorded"))
        else:
            charts.append(Chart(title, time_series_chart(series, metric, title=title)))
    return charts


def recent_latency_chart(recent: pd.DataFrame) -> Chart:
    """Latency of the newest calls in the order they were made (x: their call ids)."""
    title = "Latency of the newest calls, oldest first (x: call id)"
    ordered = recent.sort_values(["created_at", "id"])
    values = _values(ordered["latency_ms"])
    if all(v is None for v in values):
        return Chart(title, reason="no recent call has a latency")
    labels = [str(i) for i in ordered["id"]]
    return Chart(title, bar_chart(labels, {"latency_ms": values}, title=title, ylabel="ms"))


def outcomes_chart(per_model: pd.DataFrame) -> Chart:
    """Calls per provider/model, succeeded and not (all prompt sets together)."""
    title = "Calls per model, all prompt sets (succeeded / not)"
    if per_model.empty:
        return Chart(title, reason="no calls yet")
    png = bar_chart(
        model_labels(per_model),
        {
            "succeeded": list(per_model["success"]),
            "failed, timed out or cancelled": list(per_model["calls"] - per_model["success"]),
        },
        title=title,
        ylabel="calls",
    )
    return Chart(title, png)
