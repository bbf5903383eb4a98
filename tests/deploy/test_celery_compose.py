"""deploy/docker-compose.celery.yml (the scale-out overlay) against the Compose Specification,
and its wiring: the runs and the workers agree on the broker, workers read the executor
settings the image ships (deploy/celery.yaml) and reach what a step needs."""

from __future__ import annotations

import jsonschema
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema

from .files import DEPLOY, compose, dockerfile_instructions

OVERLAY = DEPLOY / "docker-compose.celery.yml"


def overlay() -> dict:
    return yaml.safe_load(OVERLAY.read_text())


def test_the_overlay_matches_the_compose_specification():
    schema = get_builtin_schema("vendor.compose-spec")
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert [e.message for e in validator.iter_errors(overlay())] == []


def test_runs_and_workers_use_one_broker_and_the_celery_executor():
    services = overlay()["services"]
    runs, worker = services["code-server"]["environment"], services["worker"]["environment"]
    for name in ("STUDY_JOB_EXECUTOR", "CELERY_BROKER_URL", "CELERY_BACKEND_URL"):
        assert runs[name] == worker[name], name
    assert runs["STUDY_JOB_EXECUTOR"] == "celery"
    assert runs["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert "ports" not in services["redis"]  # the broker stays on the project's network


def test_workers_read_the_shipped_executor_settings_and_reach_what_steps_need():
    worker = overlay()["services"]["worker"]
    config = worker["command"][worker["command"].index("-y") + 1]
    copies = [args.split() for kind, args in dockerfile_instructions() if kind == "COPY"]
    assert ["deploy/celery.yaml", config] in copies
    code_server = compose()["services"]["code-server"]
    for name in ("DAGSTER_HOME", "DATABASE_URL", "PROMPT_SETS_DIR", "DAGSTER_POSTGRES_URL"):
        assert worker["environment"][name] == code_server["environment"][name], name
    mounts = {v.split(":")[1] for v in worker["volumes"]}
    assert {v.split(":")[1] for v in code_server["volumes"]} <= mounts
    assert worker["image"] == compose()["x-app-image"]["image"]
