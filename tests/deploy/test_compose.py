"""deploy/docker-compose.yml against the Compose Specification's JSON schema (the copy that the
check-jsonschema wheel ships, so nothing is downloaded), and the wiring the deployment needs."""

from __future__ import annotations

import copy
import shlex

import jsonschema
import pytest
import yaml
from check_jsonschema.builtin_schemas import get_builtin_schema
from sqlalchemy.engine import make_url

from .files import COMPOSE, DEPLOY, WORKSPACE, compose, dockerfile_instructions

APP_SERVICES = ("migrate", "code-server", "webserver", "daemon")
LONG_RUNNING = ("postgres", "code-server", "webserver", "daemon")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = get_builtin_schema("vendor.compose-spec")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _errors(validator, document) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_matches_the_compose_specification(validator):
    assert _errors(validator, compose()) == []


def test_the_schema_rejects_what_compose_would_reject(validator):
    """The validation has teeth: a misspelt key or an unknown depends_on condition fails."""
    typo = compose()
    typo["services"]["webserver"]["healtcheck"] = typo["services"]["webserver"]["healthcheck"]
    assert _errors(validator, typo)
    condition = copy.deepcopy(compose())
    condition["services"]["webserver"]["depends_on"]["code-server"]["condition"] = "running"
    assert _errors(validator, condition)


def test_long_running_services_have_healthchecks_and_start_in_order():
    services = compose()["services"]
    for name in LONG_RUNNING:
        test = services[name]["healthcheck"]["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            condition = rule["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), name
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["code-server"]["depends_on"]["migrate"] == {
        "condition": "service_completed_successfully"
    }
    assert services["migrate"]["restart"] == "no"


def test_only_the_ui_is_published_and_only_on_loopback():
    services = compose()["services"]
    published = {name: s["ports"] for name, s in services.items() if s.get("ports")}
    assert list(published) == ["webserver"]
    for port in published["webserver"]:
        host_ip, container_port = str(port).split(":")[0], str(port).rsplit(":")[-1]
        assert host_ip == "127.0.0.1" and container_port == "3000"
    assert "-h" in services["webserver"]["command"]


def test_postgres_has_pgvector_persistent_data_and_a_dagster_database():
    postgres = compose()["services"]["postgres"]
    assert postgres["image"].startswith("pgvector/pgvector:")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in postgres["volumes"]}
    assert mounts["/var/lib/postgresql/data"] in compose()["volumes"]
    init_dir = DEPLOY / mounts["/docker-entrypoint-initdb.d"]
    sql = " ".join(p.read_text() for p in init_dir.glob("*.sql"))
    assert "CREATE DATABASE dagster" in sql


def test_each_service_gets_the_urls_it_needs_and_api_keys_reach_only_the_code_server():
    services = compose()["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert env["DAGSTER_HOME"] == "/opt/dagster/dagster_home", name
        dagster_url = make_url(env["DAGSTER_POSTGRES_URL"].replace("${", "").replace("}", ""))
        assert dagster_url.drivername == "postgresql+psycopg2", name
        assert dagster_url.database == "dagster"
    for name in ("migrate", "code-server"):
        app_url = services[name]["environment"]["DATABASE_URL"]
        assert make_url(app_url.replace("${", "").replace("}", "")).database == "study"
        assert app_url.startswith("postgresql+psycopg2://")
    assert [n for n, s in services.items() if "env_file" in s] == ["code-server"]
    assert services["code-server"]["env_file"] == "../.env"


def test_prompt_sets_and_dagster_storage_are_volumes():
    services = compose()["services"]
    code_server_mounts = {
        v.split(":")[1]: v.split(":")[0] for v in services["code-server"]["volumes"]
    }
    assert code_server_mounts["/opt/dagster/app/prompt_sets"] == "../prompt_sets"
    # Compute logs written by runs in the code server must be readable by the webserver.
    for name in ("code-server", "webserver", "daemon"):
        assert "dagster_storage:/opt/dagster/dagster_home/storage" in services[name]["volumes"]


def test_processes_serve_the_definitions_on_the_port_the_workspace_names():
    services = compose()["services"]
    workspace = yaml.safe_load(WORKSPACE.read_text())
    (location,) = workspace["load_from"]
    grpc = location["grpc_server"]
    assert grpc["host"] == {"env": "DAGSTER_CODE_SERVER_HOST"}
    for name in ("webserver", "daemon"):
        assert services[name]["environment"]["DAGSTER_CODE_SERVER_HOST"] == "code-server"
        assert services[name]["command"][-2:] == ["-w", "workspace.yaml"]

    command = services["code-server"]["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-m") + 1] == "study_query_dagster.definitions"
    assert int(command[command.index("-p") + 1]) == grpc["port"]
    health = services["code-server"]["healthcheck"]["test"]
    assert health[-1] == str(grpc["port"])

    # The image puts workspace.yaml where those relative paths find it.
    instructions = dockerfile_instructions()
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    copies = [shlex.split(args) for keyword, args in instructions if keyword == "COPY"]
    assert ["deploy/workspace.yaml", f"{workdir}/workspace.yaml"] in copies


def test_compose_builds_the_image_from_the_repository_root():
    build = compose()["services"]["code-server"]["build"]
    assert (COMPOSE.parent / build["context"]).resolve() == COMPOSE.parents[1]
    assert (COMPOSE.parents[1] / build["dockerfile"]).is_file()
