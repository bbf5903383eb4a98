""".env.example documents every variable the project and its deployment files read, and no
variable that nothing reads."""

from __future__ import annotations

import re

import yaml

from study_query_dagster.config import Settings

from .files import (
    COMPOSE,
    DAGSTER_YAML,
    ROOT,
    WORKSPACE,
    compose,
    dockerfile_instructions,
    documented_env_names,
    env_keys,
    yaml_env_refs,
)

# Set for third-party software inside the images, not settings anyone chooses: not documented.
THIRD_PARTY = {
    "POSTGRES_DB": "the pgvector image's first database, fixed to `study` in the compose file",
    "PYTHONDONTWRITEBYTECODE": "Python runtime switch in the image",
    "PYTHONUNBUFFERED": "Python runtime switch in the image",
    "PIP_NO_CACHE_DIR": "pip switch while building the image",
    "PIP_DISABLE_PIP_VERSION_CHECK": "pip switch while building the image",
}


def compose_names() -> set[str]:
    # ${NAME}, ${NAME:-default}, ${NAME:?error}; $${NAME} is the container shell's, not ours.
    interpolated = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    environment = {
        name
        for service in compose()["services"].values()
        for name in service.get("environment", {})
    }
    return interpolated | environment


def dockerfile_names() -> set[str]:
    names = set()
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            names |= set(env_keys(args))
        elif keyword == "ARG":
            names.add(args.split("=")[0])
    return names


def dagster_config_names() -> set[str]:
    return yaml_env_refs(yaml.safe_load(DAGSTER_YAML.read_text())) | yaml_env_refs(
        yaml.safe_load(WORKSPACE.read_text())
    )


def settings_names() -> set[str]:
    return {field.alias for field in Settings.model_fields.values() if field.alias}


def makefile_names() -> set[str]:
    return set(
        re.findall(r"^(?:export\s+)?([A-Z][A-Z0-9_]*)\s*\?=", (ROOT / "Makefile").read_text(), re.M)
    )


def test_every_variable_read_is_documented():
    read = compose_names() | dockerfile_names() | dagster_config_names() | settings_names()
    undocumented = read - documented_env_names() - set(THIRD_PARTY)
    assert not undocumented, f"add to .env.example: {sorted(undocumented)}"


def test_no_documented_variable_is_stale():
    readers = (
        compose_names() | dockerfile_names() | dagster_config_names() | settings_names()
    ) | makefile_names()
    stale = documented_env_names() - readers
    assert not stale, f"nothing reads these any more: {sorted(stale)}"


def test_the_readers_are_parsed():
    """Guards the two tests above against parsers that silently find nothing."""
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "PORT", "DATABASE_URL"} <= compose_names()
    assert "POSTGRES_USER" not in dockerfile_names() and "DAGSTER_HOME" in dockerfile_names()
    assert dagster_config_names() == {"DAGSTER_POSTGRES_URL", "DAGSTER_CODE_SERVER_HOST"}
    assert {"DATABASE_URL", "OPENAI_API_KEY"} <= settings_names()
    assert {"DAGSTER_POSTGRES_URL", "OPENAI_API_KEY", "DATABASE_URL"} <= documented_env_names()
    assert set(THIRD_PARTY) <= compose_names() | dockerfile_names()
