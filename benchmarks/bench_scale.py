"""A 100,000-call run through `study_job` in flat memory, as fast as the service alone.

A prompt set of 1,000 prompts x one OpenAI target x S samples (distinct seeds, so every call is
its own request and answer; embedded by the offline embedder) is materialized by `study_job` in
process (prompt_set -> inference_run -> response_embeddings, with every asset check) against
the loopback server (its own process, 20 ms per request), concurrency 64, SQLite app database
and Dagster instance. Each run is its own process (the run worker), whose peak resident memory
(VmHWM) is read at the end.

Figures:
- memory: peak RSS of the run worker at 100,000 calls / at 10,000 calls (target <= 1.3);
- throughput: calls/s of the 100,000-call study_job (every step included) / calls/s of the same
  100,000 requests through `InferenceService.run_batch` alone, in a process of its own, on the
  same server and a fresh database of the same kind (target >= 0.9).

`BENCH_SCALE_CALLS=20000` (a multiple of 10,000 up to 100,000) measures a smaller run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from study_query_dagster.db import DatabaseConnection

from .support import ROOT, fake_server, ratio_line

LATENCY_S = 0.020
PROMPTS = 1000
SMALL = 10_000
LARGE = int(os.environ.get("BENCH_SCALE_CALLS", "100000"))


def write_set(folder: Path, name: str, calls: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = {
        "name": name,
        "prompts": [
            {"id": f"q{i}", "text": f"question {i}: what is {i} + {i}?"} for i in range(PROMPTS)
        ],
        "targets": [{"provider": "openai", "model": "gpt-4o-mini", "params": {"seed": 1}}],
        "samples": calls // PROMPTS,
        "embed": {"provider": "offline"},
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


def measured(mode: str, calls: int, base_url: str) -> dict:
    """One worker process on a fresh SQLite app database and Dagster instance."""
    with tempfile.TemporaryDirectory(prefix="sqd-bench-scale-") as tmp:
        tmp_path = Path(tmp)
        name = f"scale{calls}"
        write_set(tmp_path / "sets", name, calls)
        db_url = f"sqlite:///{tmp_path / 'app.db'}"
        DatabaseConnection(db_url).init_db()
        home = tmp_path / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False}}))
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.scale_worker",
                mode,
                str(tmp_path / "sets"),
                name,
                db_url,
                base_url,
                str(home),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=False,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if out.returncode:
            raise RuntimeError(f"{mode} {calls}: {out.stderr[-4000:]}")
        report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["calls"] == calls, report
    return report


def run():
    with fake_server(LATENCY_S) as base_url:
        small = measured("study", SMALL, base_url)
        large = measured("study", LARGE, base_url)
        alone = measured("batch", LARGE, base_url)
    mib = 1024 * 1024
    yield ratio_line(
        f"study_job peak RSS, run worker: {LARGE:,} calls vs {SMALL:,} calls",
        large["peak_rss"] / mib,
        small["peak_rss"] / mib,
        "MiB",
        "(target <= 1.3: memory does not grow with the calls)",
    )
    yield ratio_line(
        f"study_job throughput, {LARGE:,} calls @ {LATENCY_S * 1000:.0f} ms, concurrency 64",
        LARGE / large["seconds"],
        LARGE / alone["seconds"],
        "calls/s",
        f"(baseline: run_batch alone; study_job {large['seconds']:,.0f} s with every step and "
        f"check, run_batch {alone['seconds']:,.0f} s; target >= 0.9)",
    )
