"""Discovering the prompt sets of a folder: every valid set by name, every invalid file with its
error, and a name declared by two files reported as an error in both."""

from __future__ import annotations

from pathlib import Path

from ...log import get_logger
from .errors import PromptSetError, PromptSetProblem
from .loader import LoadedPromptSet, load_prompt_set
from .parsing import locate, node_tree

log = get_logger(__name__)

SUFFIXES = (".yaml", ".yml", ".json")


def discover_prompt_sets(
    directory: str | Path,
) -> tuple[dict[str, LoadedPromptSet], dict[str, PromptSetError]]:
    """Load every `*.yaml`, `*.yml` and `*.json` directly in `directory` (not recursive; hidden
    files skipped). Returns (valid sets by name, errors by file path). Two files declaring the
    same name are both errors: neither can be the partition without the other being lost."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"prompt set folder {directory} does not exist or is not a folder")
    loaded: dict[str, LoadedPromptSet] = {}
    errors: dict[str, PromptSetError] = {}
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    by_name: dict[str, list[LoadedPromptSet]] = {}
    for file in files:
        try:
            item = load_prompt_set(file)
        except PromptSetError as exc:
            errors[str(file)] = exc
            continue
        by_name.setdefault(item.name, []).append(item)
    for name, items in by_name.items():
        if len(items) == 1:
            loaded[name] = items[0]
            continue
        for item in items:
            others = ", ".join(o.path.name for o in items if o is not item)
            line = _name_line(item.path)
            errors[str(item.path)] = PromptSetError(
                [
                    PromptSetProblem(
                        str(item.path), line, "name", f"name {name!r} is also declared by {others}"
                    )
                ]
            )
    log.info(
        "prompt sets in %s: %d valid, %d invalid (%s)",
        directory,
        len(loaded),
        len(errors),
        ", ".join(sorted(loaded)) or "none",
    )
    return dict(sorted(loaded.items())), errors


def _name_line(path: Path) -> int | None:
    try:
        root = node_tree(path.read_text(encoding="utf-8"))
    except OSError:
        return None
    return locate(root, ("name",))[0] if root is not None else None
