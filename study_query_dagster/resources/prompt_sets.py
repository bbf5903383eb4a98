"""The prompt set folder (PROMPT_SETS_DIR): where the sensor looks and assets read from."""

import re
from pathlib import Path

import dagster as dg
from pydantic import Field

from ..services.prompt_sets import (
    LoadedPromptSet,
    PromptSetError,
    discover_prompt_sets,
)


class PromptSetsResource(dg.ConfigurableResource):
    directory: str = Field(default="prompt_sets", description="Folder of prompt set files.")

    @property
    def path(self) -> Path:
        return Path(self.directory)

    def discover(self) -> tuple[dict[str, LoadedPromptSet], dict[str, PromptSetError]]:
        return discover_prompt_sets(self.path)

    def load(self, name: str) -> LoadedPromptSet:
        """The valid prompt set called `name`, or a Failure naming the file, line and field."""
        valid, errors = self.discover()
        if name in valid:
            return valid[name]
        for path, error in errors.items():
            if _declares(Path(path), name):
                raise dg.Failure(
                    description=f"prompt set {name!r} is invalid:\n{error}",
                    metadata={
                        "file": path,
                        "line": error.line if error.line is not None else -1,
                        "field": error.field,
                    },
                )
        raise dg.Failure(
            description=(
                f"no prompt set named {name!r} in {self.path.resolve()} "
                f"(found: {', '.join(valid) or 'none'})"
            )
        )


def _declares(path: Path, name: str) -> bool:
    """Whether an (invalid) file is the one meant by `name`: its stem or its `name:` line."""
    if path.stem == name:
        return True
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    pattern = rf"""^\s*"?name"?\s*:\s*["']?{re.escape(name)}["']?\s*,?\s*$"""
    return re.search(pattern, text, re.MULTILINE) is not None
