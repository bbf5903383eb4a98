"""Answer variation: how much a target's answers to one prompt vary across samples, how
targets disagree, and how answers drift between runs.

| Module | Role |
| --- | --- |
| `normalize` | what `exact` equivalence compares |
| `metrics` | the formulas (semantic entropy, agreement, SEU, Vendi, JSD, ...) |
| `drift` | drift formulas and the permutation test |
| `strategies` | `EquivalenceStrategy`: `exact`, `embedding`; `STRATEGIES`, `strategy_for_config` |
| `entailment`, `judge` | the `entailment` strategy and its LLM judge (`InferenceJudge`) |
| `embedder` | `Embedder` over an `EmbeddingService` |
| `config` | `VariationConfig`, a prompt set's `variation:` block |
| `cells`, `scope` | a run's cells (prompt x target) from its calls; the run and its baseline |
| `classes`, `stored` | classified cells; classes as `semantic_cluster` groups and back |
| `measures` | classified cells -> `MetricValue`s with their n |
| `service` | `VariationService`: the five computations, stored in `variation_results` |
| `correctness`, `calibration`, `calibrate` | right answers against references; AUROC, accuracy at coverage; a run's calibration |
| `clustering`, `answer_clusters` | scikit-learn clustering of answer embeddings; `AnswerClusterService` |
| `reports`, `checks`, `charts`, `analysis_charts` | what the assets show and check |
| `runner` | the entry points the assets call (`measure`, `cluster_answers`, `open_checks`) |
"""

from ..prompt_sets.variation import VariationConfig
from .answer_clusters import AnswerClusterService, ClusterSummarizer
from .cells import REFUSED, Answer, Cell, cells_from_calls
from .classes import ClassifiedCell, classify
from .correctness import Grader
from .embedder import Embedder, EmbeddingServiceEmbedder
from .entailment import EntailmentStrategy
from .judge import InferenceJudge, Judge
from .measures import METHOD_VERSION, MetricValue
from .normalize import normalize_answer
from .scope import RunScope, find_baseline, load_cells, run_scope
from .service import VariationService
from .stored import IncompleteClasses
from .strategies import (
    STRATEGIES,
    EmbeddingStrategy,
    EquivalenceStrategy,
    ExactStrategy,
    Partition,
    build_strategy,
    strategy_for_config,
)

__all__ = [
    "METHOD_VERSION",
    "AnswerClusterService",
    "ClusterSummarizer",
    "EntailmentStrategy",
    "Grader",
    "InferenceJudge",
    "Judge",
    "strategy_for_config",
    "REFUSED",
    "STRATEGIES",
    "Answer",
    "Cell",
    "ClassifiedCell",
    "Embedder",
    "EmbeddingServiceEmbedder",
    "EmbeddingStrategy",
    "EquivalenceStrategy",
    "ExactStrategy",
    "IncompleteClasses",
    "MetricValue",
    "Partition",
    "RunScope",
    "VariationConfig",
    "VariationService",
    "build_strategy",
    "cells_from_calls",
    "classify",
    "find_baseline",
    "load_cells",
    "normalize_answer",
    "run_scope",
]
