"""The embedding strategy through a real EmbeddingService (the offline embedder, vectors
cached in the database). These tests assert an ordering — identical answers vary least, all
different most — not a "true" entropy: what a distance means depends on the embedder.

The offline hash embedder measures shared words, not meaning, so paraphrases are not part of
this ordering yet (it rates ten paraphrases as more diverse than a 7/3 split; a semantic
embedder is what the `embedding` strategy needs for them)."""

import math

import pytest

from study_query_dagster.providers.embeddings import OfflineEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService
from study_query_dagster.services.variation import (
    EmbeddingServiceEmbedder,
    VariationConfig,
    VariationService,
    run_scope,
)
from study_query_dagster.services.variation import measures as m

from .support import make_run, prompt_set_content, split

CITIES = [
    "Canberra",
    "Sydney",
    "Melbourne",
    "Perth",
    "Hobart",
    "Darwin",
    "Adelaide",
    "Brisbane",
    "Cairns",
    "Geelong",
]
CASES = {
    "identical": ["Canberra"] * 10,
    "split": split(("Canberra", 7), ("Sydney", 3)),
    "different": CITIES,
}


async def test_embedding_strategy_orders_identical_split_different(db):
    content = prompt_set_content(prompts=tuple(CASES), targets=("t",))
    group_id = make_run(db, "set/run-1", content, {(p, "t"): a for p, a in CASES.items()})
    service = EmbeddingService(db, OfflineEmbeddingProvider(), truncate=True)
    embedder = EmbeddingServiceEmbedder(service)
    config = VariationConfig(strategy="embedding", threshold=0.15)
    variation = VariationService.for_config(db, config, embedder)
    with db.session_scope() as session:
        from study_query_dagster.db import GroupRepository

        scope = run_scope(GroupRepository(session).get_group(group_id))
    classes = await variation.equivalence_classes(scope)
    assert service.stats["api_calls"] == 1  # every answer of the run in one batch
    assert variation.strategy.key.startswith("embedding-")
    assert classes.settings == {
        "embedder": "offline",
        "model": "offline-hash-v1",
        "threshold": 0.15,
        "linkage": "average",
        "distance": "cosine",
    }
    report = await variation.dispersion(scope)
    se = {r["prompt"]: r[m.SEMANTIC_ENTROPY] for r in report.rows}
    seu = {r["prompt"]: r[m.SEU] for r in report.rows}
    vendi = {r["prompt"]: r[m.VENDI] for r in report.rows}
    assert se["identical"] < se["split"] < se["different"]
    assert seu["identical"] < seu["split"] < seu["different"]
    assert vendi["identical"] < vendi["split"] < vendi["different"]
    # Words that share nothing are far apart for this embedder, so here the classes are the
    # exact ones; the assertions above do not depend on that.
    assert se["identical"] == 0.0
    assert se["different"] == pytest.approx(math.log(10))
    assert service.stats["api_calls"] == 1  # the dispersion's vectors came from the cache
