"""`make materialize`: every sample prompt set through the whole graph, headless; non-zero when a
prompt set is invalid or a run fails."""

import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, RawCall
from study_query_dagster.services.prompt_sets import discover_prompt_sets
from tests.support.materialize import summary_rows

ROOT = Path(__file__).resolve().parents[2]


def make_materialize(tmp_path, prompt_dir):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "MAKEFLAGS"}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
               PROMPT_SETS_DIR=str(prompt_dir), REPORTS_DIR=str(tmp_path / "reports"),
               EXPORTS_DIR=str(tmp_path / "exports"))  # fmt: skip
    return subprocess.run(["make", "materialize"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def test_samples_materialize_and_a_bad_file_fails_the_command(tmp_path):
    prompt_dir = tmp_path / "sets"
    shutil.copytree(ROOT / "prompt_sets", prompt_dir, ignore=shutil.ignore_patterns("examples"))
    valid, _ = discover_prompt_sets(prompt_dir)
    done = make_materialize(tmp_path, prompt_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = summary_rows(done.stdout)
    for name, loaded in valid.items():
        status, calls, failures, checks, *rest = table[name]
        assert (status, int(calls), int(failures)) == ("OK", loaded.prompt_set.expected_calls, 0)
        passed, total = checks.split("/")
        # the variation of each run is measured too: its WARN findings are listed, not failures
        warned = int(rest[-2]) if rest[-1] == "warn" else 0
        assert int(passed) + warned == int(total) and int(total) > 6
    assert table["(analytics)"] == ["OK"]
    warnings = done.stdout.split("errors and warnings:")[1].split("study reports")[0]
    assert "variation_noisy: check deterministic_targets_stable warns" in warnings
    # each log line once: ours, never repeated by Dagster's console logger
    assert " - dagster - " not in done.stdout + done.stderr
    for name in valid:
        [report] = (tmp_path / "reports" / name).glob("*.html")
        assert str(report) in done.stdout
    db = DatabaseConnection(f"sqlite:///{tmp_path / 'app.db'}")
    with db.session_scope() as session:
        # Answers only: variation_calibration's scripted judge is called by the analysis.
        calls = session.scalar(
            select(func.count()).where(RawCall.modality == "text", RawCall.model != "offline-judge")
        )
    db.dispose()
    assert calls == sum(loaded.prompt_set.expected_calls for loaded in valid.values())

    (prompt_dir / "broken.yaml").write_text("name: broken\nprompts: nope\n")
    again = make_materialize(tmp_path, prompt_dir)
    assert again.returncode != 0
    # the summary ends the output: the broken file's line, then its errors
    assert summary_rows(again.stdout)["broken.yaml"][0] == "INVALID"
    errors = again.stdout.split("errors and warnings:")[1]
    assert "broken.yaml:2: prompts" in errors
