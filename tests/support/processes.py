"""Helpers for tests that start real processes (dagster dev, make run)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

# How long a server may take to come up before the test gives up (not a speed assertion).
STARTUP_DEADLINE_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path | None = None) -> httpx.Response:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = log.read_text() if log and log.exists() else ""
            raise AssertionError(
                f"process exited with {proc.returncode} before {url} answered:\n{output[-4000:]}"
            )
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    output = log.read_text() if log and log.exists() else ""
    raise AssertionError(f"{url} did not answer within {STARTUP_DEADLINE_S} s:\n{output[-4000:]}")
