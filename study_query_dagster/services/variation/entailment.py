"""`entailment`: answers are equivalent when an LLM judge finds that they entail each other
(bidirectional entailment, Kuhn et al. 2023; Farquhar et al., Nature 2024).

Greedy clustering, as in the paper: answers are taken in sample order; each is compared with
the first answer of every class found so far, in order, and joins the first class it is
equivalent to, else founds a new class. An answer once assigned is never moved, so the classes
of the first m answers do not depend on the answers after them.

- `strict` (the default): both directions must be judged "entailment".
- non-strict: neither direction is "contradiction" and they are not both "neutral" (one
  entailment with a neutral converse suffices).

Cost: answers that are equal once normalised (`normalize_answer`) share a class without a call
(only the first of them is ever sent), answers that normalise to nothing form one class of
their own, and a comparison stops after its first direction when that already decides it. So a
cell of n answers ending with K classes costs at most 2·n·K judge calls (2·m·K for its m
distinct answers), and nothing on a re-run: the judge's calls are cached by request hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .judge import CONTRADICTION, ENTAILMENT, NEUTRAL, PROMPT_VERSION, Judge
from .normalize import normalize_answer
from .strategies import EquivalenceStrategy, Partition, first_appearance, most_common_medoid


class EntailmentStrategy(EquivalenceStrategy):
    name = "entailment"

    def __init__(
        self, judge_target: Mapping[str, Any], judge: Judge | None = None, *, strict: bool = True
    ):
        self.judge_target = dict(judge_target)
        self.judge = judge
        self.strict = bool(strict)

    def settings(self) -> dict[str, Any]:
        return {"judge": self.judge_target, "strict": self.strict, "prompt_version": PROMPT_VERSION}

    def usage(self) -> dict[str, int]:
        usage = getattr(self.judge, "usage", None)
        return usage() if usage is not None else {}

    async def equivalent(self, question: str | None, a: str, b: str) -> bool:
        """Whether a and b are one answer, asking the judge as little as the rule allows."""
        assert self.judge is not None
        forward = await self.judge.verdict(question, a, b)
        if self.strict:
            return forward == ENTAILMENT and await self.judge.verdict(question, b, a) == ENTAILMENT
        if forward == CONTRADICTION:
            return False
        backward = await self.judge.verdict(question, b, a)
        return backward != CONTRADICTION and (forward, backward) != (NEUTRAL, NEUTRAL)

    async def partition(self, texts: Sequence[str], question: str | None = None) -> Partition:
        if not texts:
            raise ValueError("a partition needs at least one answer")
        if self.judge is None:
            raise RuntimeError("this entailment strategy has no judge to ask (built for its key)")
        keys = [normalize_answer(t) for t in texts]
        class_of: dict[str, int] = {}  # normalised answer -> class
        founders: list[int] = []  # per class, the index of its first answer
        for index, key in enumerate(keys):
            if key in class_of:
                continue
            label = None
            if key:  # an answer with no words is compared with nothing
                for k, founder in enumerate(founders):
                    if keys[founder] and await self.equivalent(
                        question, texts[founder], texts[index]
                    ):
                        label = k
                        break
            if label is None:
                label = len(founders)
                founders.append(index)
            class_of[key] = label
        labels = first_appearance([class_of[key] for key in keys])
        return Partition(tuple(labels), most_common_medoid(texts, labels))
