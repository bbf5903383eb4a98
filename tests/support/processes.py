"""Helpers for tests that start real processes (dagster dev, make run).

Waits on such processes poll a condition (an answer, a run's end) and fail at once, with the
process's log, when the process exits. `HANG_GUARD_S` only ends a wait on a process that is
alive and still silent after half an hour, i.e. hung: it is no speed assertion, and no test
should come near it on however busy a machine."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx

HANG_GUARD_S = 1800
POLL_S = 0.5  # between two looks at a condition: how often, not how long to wait


def poll_until(condition, *, alive, what: str, detail=lambda: ""):
    """The first truthy value of `condition()`, looked at every POLL_S. `alive()` raises when
    the process the condition depends on has exited (the wait fails at once); HANG_GUARD_S
    only ends a hang."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        alive()
        value = condition()
        if value:
            return value
        time.sleep(POLL_S)
    raise AssertionError(f"{what} within {HANG_GUARD_S} s (hung?):\n{detail()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, log: Path | None = None) -> httpx.Response:
    deadline = time.monotonic() + HANG_GUARD_S
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
    raise AssertionError(f"{url} did not answer within {HANG_GUARD_S} s (hung?):\n{output[-4000:]}")
