"""`make run` on embedded defaults: writes the instance config, creates the app DB, serves the UI."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.processes import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_make_run_serves_the_ui(tmp_path):
    port = free_port()
    home = tmp_path / "dagster_home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
        "DAGSTER_HOME": str(home),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "PORT": str(port),
    }
    env.pop("MAKEFLAGS", None)
    log_path = tmp_path / "make_run.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["make", "run", f"PORT={port}"], cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        info = wait_for_http(f"http://127.0.0.1:{port}/server_info", proc, log_path)
        assert "dagster_webserver_version" in info.json()
        assert (home / "dagster.yaml").read_text().count("study_query_dagster") == 1
        assert (tmp_path / "app.db").stat().st_size > 0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
