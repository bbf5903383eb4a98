"""Is an answer right? Checked against its prompt's reference answers (`reference:`), one of:

- `exact`: the answer equals a reference once both are normalised (`normalize_answer`).
- `contains`: a reference's normalised words appear in the answer's, in order and together
  ("The capital is Canberra." contains "Canberra"; so, note, does "Not Canberra").
- `judge`: the LLM judge finds that the answer entails a reference (one direction: an answer
  that says more than the reference is still right). An exact match is accepted without a call.

A refusal, or an answer with no words, is never right.
"""

from __future__ import annotations

from collections.abc import Sequence

from .judge import ENTAILMENT, Judge
from .normalize import normalize_answer

MODES = ("exact", "contains", "judge")


def matches(answer: str, references: Sequence[str], mode: str) -> bool:
    """`exact` or `contains` correctness (no judge)."""
    words = normalize_answer(answer)
    if not words:
        return False
    wanted = [r for r in (normalize_answer(ref) for ref in references) if r]
    if mode == "exact":
        return words in wanted
    if mode == "contains":
        return any(f" {ref} " in f" {words} " for ref in wanted)
    raise ValueError(f"unknown correctness mode {mode!r}; use one of {', '.join(MODES)}")


class Grader:
    """Correctness of answers to one prompt set's prompts, by `mode`; with `judge`, each
    distinct (question, normalised answer) is judged once."""

    def __init__(self, mode: str, judge: Judge | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown correctness mode {mode!r}; use one of {', '.join(MODES)}")
        if mode == "judge" and judge is None:
            raise ValueError("correctness judge needs a judge (variation.judge)")
        self.mode = mode
        self.judge = judge
        self._judged: dict[tuple[str | None, tuple[str, ...], str], bool] = {}

    async def correct(
        self, answer: str, references: Sequence[str], question: str | None = None
    ) -> bool:
        if self.mode != "judge" or matches(answer, references, "exact"):
            return matches(answer, references, "exact" if self.mode == "judge" else self.mode)
        key = (question, tuple(references), normalize_answer(answer))
        if not key[2]:
            return False
        if key not in self._judged:
            verdict = False
            for reference in references:
                if await self.judge.verdict(question, answer, reference) == ENTAILMENT:
                    verdict = True
                    break
            self._judged[key] = verdict
        return self._judged[key]
