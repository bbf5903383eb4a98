"""The embedding strategy through a real EmbeddingService and the offline semantic embedder
(wordllama, from its wheel), vectors cached in the database. These tests assert an ordering —
identical answers < paraphrases of one answer < a 7/3 split between two answers < ten
different answers — not a "true" entropy: what a distance means depends on the embedder (the
hash embedder, which measures shared words, rates the paraphrases above the split)."""

import math

import pytest

from study_query_dagster.db import GroupRepository
from study_query_dagster.providers.embeddings import OfflineEmbeddingProvider
from study_query_dagster.providers.wordllama_embeddings import WordLlamaEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService
from study_query_dagster.services.prompt_sets.variation import VariationConfig
from study_query_dagster.services.variation import (
    EmbeddingServiceEmbedder,
    VariationService,
    run_scope,
)
from study_query_dagster.services.variation import measures as m

from .support import make_run, prompt_set_content, split

PARAPHRASES = [
    "The capital of Australia is Canberra.",
    "Canberra is the capital of Australia.",
    "Australia's capital city is Canberra.",
    "It's Canberra.",
    "Canberra.",
    "The Australian capital is Canberra.",
    "Canberra is Australia's capital.",
    "The capital city of Australia is Canberra.",
    "Australia has Canberra as its capital.",
    "Canberra, the capital of Australia.",
]
DIFFERENT = [
    "Canberra",
    "Photosynthesis turns sunlight into chemical energy.",
    "I would like two bananas for breakfast, please.",
    "The match ended in a draw after extra time.",
    "Seven",
    "Blue whales are the largest animals.",
    "Open the window, it is hot.",
    "Mount Everest is 8,849 metres high.",
    "The stock market fell sharply today.",
    "She plays the violin beautifully.",
]
CASES = {
    "identical": ["Canberra"] * 10,
    "paraphrases": PARAPHRASES,
    "split": split(("Canberra", 7), ("Sydney", 3)),
    "different": DIFFERENT,
}
ORDER = ["identical", "paraphrases", "split", "different"]


async def dispersion(db, provider, **config):
    content = prompt_set_content(prompts=tuple(CASES), targets=("t",))
    group_id = make_run(db, "set/run-1", content, {(p, "t"): a for p, a in CASES.items()})
    service = EmbeddingService(db, provider, truncate=True)
    variation = VariationService.for_config(
        db, VariationConfig(strategy="embedding", **config), EmbeddingServiceEmbedder(service)
    )
    with db.session_scope() as session:
        scope = run_scope(GroupRepository(session).get_group(group_id))
    classes = await variation.equivalence_classes(scope)
    calls_after_classes = service.stats["api_calls"]
    report = await variation.dispersion(scope)
    assert service.stats["api_calls"] == calls_after_classes  # vectors from the cache
    assert calls_after_classes == 1  # every answer of the run in one batch
    by_prompt = {r["prompt"]: r for r in report.rows}
    return classes, {
        metric: [by_prompt[p][metric] for p in ORDER]
        for metric in (m.SEMANTIC_ENTROPY, m.SEU, m.VENDI)
    }


async def test_semantic_embedder_orders_identical_paraphrases_split_different(db):
    classes, values = await dispersion(db, WordLlamaEmbeddingProvider(), threshold=0.15)
    assert classes.settings["embedder"] == "wordllama"
    assert classes.settings["threshold"] == 0.15
    for metric, numbers in values.items():
        assert numbers == sorted(numbers) and len(set(numbers)) == 4, (metric, numbers)
    assert values[m.SEMANTIC_ENTROPY][0] == 0.0
    assert values[m.SEMANTIC_ENTROPY][3] == pytest.approx(math.log(10))


async def test_hash_embedder_cannot_tell_paraphrases(db):
    """Why the `embedding` strategy wants a semantic embedder: to the hash embedder, ten
    paraphrases of one answer vary more than a 7/3 split between two answers."""
    _, values = await dispersion(db, OfflineEmbeddingProvider())
    se = dict(zip(ORDER, values[m.SEMANTIC_ENTROPY], strict=True))
    assert se["paraphrases"] > se["split"]


async def test_contradictions_that_share_words_merge_under_embedding_not_exact():
    """The documented limit (docs/VARIATION.md): "Yes, it is safe." and "No, it is not safe."
    are one class for the embedding strategy at threshold 0.2, two for `exact`."""
    from study_query_dagster.services.variation import EmbeddingStrategy, ExactStrategy

    class Direct:
        def __init__(self):
            self.provider = WordLlamaEmbeddingProvider()

        def describe(self):
            return {"embedder": "wordllama"}

        async def embed(self, texts):
            return (await self.provider.embed(list(texts))).array

    answers = ["Yes, it is safe."] * 5 + ["No, it is not safe."] * 5
    merged = await EmbeddingStrategy(Direct(), threshold=0.2).partition(answers)
    assert merged.num_classes == 1
    assert (await ExactStrategy().partition(answers)).num_classes == 2
