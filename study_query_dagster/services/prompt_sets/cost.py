"""Bounding what a prompt set can cost before it runs: an upper bound on prompt tokens from the
text (`max_prompt_tokens`), completion tokens from `max_tokens`, priced per target."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..pricing import PriceTable, get_price_table
from .models import PromptSet

# Token upper bound for prompts: byte-level BPE tokenizers (GPT, Llama 3) never emit more tokens
# than the UTF-8 bytes they encode; chat formatting adds a few special tokens per message (3-5
# in the OpenAI and Llama templates), for which these allowances are generous.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 8


def max_prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """An upper bound on the prompt tokens of one request (see MESSAGE_OVERHEAD_TOKENS)."""
    total = REQUEST_OVERHEAD_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + len(str(message.get("content") or "").encode("utf-8"))
        total += len(str(message.get("name") or "").encode("utf-8"))
    return total


@dataclass(frozen=True)
class TargetCost:
    label: str
    provider: str
    model: str  # the name looked up in the price table
    calls: int
    max_prompt_tokens: int  # over all calls to this target
    max_completion_tokens: int | None  # None: no max_tokens
    max_cost: float | None  # USD; None: unknown (see unknown_reason)
    unknown_reason: str | None = None


@dataclass(frozen=True)
class CostEstimate:
    """Upper bound on what a prompt set can cost, per target and in total (USD)."""

    targets: list[TargetCost] = field(default_factory=list)

    @property
    def total(self) -> float | None:
        """None when any target's bound is unknown: a partial sum would under-report."""
        if any(t.max_cost is None for t in self.targets):
            return None
        return sum(t.max_cost or 0.0 for t in self.targets)

    @property
    def unknown(self) -> dict[str, str]:
        """Target label -> why its cost cannot be bounded."""
        return {t.label: t.unknown_reason or "unknown" for t in self.targets if t.max_cost is None}

    def summary(self) -> str:
        total = self.total
        if total is not None:
            return f"at most ${total:,.2f}" if total >= 1 or total == 0 else f"at most ${total:.6f}"
        reasons = "; ".join(f"{label}: {why}" for label, why in self.unknown.items())
        return f"unknown ({reasons})"


def estimate_max_cost(prompt_set: PromptSet, price_table: PriceTable | None = None) -> CostEstimate:
    """Bound the cost of running `prompt_set` once: prompt tokens from the text (at most one
    token per UTF-8 byte plus formatting allowances), completion tokens from `max_tokens`."""
    table = price_table or get_price_table()
    per_prompt = sum(max_prompt_tokens(prompt_set.prompt_messages(p)) for p in prompt_set.prompts)
    calls = len(prompt_set.prompts) * prompt_set.samples
    targets: list[TargetCost] = []
    for target, label in zip(prompt_set.targets, prompt_set.target_labels, strict=True):
        prompt_tokens = per_prompt * prompt_set.samples
        max_tokens = target.params.max_tokens
        completion = max_tokens * calls if max_tokens is not None else None
        price = table.lookup(target.provider, target.model_name)
        reason = None
        if price is None:
            cost = None
            reason = (
                f"no price for {target.provider} model {target.model_name!r};"
                " add it to a PRICING_FILE"
            )
        elif completion is None and price.output_per_1m > 0:
            cost = None
            reason = "no max_tokens, so the answer length is unbounded"
        else:
            cost = price.cost(prompt_tokens, completion or 0)
        targets.append(
            TargetCost(
                label,
                target.provider,
                target.model_name,
                calls,
                prompt_tokens,
                completion,
                cost,
                reason,
            )
        )
    return CostEstimate(targets)
