"""docs/ARCHITECTURE.md lists every module of the package, and every module it lists exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "study_query_dagster"
DOC = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
# A path in backticks: `db/groups.py`, `providers/`, `tests/providers/test_registry.py`.
NAMED = set(re.findall(r"`([\w./-]+(?:\.py|/))`", DOC))


def modules() -> set[str]:
    found = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if path.name == "__init__.py" or "versions" in relative.parts:
            continue  # a package's re-exports; Alembic revisions are named by their folder
        found.add(relative.as_posix())
    return found


def test_every_module_is_listed():
    missing = sorted(modules() - NAMED)
    assert not missing, f"docs/ARCHITECTURE.md does not list {missing}"


def test_every_listed_path_exists():
    stale = sorted(n for n in NAMED if not (PACKAGE / n).exists() and not (ROOT / n).exists())
    assert not stale, f"docs/ARCHITECTURE.md names paths that do not exist: {stale}"


def test_it_opens_with_the_diagram_of_layers_and_assets():
    first_block = DOC.split("```")[1]
    assert first_block.startswith("mermaid")
    for name in (
        "providers/",
        "db/",
        "services/",
        "resources/",
        "assets/",
        "prompt_set",
        "inference_run",
        "response_embeddings",
        "study_results",
        "uncertainty_calibration",
        "answer_clusters",
        "migrated_raw_calls",
    ):
        assert name in first_block, name
