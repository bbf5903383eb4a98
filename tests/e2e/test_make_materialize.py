"""`make materialize`: every sample prompt set through the whole graph, headless; non-zero when a
prompt set is invalid or a run fails."""

import os
import shutil
import subprocess
from pathlib import Path

from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, RawCall
from study_query_dagster.services.prompt_sets import discover_prompt_sets

ROOT = Path(__file__).resolve().parents[2]


def make_materialize(tmp_path, prompt_dir):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "MAKEFLAGS"}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}",
               PROMPT_SETS_DIR=str(prompt_dir))  # fmt: skip
    return subprocess.run(["make", "materialize"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def test_samples_materialize_and_a_bad_file_fails_the_command(tmp_path):
    prompt_dir = tmp_path / "sets"
    shutil.copytree(ROOT / "prompt_sets", prompt_dir, ignore=shutil.ignore_patterns("examples"))
    valid, _ = discover_prompt_sets(prompt_dir)
    done = make_materialize(tmp_path, prompt_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in valid:
        assert f"OK {name} (run " in done.stdout
    # The variation of each run is measured too: its WARN findings are listed, not failures.
    [noisy] = [line for line in done.stdout.splitlines() if line.startswith("OK variation_noisy")]
    assert noisy.endswith("; warnings: deterministic_targets_stable")
    assert "OK analytics (run " in done.stdout
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
    assert "INVALID" in again.stdout and "broken.yaml:2: prompts" in again.stdout
