"""Loading one prompt set: a file or a string becomes a `LoadedPromptSet` (the validated set, where
it came from and its content hash), or a `PromptSetError` listing every problem with its line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PromptSetError, PromptSetProblem
from .models import PromptSet, content_hash
from .parsing import parse_text
from .validation import validate


@dataclass(frozen=True)
class LoadedPromptSet:
    path: Path
    prompt_set: PromptSet
    content_hash: str

    @property
    def name(self) -> str:
        return self.prompt_set.name


def load_prompt_set(path: str | Path) -> LoadedPromptSet:
    """Read, parse and validate one file. Raises PromptSetError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PromptSetError(
            [PromptSetProblem(str(path), None, "", f"cannot read file: {reason}")]
        ) from None
    return parse_prompt_set(text, path)


def parse_prompt_set(text: str, path: str | Path = "<string>") -> LoadedPromptSet:
    """Validate prompt set text; `path` names the source in errors and picks JSON for `.json`."""
    source = str(path)
    data, root = parse_text(text, source, as_json=str(path).lower().endswith(".json"))
    prompt_set = validate(data, root, source)
    return LoadedPromptSet(Path(path), prompt_set, content_hash(prompt_set))
