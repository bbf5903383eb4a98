"""Answer variation: how much a target's answers to one prompt vary across samples, how
targets disagree, and how answers drift between runs.

| Module | Role |
| --- | --- |
| `normalize` | what `exact` equivalence compares |
| `metrics` | the formulas (semantic entropy, agreement, SEU, Vendi, JSD, ...) |
| `drift` | drift formulas and the permutation test |
| `strategies` | `EquivalenceStrategy`: `exact`, `embedding` (and the place for more) |
| `embedder` | `Embedder` over an `EmbeddingService` |
| `config` | `VariationConfig`, a prompt set's `variation:` block |
| `cells`, `scope` | a run's cells (prompt x target) from its calls; the run and its baseline |
| `classes`, `stored` | classified cells; classes as `semantic_cluster` groups and back |
| `measures` | classified cells -> `MetricValue`s with their n |
| `service` | `VariationService`: the four computations, stored in `variation_results` |
| `reports`, `checks`, `charts` | what the assets show and check |
"""

from ..prompt_sets.variation import VariationConfig
from .cells import REFUSED, Answer, Cell, cells_from_calls
from .classes import ClassifiedCell, classify
from .embedder import Embedder, EmbeddingServiceEmbedder
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
)

__all__ = [
    "METHOD_VERSION",
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
