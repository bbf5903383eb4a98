"""API keys never land anywhere a run writes. The production job and resources (keys through
`dg.EnvVar`) run a prompt set against the fake server, which answers some requests with errors
that echo the key it was sent (as some gateways do); one item stays unanswered, the run is
re-executed, embeds its answers. Then every byte the deployment keeps is searched for each key: the app DB (SQLite file
with its -wal and -shm, or a pg_dump), the Dagster event log of the runs and the instance's
storage (SQLite files, or a pg_dump of Dagster's PostgreSQL database), the compute logs, and
this test's own output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value
from sqlalchemy.engine import make_url

from tests.support.drills import ScriptedFaults, request_key
from tests.support.fake_llm_server import Fault
from tests.support.pipeline import IN_PROCESS, reconstructable_production_study_job

KEYS = {
    "OPENAI_API_KEY": "sk-drill-SECRET-openai-5f1c9e2d",
    "AZURE_OPENAI_API_KEY": "az-drill-SECRET-azure-77d0b3aa",
}
SET = """\
name: keys
prompts:
  - {id: a, text: "first question"}
  - {id: b, text: "second question"}
  - {id: c, text: "third question"}
targets:
  - {provider: openai, model: gpt-4o-mini}
  - {provider: azure, deployment: drill-deployment}
samples: 2
embed: on
"""


def echoing(status: int, request) -> Fault:
    """An error whose body repeats the credential the request carried."""
    sent = request.headers.get("api-key") or request.headers.get("authorization", "")
    body = {
        "error": {
            "message": f"rejected credential {sent!r} for this request",
            "type": "invalid_request_error",
            "code": f"http_{status}",
        }
    }
    return Fault(status=status, body=json.dumps(body))


class EchoKeys(ScriptedFaults):
    """401 for one OpenAI item (fails the run), 500 for one Azure item and for the first
    embeddings call (retried): every one of them echoes the key."""

    def __call__(self, request):
        super().__call__(request)
        key = request_key(request)
        attempt = len(self.seen[key])
        if request.kind == "embeddings" and self.total("embeddings") == 1:
            return echoing(500, request)
        if key == "gpt-4o-mini|second question" and attempt == 1:
            return echoing(401, request)
        if key == "drill-deployment|third question" and attempt == 1:
            return echoing(500, request)
        return None

    def total(self, kind: str) -> int:
        return sum(1 for seen in self.seen.values() for s in seen if s.request.kind == kind)


def pg_dump(url: str) -> bytes:
    tool = Path(__import__("pgserver").__file__).parent / "pginstall" / "bin" / "pg_dump"
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return subprocess.run(
        [str(tool), "--format=plain", "--no-owner", libpq], check=True, capture_output=True
    ).stdout


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def leaks(places: dict[str, bytes]) -> dict[str, list[str]]:
    """key name -> the places holding its value."""
    found = {}
    for name, value in KEYS.items():
        where = [place for place, blob in places.items() if value.encode() in blob]
        if where:
            found[name] = where
    return found


@pytest.mark.slow
def test_no_api_key_in_the_app_db_event_log_compute_logs_or_output(
    backend, request, tmp_path, prompt_dir, llm_server, monkeypatch, capfd
):
    if backend == "sqlite":
        app_db_url = request.getfixturevalue("db_url")
        home = tmp_path / "dagster_home"
        home.mkdir()
        monkeypatch.setenv("DAGSTER_HOME", str(home))
    else:  # deploy/dagster.yaml: Dagster's storage on PostgreSQL too
        deployment = request.getfixturevalue("pg_deployment")
        deployment.migrate()
        app_db_url, home = deployment.app_db_url, deployment.home
    (prompt_dir / "keys.yaml").write_text(SET)
    settings = {
        **KEYS,
        "DATABASE_URL": app_db_url,
        "PROMPT_SETS_DIR": str(prompt_dir),
        "OPENAI_BASE_URL": llm_server.openai_base_url,
        "AZURE_OPENAI_ENDPOINT": llm_server.url,
        "EMBEDDING_PROVIDER": "openai",
        "EMBEDDING_MODEL": "text-embedding-3-small",
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    faults = EchoKeys()
    llm_server.fault_fn = faults

    job = reconstructable_production_study_job()
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["keys"])
        first = dg.execute_job(
            job, instance, run_config=IN_PROCESS, tags={"dagster/partition": "keys"}
        )
        # The 401 leaves one item unanswered: a red check, the other answers kept.
        captured = next(
            c
            for c in first.get_asset_check_evaluations()
            if c.check_name == "every_request_captured"
        )
        assert first.success and not captured.passed
        second = dg.execute_job(
            job,
            instance,
            run_config=IN_PROCESS,
            tags=first.dagster_run.tags,
            reexecution_options=dg.ReexecutionOptions(parent_run_id=first.run_id),
        )
        assert second.success
        runs = [instance.get_run_by_id(r.run_id) for r in (first, second)]
        events = {
            f"event log of run {run.run_id}": "\n".join(
                serialize_value(e) for e in instance.all_logs(run.run_id)
            ).encode()
            for run in runs
        }
        records = {f"run record {run.run_id}": serialize_value(run).encode() for run in runs}

    # The drill did what it says: keys were sent, and echoed back in error bodies.
    sent = [r.headers.get("api-key") or r.headers.get("authorization") for r in llm_server.requests]
    assert any(KEYS["OPENAI_API_KEY"] in s for s in sent)
    assert any(KEYS["AZURE_OPENAI_API_KEY"] in s for s in sent)
    assert sum(1 for r in llm_server.requests if r.fault == "status") == 3
    assert faults.total("embeddings") >= 2

    places = {**events, **records}
    if backend == "sqlite":
        app_db = Path(make_url(app_db_url).database)
        app_files = {p.name: p.read_bytes() for p in app_db.parent.glob(f"{app_db.name}*")}
        assert app_db.name in app_files
        places.update({f"app DB file {n}": blob for n, blob in app_files.items()})
    else:
        places["pg_dump of the app DB"] = pg_dump(app_db_url)
        places["pg_dump of the Dagster DB"] = pg_dump(deployment.dagster_db_url)
    storage = files_under(home)
    # storage/<run id>/compute_logs/<key>.err|.out: both runs' captured output, our log lines
    # included (so the scan is not vacuous).
    compute_logs = {n: b for n, b in storage.items() if n.endswith((".out", ".err"))}
    assert {Path(n).parts[1] for n in compute_logs} == {run.run_id for run in runs}
    assert any(b"run group" in b for b in compute_logs.values()), sorted(storage)
    places.update({f"DAGSTER_HOME/{n}": b for n, b in storage.items()})
    output = capfd.readouterr()
    places["test stdout/stderr"] = (output.out + output.err).encode()
    assert places["test stdout/stderr"]

    assert leaks(places) == {}
    # ...while the errors themselves were kept, with the key masked.
    assert b"rejected credential" in b"".join(places.values())
