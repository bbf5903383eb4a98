"""Answer variation: how much a target's answers to one prompt vary across samples, how
targets disagree, how answers drift between runs, and how well uncertainty predicts wrong
answers."""

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
