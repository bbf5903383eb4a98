"""The commands and health probes of deploy/docker-compose.yml, run as local processes against the
embedded PostgreSQL (there is no Docker engine here): the migrator, the gRPC code server, the
webserver and the daemon find each other through deploy/workspace.yaml and report healthy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, inspect

from tests.support.processes import HANG_GUARD_S, free_port, poll_until

from .files import DEPLOY, WORKSPACE, compose

STATUS_QUERY = DEPLOY / "monitoring" / "status.graphql"

pytestmark = pytest.mark.slow


def _localise(argv: list[str], ports: dict[str, str]) -> list[str]:
    """A container's argv for this machine: free ports instead of the image's, loopback only."""
    out = []
    for arg in argv:
        for image_port, port in ports.items():
            arg = arg.replace(f"127.0.0.1:{image_port}", f"127.0.0.1:{port}")
            if arg == image_port:
                arg = port
        out.append("127.0.0.1" if arg == "0.0.0.0" else arg)
    return out


def _probe(
    service: dict, ports: dict[str, str], env: dict, cwd: Path
) -> subprocess.CompletedProcess:
    kind, *argv = service["healthcheck"]["test"]
    assert kind == "CMD"
    return subprocess.run(_localise(argv, ports), env=env, cwd=cwd, capture_output=True, text=True)


def _wait_healthy(name: str, service: dict, ports, env, cwd, proc, log: Path) -> None:
    def alive() -> None:
        if proc.poll() is not None:
            raise AssertionError(
                f"{name} exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
            )

    poll_until(
        lambda: _probe(service, ports, env, cwd).returncode == 0,
        alive=alive,
        what=f"{name} never became healthy",
        detail=lambda: log.read_text()[-4000:],
    )


@contextmanager
def _service(name: str, argv: list[str], env: dict, cwd: Path, tmp_path: Path) -> Iterator:
    log = tmp_path / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc, log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_compose_services_start_find_each_other_and_pass_their_probes(
    pg_deployment, pg_server, tmp_path
):
    services = compose()["services"]
    ports = {"4000": str(free_port()), "3000": str(free_port())}
    # The image's WORKDIR: workspace.yaml beside the processes, pointing at this code server.
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    workspace = WORKSPACE.read_text()
    assert workspace.count("port: 4000") == 1
    (app_dir / "workspace.yaml").write_text(
        workspace.replace("port: 4000", f"port: {ports['4000']}")
    )

    empty_app_db = pg_server.create_database(migrated=False)
    env = {
        **pg_deployment.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
        "DATABASE_URL": empty_app_db.render_as_string(hide_password=False),
    }
    try:
        # migrate: Dagster's schema and the app's, from empty databases.
        migrate = subprocess.run(
            services["migrate"]["command"], env=env, cwd=app_dir, capture_output=True, text=True
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        engine = create_engine(env["DATABASE_URL"])
        try:
            assert {"raw_calls", "embedding_vectors"} <= set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

        daemon = services["daemon"]
        assert _probe(daemon, ports, env, app_dir).returncode != 0, "no daemon yet"

        with _service(
            "code-server",
            _localise(services["code-server"]["command"], ports),
            env,
            app_dir,
            tmp_path,
        ) as (code_proc, code_log):
            _wait_healthy(
                "code-server", services["code-server"], ports, env, app_dir, code_proc, code_log
            )
            with (
                _service("webserver", _localise(services["webserver"]["command"], ports), env, app_dir, tmp_path) as (web_proc, web_log),
                _service("daemon", _localise(daemon["command"], ports), env, app_dir, tmp_path) as (daemon_proc, daemon_log),
            ):  # fmt: skip
                _wait_healthy(
                    "webserver", services["webserver"], ports, env, app_dir, web_proc, web_log
                )
                _wait_healthy("daemon", daemon, ports, env, app_dir, daemon_proc, daemon_log)

                # The webserver reached the code server through the gRPC workspace entry.
                query = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"
                reply = httpx.post(
                    f"http://127.0.0.1:{ports['3000']}/graphql",
                    json={"query": query},
                    timeout=HANG_GUARD_S,
                ).json()
                entries = reply["data"]["workspaceOrError"]["locationEntries"]
                assert [(e["name"], e["loadStatus"]) for e in entries] == [
                    ("study_query_dagster", "LOADED")
                ]
                assert entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"

                # The monitoring query of DEPLOYMENT.md answers on this deployment.
                status = httpx.post(
                    f"http://127.0.0.1:{ports['3000']}/graphql",
                    json={"query": STATUS_QUERY.read_text()},
                    timeout=HANG_GUARD_S,
                ).json()
                assert "errors" not in status, status
                data = status["data"]
                # The sensors start RUNNING, so runs may already be queued or in flight here.
                assert data["queued"]["count"] >= 0 and data["inProgress"]["count"] >= 0
                daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
                required = {d["daemonType"]: d["healthy"] for d in daemons if d["required"]}
                assert "QUEUED_RUN_COORDINATOR" in required and "MONITORING" in required
                assert all(required.values()), daemons
                assert isinstance(data["instance"]["concurrencyLimits"], list)
    finally:
        pg_server.drop_database(empty_app_db)
