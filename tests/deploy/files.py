"""Readers for the deployment files, shared by the tests in this folder."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
WORKSPACE = DEPLOY / "workspace.yaml"
DAGSTER_YAML = DEPLOY / "dagster.yaml"
ENV_EXAMPLE = ROOT / ".env.example"


def compose() -> dict:
    """The compose file as Compose sees it before interpolation (YAML merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text())


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def env_keys(args: str) -> list[str]:
    """Names set by an `ENV a=1 b=2` instruction."""
    return re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args)


def yaml_env_refs(node) -> set[str]:
    """Names read through Dagster's `{env: NAME}` config sources."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            return {node["env"]}
        return set().union(*(yaml_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(yaml_env_refs(v) for v in node)) if node else set()
    return set()


def documented_env_names() -> set[str]:
    """Variables listed in .env.example, set or commented out (`NAME=` / `# NAME=`)."""
    pattern = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=")
    return {
        m.group(1) for line in ENV_EXAMPLE.read_text().splitlines() if (m := pattern.match(line))
    }
