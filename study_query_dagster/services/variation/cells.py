"""Cells: a run's answers to one prompt from one target, read from its captured calls.

Each work item (prompt x target x sample) counts once, by its final outcome: its successful
call (the earliest, should there be several); else, when the provider refused it (content filter,
refused request) or answered with `finish_reason: content_filter`, a member of the extra class
`refused`; else (rate limits, outages, timeouts, cancellations: nothing was answered) it is
excluded and counted in `excluded`.

An answer also carries its likelihood when the call captured log-probabilities: the sum of its
tokens' log-probabilities (what likelihood-based semantic entropy weighs answers by).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The provider's final word on a request: another attempt would not change it.
REFUSAL_ERROR_TYPES = frozenset({"content_filter", "bad_request", "unprocessable_entity"})
REFUSED = "refused"  # the class of refusals; never produced by normalisation of a real answer


@dataclass(frozen=True)
class Answer:
    call_id: int
    sample_index: int
    text: str  # "" for a refusal
    refused: bool = False
    logprob: float | None = None  # sum of the answer's token log-probabilities, if captured


@dataclass
class Cell:
    prompt_id: str
    target: str
    answers: list[Answer] = field(default_factory=list)  # by sample index
    excluded: int = 0  # items whose calls all failed for transient reasons
    question: str = ""  # the prompt as sent (its last user message), for a judge to read

    @property
    def key(self) -> tuple[str, str]:
        return (self.prompt_id, self.target)

    @property
    def n(self) -> int:
        return len(self.answers)

    @property
    def texts(self) -> list[str]:
        """Texts of the answers that are not refusals."""
        return [a.text for a in self.answers if not a.refused]

    @property
    def refusals(self) -> int:
        return sum(1 for a in self.answers if a.refused)


def _is_refusal(call: Any) -> bool:
    if call.status == "success":
        return (call.response_json or {}).get("finish_reason") == "content_filter"
    return call.status == "failed" and (call.error_json or {}).get("type") in REFUSAL_ERROR_TYPES


def logprob_sum(logprobs: Any) -> float | None:
    """The sum of the token log-probabilities of an OpenAI-shaped `logprobs` object
    ({"content": [{"logprob": ...}, ...]}); None when there are none or one is not finite."""
    content = logprobs.get("content") if isinstance(logprobs, Mapping) else None
    if not isinstance(content, list) or not content:
        return None
    values = [t.get("logprob") if isinstance(t, Mapping) else None for t in content]
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in values):
        return None
    return float(math.fsum(values))


def cells_from_calls(calls: Iterable[Any], logprobs: Mapping[int, Any] | None = None) -> list[Cell]:
    """The cells of a run from its text calls (`RawCall`s: every attempt of every execution),
    in order of first appearance of (prompt, target). Calls without a prompt id and target in
    their metadata (not made by a prompt-set run) are ignored. `logprobs` gives the
    log-probabilities of calls that keep them outside their response (a large artifact)."""
    logprobs = logprobs or {}
    items: dict[tuple[str, str, int], list[Any]] = {}
    for call in sorted(calls, key=lambda c: c.id):
        meta = call.metadata_json or {}
        prompt_id, target, sample = (
            meta.get("prompt_id"),
            meta.get("target"),
            meta.get("sample_index"),
        )
        if prompt_id is None or target is None:
            continue
        items.setdefault((str(prompt_id), str(target), int(sample or 0)), []).append(call)
    cells: dict[tuple[str, str], Cell] = {}
    for (prompt_id, target, sample), attempts in sorted(
        items.items(), key=lambda kv: min(c.id for c in kv[1])
    ):
        cell = cells.setdefault((prompt_id, target), Cell(prompt_id, target))
        success = next((c for c in attempts if c.status == "success"), None)
        final = success or attempts[-1]
        if _is_refusal(final):
            cell.answers.append(Answer(final.id, sample, "", refused=True))
        elif success is not None:
            response = success.response_json or {}
            text = response.get("text")
            likelihood = logprob_sum(logprobs.get(success.id, response.get("logprobs")))
            cell.answers.append(
                Answer(success.id, sample, text if isinstance(text, str) else "", False, likelihood)
            )
        else:
            cell.excluded += 1
    for cell in cells.values():
        cell.answers.sort(key=lambda a: a.sample_index)
    return list(cells.values())
