"""The LLM judge of entailment: does one answer to a question semantically entail another?

The prompt is the one of Farquhar et al. (Nature 2024), the question included; the reply is
read as the earliest of "entailment", "contradiction" and "neutral" it contains (anything else
counts as neutral, and is counted as unparsed). `InferenceJudge` asks through an
`InferenceService`: every verdict is a captured call in the run's `entailment` group, asked with
`cache=True` (an identical request, in this run or an earlier one, is answered from its stored
call), and each (question, premise, hypothesis) is asked at most once per judge object.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, Protocol

from ..inference import InferenceService

ENTAILMENT, NEUTRAL, CONTRADICTION = "entailment", "neutral", "contradiction"
VERDICTS = (ENTAILMENT, NEUTRAL, CONTRADICTION)
ENTAILMENT_GROUP = "entailment"
# Bump when the prompt or the reading of replies changes: verdicts of another version are
# other results (the version is part of the strategy's settings, hence of its key).
PROMPT_VERSION = "1"
# The judge is sent temperature 0 unless its params say otherwise.
DEFAULT_PARAMS = {"temperature": 0.0}

_WORD = re.compile(r"entailment|contradiction|neutral")


def judge_prompt(question: str | None, premise: str, hypothesis: str) -> str:
    """The entailment question for one ordered pair of answers."""
    about = f'We are evaluating answers to the question "{question}"\n' if question else ""
    return (
        f"{about}Here are two possible answers:\n"
        f"Possible Answer 1: {premise}\n"
        f"Possible Answer 2: {hypothesis}\n"
        "Does Possible Answer 1 semantically entail Possible Answer 2? "
        "Respond with entailment, contradiction, or neutral."
    )


def read_verdict(reply: str) -> str | None:
    """The verdict a reply states (the earliest of the three words), None when it names none."""
    found = _WORD.search(reply.casefold())
    return found.group(0) if found else None


class Judge(Protocol):
    """Verdicts on ordered pairs of answers to a question."""

    async def verdict(self, question: str | None, premise: str, hypothesis: str) -> str: ...


class InferenceJudge:
    """A `Judge` calling a chat model through `InferenceService` (see the module docstring).
    `requests` counts distinct questions asked of it; the service's `provider_calls` those
    that reached the provider (the rest were cache hits)."""

    def __init__(
        self,
        service: InferenceService,
        params: Mapping[str, Any] | None = None,
        *,
        group_id: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ):
        self.service = service
        self.params = {**DEFAULT_PARAMS, **dict(params or {})}
        self.group_id = group_id
        self.metadata = dict(metadata or {})
        self._asked: dict[tuple[str | None, str, str], asyncio.Future[str]] = {}
        self.requests = 0
        self.unparsed = 0

    @property
    def provider_calls(self) -> int:
        return self.service.provider_calls

    async def verdict(self, question: str | None, premise: str, hypothesis: str) -> str:
        key = (question, premise, hypothesis)
        asked = self._asked.get(key)
        if asked is None:  # the first to ask sends; concurrent askers of the same pair wait
            self.requests += 1
            asked = self._asked[key] = asyncio.ensure_future(self._ask(*key))
        return await asyncio.shield(asked)

    async def _ask(self, question: str | None, premise: str, hypothesis: str) -> str:
        result = await self.service.run_inference(
            messages=[{"role": "user", "content": judge_prompt(question, premise, hypothesis)}],
            cache=True,
            group_id=self.group_id,
            extra_metadata={"purpose": ENTAILMENT_GROUP, **self.metadata},
            **self.params,
        )
        verdict = read_verdict(result["response"] or "")
        if verdict is None:
            self.unparsed += 1
            verdict = NEUTRAL
        return verdict

    def usage(self) -> dict[str, int]:
        return {
            "judge_requests": self.requests,
            "judge_provider_calls": self.provider_calls,
            "judge_unparsed_replies": self.unparsed,
        }
