"""Redis and Celery workers as real processes for the scale-out test: each started in its own
session and stopped (SIGTERM to its process group, then SIGKILL) by the context manager that
started it, so nothing outlives the test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import HANG_GUARD_S, free_port

REDIS_SERVER = shutil.which("redis-server")
BIN = Path(sys.executable).parent  # dagster-celery, and the celery it starts


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL if it is still there after 60 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throwaway Redis on 127.0.0.1 (no persistence); yields its URL."""
    import redis

    assert REDIS_SERVER, "redis-server is not installed"
    port = free_port()
    log = open(workdir / "redis.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            if proc.poll() is not None:
                raise AssertionError((workdir / "redis.log").read_text())
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


@contextmanager
def celery_workers(
    names: list[str], config_yaml: Path, env: dict[str, str], cwd: Path, logs: Path
) -> Iterator[list[str]]:
    """`dagster-celery worker start` once per name (one step at a time each: the solo pool),
    until every worker answers a ping through the broker in `env`; yields their node names
    (`name@host`)."""
    from celery import Celery

    procs = []
    try:
        for name in names:
            log = open(logs / f"worker-{name}.log", "w")  # noqa: SIM115 (closed with the process)
            procs.append(
                (
                    subprocess.Popen(
                        [
                            str(BIN / "dagster-celery"),
                            "worker",
                            "start",
                            "-A",
                            "dagster_celery.app",
                            "-y",
                            str(config_yaml),
                            "-n",
                            name,
                            "--",
                            "--pool",
                            "solo",
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=cwd,
                        start_new_session=True,
                    ),
                    log,
                )
            )
        app = Celery(broker=env["CELERY_BROKER_URL"])
        deadline = time.monotonic() + HANG_GUARD_S
        nodes: set[str] = set()
        while len(nodes) < len(names):
            for (proc, _), name in zip(procs, names, strict=True):
                if proc.poll() is not None:
                    raise AssertionError((logs / f"worker-{name}.log").read_text()[-4000:])
            if time.monotonic() > deadline:
                raise AssertionError(f"workers did not answer in time; answered: {nodes}")
            for reply in app.control.ping(timeout=1.0):
                nodes.update(reply)
        yield sorted(nodes)
    finally:
        for proc, log in procs:
            stop(proc)
            log.close()
