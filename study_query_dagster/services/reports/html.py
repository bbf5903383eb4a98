"""The study report of one run as one self-contained HTML file: inline CSS, no scripts, no
network, so it opens offline in any browser and can be mailed or archived as it is.

Sections: the run at a glance, per-target figures, the prompts × targets matrix with every
sample's answer (identical answers of a row share a colour and are grouped with their sample
numbers), failures with their error texts, and answer variation."""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, PackageLoader, select_autoescape

from ..formatting import round_sig
from .run_data import RunData
from .tables import target_rows
from .variation import VariationSection

PALETTE_SIZE = 8  # answer colours a row cycles through (.a0 ... .a7 in the stylesheet)

_env = Environment(
    loader=PackageLoader("study_query_dagster.services.reports", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _num(value: Any, digits: int = 3) -> str:
    """3 significant digits, no trailing ".0" (110.0 -> 110, 0.004893 -> 0.00489)."""
    if value is None:
        return ""
    number = round_sig(value, digits)
    return f"{int(number):,}" if float(number).is_integer() else f"{number:,}"


_env.filters["num"] = _num
_env.filters["pct"] = lambda v: "" if v is None else f"{100 * v:.1f}%"
_env.filters["usd"] = lambda v: "unknown" if v is None else f"${v:,.6f}".rstrip("0").rstrip(".")


def _percentile(values: list[float], q: float) -> float | None:
    # numpy's default (linear interpolation) is the definition the SQL percentiles use too
    return float(np.percentile(values, q)) if values else None


def summary(run: RunData) -> dict[str, Any]:
    calls = run.calls
    finals = [i.final for i in run.items]
    succeeded = [f for f in finals if f is not None and f.status == "success"]
    latencies = [c.latency_ms for c in calls if c.status == "success" and c.latency_ms is not None]
    costs = [c.cost_usd for c in succeeded]
    ps = run.prompt_set
    return {
        "expected": len(run.items),
        "prompts": len(ps.prompts),
        "targets": len(ps.targets),
        "samples": ps.samples,
        "calls": len(calls),
        "items_succeeded": len(succeeded),
        "items_failed": sum(1 for f in finals if f is not None and f.status != "success"),
        "items_missing": sum(1 for f in finals if f is None),
        "failed_calls": sum(1 for c in calls if c.status != "success"),
        "success_rate": len(succeeded) / len(finals) if finals else None,
        "p50_latency_ms": _percentile(latencies, 50),
        "p95_latency_ms": _percentile(latencies, 95),
        "total_tokens": sum(c.total_tokens or 0 for c in calls),
        "cost_usd": None if any(c is None for c in costs) else float(sum(costs)),
    }


def matrix(run: RunData) -> list[dict[str, Any]]:
    """One row per prompt: its cells (one per target), each a list of answer groups with a
    colour class shared by equal answers anywhere in the row."""
    rows = []
    for prompt in run.prompts:
        cells = [run.groups(prompt.id, t.label) for t in run.targets]
        # An answer given more than once in the row gets a colour, the same in every target
        # that gave it (the most frequent first); an answer given once stays plain.
        frequency: Counter[str] = Counter()
        for groups in cells:
            for g in groups:
                if g["kind"] == "answer":
                    frequency[g["text"]] += g["count"]
        repeated = [text for text, n in frequency.most_common() if n > 1]
        colour = {text: f"a{i % PALETTE_SIZE}" for i, text in enumerate(repeated)}
        for groups in cells:
            for g in groups:
                g["css"] = colour.get(g["text"], "") if g["kind"] == "answer" else g["kind"]
                g["shared"] = g["kind"] == "answer" and frequency[g["text"]] > g["count"]
        rows.append({"prompt": prompt, "cells": cells})
    return rows


def failures(run: RunData) -> list[dict[str, Any]]:
    out = []
    for result, call in run.failed_calls:
        final = result.final
        out.append(
            {
                "item": result.item.key,
                "call_id": call.id,
                "status": call.status,
                "error_type": call.error_type or call.status,
                "message": call.error_message or "",
                "attempts": call.attempts,
                "created_at": call.created_at,
                "recovered": final is not None and final.status == "success",
            }
        )
    return out


def render_report(
    run: RunData, variation: VariationSection, *, generated_at: datetime | None = None
) -> str:
    """The report's HTML."""
    return _env.get_template("study_report.html.j2").render(
        run=run,
        ps=run.prompt_set,
        summary=summary(run),
        targets=run.targets,
        target_table=target_rows(run),
        matrix=matrix(run),
        failures=failures(run),
        variation=variation,
        generated_at=(generated_at or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M UTC"),
    )


def write_html(path: Path, html: str) -> Path:
    """Write atomically (a browser or a copy never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(html)
    os.replace(partial, path)
    return path
