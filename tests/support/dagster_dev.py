"""Run a real `dagster dev` for end-to-end tests, and talk to it over GraphQL.

Started with `start_new_session=True` and stopped with SIGTERM to the process group (a shell `&`
would make it ignore SIGTERM); always on an explicit free loopback port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from .processes import HANG_GUARD_S, free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}


class DagsterDev:
    def __init__(self, home: Path, env: dict[str, str], log_path: Path):
        self.home = home
        self.env = env
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DagsterDev:
        self.home.mkdir(parents=True, exist_ok=True)
        dagster = Path(sys.executable).with_name("dagster")
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(self.port)],
                cwd=ROOT, env={**self.env, "DAGSTER_HOME": str(self.home)}, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for_http(f"{self.url}/server_info", self.proc, self.log_path)
        self._wait_for_code_location()
        self.graphql("mutation { setNuxSeen }")  # or a newsletter modal covers screenshots
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> DagsterDev:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables or {}},
            timeout=HANG_GUARD_S,  # a busy machine answers late, not never
        )
        response.raise_for_status()
        payload = response.json()
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def _wait_for_code_location(self) -> None:
        query = """
        { workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus
            locationOrLoadError { __typename ... on PythonError { message } }
        } } } }"""
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            self.check_alive()
            entries = self.graphql(query)["workspaceOrError"].get("locationEntries", [])
            if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                errors = [e["locationOrLoadError"] for e in entries
                          if e["locationOrLoadError"]["__typename"] == "PythonError"]  # fmt: skip
                if errors:
                    raise AssertionError(f"code location failed to load: {errors}")
                return
            time.sleep(0.5)
        raise AssertionError(
            f"code location did not load in {HANG_GUARD_S} s (hung?):\n{self.log_tail()}"
        )

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        query = """
        query Runs($limit: Int) { runsOrError(limit: $limit) { ... on Runs { results {
            runId status jobName tags { key value }
        } } } }"""
        return self.graphql(query, {"limit": limit})["runsOrError"]["results"]

    def check_alive(self) -> None:
        """Fail now, with the log, if `dagster dev` has exited."""
        assert self.proc is not None, "dagster dev not started"
        if self.proc.poll() is not None:
            raise AssertionError(
                f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}"
            )

    def wait_for_run(self, predicate) -> dict[str, Any]:
        """The first run matching `predicate` once it reaches a terminal status (however long
        that takes while dagster dev lives; `HANG_GUARD_S` only ends a hang)."""
        deadline = time.monotonic() + HANG_GUARD_S
        while time.monotonic() < deadline:
            self.check_alive()
            for run in self.runs():
                if predicate(run) and run["status"] in TERMINAL_RUN_STATUSES:
                    return run
            time.sleep(1)
        raise AssertionError(
            f"no matching run finished in {HANG_GUARD_S} s (hung?); runs: {self.runs()}\n"
            f"{self.log_tail()}"
        )
