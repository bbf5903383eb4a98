"""Cost estimates from a price table (USD per 1M input/output tokens).

The shipped table (`pricing.json`) covers common OpenAI, Azure and Hyperbolic models; a JSON
file named by PRICING_FILE, in the same shape, overrides or extends it. An unknown model costs
`None` — never 0 — so totals show that something is missing instead of under-reporting.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).with_name("pricing.json")
# "gpt-4o-2024-08-06" and "gpt-4o-mini-0125" price like "gpt-4o" and "gpt-4o-mini".
_DATE_SUFFIX = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
# Azure bills deployments at the underlying model's price.
FALLBACK_PROVIDER = {"azure": "openai"}


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


class PriceTable:
    def __init__(self, prices: dict[str, dict[str, Price]]):
        self.prices = prices

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "price table") -> PriceTable:
        prices: dict[str, dict[str, Price]] = {}
        if not isinstance(data.get("prices"), dict):
            raise ValueError(f"{source}: top-level field 'prices' must be an object")
        for provider, models in data["prices"].items():
            if not isinstance(models, dict):
                raise ValueError(f"{source}: prices.{provider} must be an object")
            for model, entry in models.items():
                try:
                    price = Price(float(entry["input"]), float(entry["output"]))
                except (KeyError, TypeError, ValueError) as exc:
                    raise ValueError(
                        f"{source}: prices.{provider}.{model} needs numeric 'input' and 'output'"
                        f" (got {entry!r})"
                    ) from exc
                if price.input_per_1m < 0 or price.output_per_1m < 0:
                    raise ValueError(f"{source}: prices.{provider}.{model} must not be negative")
                prices.setdefault(provider, {})[model] = price
        return cls(prices)

    @classmethod
    def load(cls, override: Path | str | None = None) -> PriceTable:
        table = cls.from_json(json.loads(SHIPPED.read_text()), str(SHIPPED))
        if override:
            path = Path(override)
            if not path.exists():
                raise FileNotFoundError(f"PRICING_FILE {path} does not exist")
            try:
                data = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: not valid JSON: {exc}") from exc
            table = table.merged(cls.from_json(data, str(path)))
        return table

    def merged(self, other: PriceTable) -> PriceTable:
        prices = {p: dict(m) for p, m in self.prices.items()}
        for provider, models in other.prices.items():
            prices.setdefault(provider, {}).update(models)
        return PriceTable(prices)

    def lookup(self, provider: str, model: str | None) -> Price | None:
        """Exact model, then without a date suffix, then the provider's "*" entry; Azure falls
        back to OpenAI's entry for the same model. A provider name that extends a priced one
        (the original tool's `azure_openai_<deployment>`) prices as that one."""
        provider = self._known(provider)
        for candidate_provider in (provider, FALLBACK_PROVIDER.get(provider)):
            models = self.prices.get(candidate_provider or "", {})
            if model:
                if model in models:
                    return models[model]
                base = _DATE_SUFFIX.sub("", model)
                if base in models:
                    return models[base]
            if "*" in models:
                return models["*"]
        return None

    def _known(self, provider: str) -> str:
        if provider in self.prices or provider in FALLBACK_PROVIDER:
            return provider
        for known in sorted({*self.prices, *FALLBACK_PROVIDER}, key=len, reverse=True):
            if provider.startswith((f"{known}_", f"{known}-")):
                return known
        return provider

    def cost(
        self,
        provider: str,
        model: str | None,
        prompt_tokens: int | None,
        completion_tokens: int | None,
    ) -> float | None:
        price = self.lookup(provider, model)
        if price is None or prompt_tokens is None:
            return None
        return price.cost(prompt_tokens, completion_tokens or 0)


@lru_cache(maxsize=8)
def _cached(override: str | None) -> PriceTable:
    return PriceTable.load(override)


def get_price_table(override: Path | str | None = None) -> PriceTable:
    """The shipped table merged with `override` (default: the PRICING_FILE setting)."""
    if override is None:
        from ..config import get_settings

        override = get_settings().pricing_file
    return _cached(str(override) if override else None)


def estimate_cost(
    provider: str,
    model: str | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
) -> float | None:
    return get_price_table().cost(provider, model, prompt_tokens, completion_tokens)
