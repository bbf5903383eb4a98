"""`VariationConfig`: a prompt set's `variation:` block, how its answers' variation is measured
(by services/variation).

    variation: {strategy: exact}                       # the default
    variation: {strategy: embedding, threshold: 0.15}  # needs `embed: on`
    variation: {baseline: previous, permutations: 999}
    variation:                                         # an LLM judge of mutual entailment
      strategy: entailment
      judge: {provider: openai, model: gpt-4o-mini}    # a target like any other
      strict: true                                     # both directions must be "entailment"
      correctness: contains                            # against prompts' `reference:`
      clusters: {method: kmeans, k_max: 8}             # answer_clusters (needs `embed: on`)

`baseline` is the run a new run is compared with for drift: `previous` (the set's run before
this one) or a Dagster run id. Defaults suit short answers: `exact` equivalence (embedding
similarity confuses contradictions that share words), 999 permutations (p-values down to 0.001).
`correctness` says how an answer is checked against its prompt's reference answers: normalised
`exact` match, `contains` (a reference's words appear in the answer, in order) or the `judge`
(the answer entails a reference).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from ...providers.offline_judge import JUDGE_PARAM, check_script
from ...providers.registry import CHAT_PROVIDERS
from .errors import FieldError

PREVIOUS = "previous"
DEFAULT_PERMUTATIONS = 999
DEFAULT_EMBEDDING_THRESHOLD = 0.15
MAX_PERMUTATIONS = 100_000
DEFAULT_COVERAGES = (0.5, 0.8)
STRATEGY_NAMES = ("exact", "embedding", "entailment")
MAX_CLUSTERS = 50


def _judge_script(value: Any) -> Any:
    if value is None:
        return None
    try:
        check_script(value)
    except ValueError as error:
        raise FieldError("", str(error)) from None
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelParams(_Strict):
    """What a judge or summary target is sent besides the prompt."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    seed: int | None = None
    # Offline only: the scripted entailment judge (providers/offline_judge.py).
    offline_judge: Annotated[Any, BeforeValidator(_judge_script)] = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ModelTarget(_Strict):
    """A model the analysis calls (the entailment judge, the cluster summariser): provider,
    model (or Azure deployment) and params, as in `targets:`."""

    provider: Literal[CHAT_PROVIDERS]
    model: str | None = Field(None, min_length=1)
    deployment: str | None = Field(None, min_length=1)
    params: ModelParams = Field(default_factory=ModelParams)

    @model_validator(mode="after")
    def _consistent(self) -> ModelTarget:
        if self.deployment is not None and self.provider != "azure":
            raise FieldError("deployment", "'deployment' is only for provider azure")
        if self.model is None and self.deployment is None:
            raise FieldError("model", f"a {self.provider} model needs 'model' (or 'deployment')")
        if self.params.offline_judge is not None and self.provider != "offline":
            raise FieldError(
                f"params.{JUDGE_PARAM}", "the scripted judge is for provider offline only"
            )
        return self

    @property
    def model_name(self) -> str:
        return self.deployment or self.model or ""

    def describe(self) -> dict[str, Any]:
        """Provider, model and params: what identifies the judge's verdicts."""
        return {
            "provider": self.provider,
            "model": self.model_name,
            "params": self.params.as_dict(),
        }


class ClusterConfig(_Strict):
    """How `answer_clusters` clusters a run's answers in embedding space."""

    enabled: bool = True
    method: Literal["kmeans", "hdbscan"] = "kmeans"
    k_min: int = Field(2, ge=2, le=MAX_CLUSTERS)
    k_max: int = Field(8, ge=2, le=MAX_CLUSTERS)
    k_rule: Literal["silhouette", "knee"] = "silhouette"
    restarts: int = Field(5, ge=2, le=50, description="k-means seeds compared for stability")
    min_cluster_size: int = Field(5, ge=2, le=10_000, description="hdbscan only")
    window: int = Field(1, ge=1, le=100, description="how many of the set's newest runs")
    seed: int = Field(0, ge=0)
    summary: ModelTarget | None = None

    @model_validator(mode="after")
    def _range(self) -> ClusterConfig:
        if self.k_min > self.k_max:
            raise FieldError("k_min", f"k_min ({self.k_min}) is above k_max ({self.k_max})")
        return self

    def settings(self) -> dict[str, Any]:
        """The parameters that determine the clusters (recorded with them)."""
        common = {"method": self.method, "window": self.window, "seed": self.seed}
        if self.method == "kmeans":
            return {
                **common,
                "k_min": self.k_min,
                "k_max": self.k_max,
                "k_rule": self.k_rule,
                "restarts": self.restarts,
            }
        return {**common, "min_cluster_size": self.min_cluster_size}


class VariationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal[STRATEGY_NAMES] = "exact"
    threshold: float | None = Field(
        None,
        gt=0,
        le=2,
        description="cosine distance at which the embedding strategy's clusters stop merging",
    )
    baseline: str = Field(PREVIOUS, min_length=1, max_length=64)
    permutations: int = Field(DEFAULT_PERMUTATIONS, ge=1, le=MAX_PERMUTATIONS)
    seed: int = Field(0, ge=0, description="seed of the permutation test's shuffles")
    judge: ModelTarget | None = None
    strict: bool | None = Field(
        None, description="entailment: both directions must be entailment (default true)"
    )
    correctness: Literal["exact", "contains", "judge"] = "exact"
    coverages: tuple[Annotated[float, Field(gt=0, le=1)], ...] = Field(
        DEFAULT_COVERAGES, min_length=1, max_length=10
    )
    clusters: ClusterConfig = Field(default_factory=ClusterConfig)

    @model_validator(mode="after")
    def _threshold_for_embedding(self) -> VariationConfig:
        if self.threshold is not None and self.strategy != "embedding":
            raise ValueError(
                f"'threshold' only applies to strategy embedding (strategy is {self.strategy!r})"
            )
        if self.strict is not None and self.strategy != "entailment":
            raise FieldError(
                "strict",
                f"'strict' only applies to strategy entailment (strategy is {self.strategy!r})",
            )
        needs_judge = self.strategy == "entailment" or self.correctness == "judge"
        if needs_judge and self.judge is None:
            why = "strategy entailment" if self.strategy == "entailment" else "correctness judge"
            raise FieldError("judge", f"{why} needs a judge: judge: {{provider: ..., model: ...}}")
        if self.judge is not None and not needs_judge:
            raise FieldError(
                "judge",
                "a judge is only called by strategy entailment or correctness judge (neither is"
                " set)",
            )
        return self

    @property
    def strict_entailment(self) -> bool:
        return self.strict is not False

    @property
    def effective_threshold(self) -> float | None:
        if self.strategy != "embedding":
            return None
        return self.threshold if self.threshold is not None else DEFAULT_EMBEDDING_THRESHOLD
