"""`VariationConfig`: a prompt set's `variation:` block, how its answers' variation is measured
(by services/variation).

    variation: {strategy: exact}                       # the default
    variation: {strategy: embedding, threshold: 0.15}  # needs `embed: on`
    variation: {baseline: previous, permutations: 999}

`baseline` is the run a new run is compared with for drift: `previous` (the set's run before
this one) or a Dagster run id. Defaults suit short answers: `exact` equivalence (embedding
similarity confuses contradictions that share words), 999 permutations (p-values down to 0.001).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PREVIOUS = "previous"
DEFAULT_PERMUTATIONS = 999
DEFAULT_EMBEDDING_THRESHOLD = 0.15
MAX_PERMUTATIONS = 100_000


class VariationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["exact", "embedding"] = "exact"
    threshold: float | None = Field(
        None,
        gt=0,
        le=2,
        description="cosine distance at which the embedding strategy's clusters stop merging",
    )
    baseline: str = Field(PREVIOUS, min_length=1, max_length=64)
    permutations: int = Field(DEFAULT_PERMUTATIONS, ge=1, le=MAX_PERMUTATIONS)
    seed: int = Field(0, ge=0, description="seed of the permutation test's shuffles")

    @model_validator(mode="after")
    def _threshold_for_embedding(self) -> VariationConfig:
        if self.threshold is not None and self.strategy != "embedding":
            raise ValueError(
                f"'threshold' only applies to strategy embedding (strategy is {self.strategy!r})"
            )
        return self

    @property
    def effective_threshold(self) -> float | None:
        if self.strategy != "embedding":
            return None
        return self.threshold if self.threshold is not None else DEFAULT_EMBEDDING_THRESHOLD
