"""How a prompt set reports what is wrong with it: one `PromptSetProblem` per problem (file, line,
field, message) gathered into one `PromptSetError`, and the field paths (`prompts[2].text`) they
name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A location inside a prompt set: mapping keys and list indexes, outermost first.
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class PromptSetProblem:
    """One problem in a prompt set file; `line` and `column` are 1-based (None if unknown)."""

    path: str
    line: int | None
    field: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PromptSetError(ValueError):
    """A prompt set file is invalid. `problems` lists every problem found, in file order; `path`,
    `line`, `field` and `column` describe the first. The message has one line per problem."""

    def __init__(self, problems: Sequence[PromptSetProblem]):
        if not problems:
            raise ValueError("PromptSetError needs at least one problem")
        self.problems = list(problems)
        first = self.problems[0]
        self.path, self.line, self.column = first.path, first.line, first.column
        self.field = first.field
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):  # picklable across Dagster process boundaries
        return (type(self), (self.problems,))


class FieldError(ValueError):
    """Raised by a model-level validator to blame one field of the model it validates."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def format_loc(loc: Sequence[str | int]) -> str:
    """`("prompts", 2, "text")` → `prompts[2].text`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
