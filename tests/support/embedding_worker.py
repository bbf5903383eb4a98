"""A separate process that embeds a batch through EmbeddingService (for the race tests).

    python -m tests.support.embedding_worker CONFIG.json

CONFIG: {"db_url", "base_url", "texts", "ready", "go", "out", "max_batch_size"}. The worker
builds everything, touches `ready`, waits for `go` to exist (so two workers start together),
embeds `texts`, and writes one JSON object per item to `out`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from study_query_dagster.db import DatabaseConnection
from study_query_dagster.providers.embeddings import OpenAIEmbeddingProvider
from study_query_dagster.services.embeddings import EmbeddingService, RetryPolicy


async def main(config: dict) -> None:
    db = DatabaseConnection(config["db_url"])
    provider = OpenAIEmbeddingProvider("sk-race-test", config["base_url"])
    service = EmbeddingService(
        db,
        provider,
        max_batch_size=config["max_batch_size"],
        retry=RetryPolicy(max_retries=5, initial_wait=0.05, max_wait=0.5),
    )
    with db.session_scope():  # connect before the start signal
        pass
    Path(config["ready"]).touch()
    while not Path(config["go"]).exists():
        time.sleep(0.005)
    async with service:
        results = await service.get_embeddings_batch(config["texts"])
    Path(config["out"]).write_text(
        json.dumps(
            [
                {
                    "hash": r.request_hash,
                    "id": r.embedding_id,
                    "vector": r.vector,
                    "cached": r.cached,
                    "error": r.error.to_dict() if r.error else None,
                }
                for r in results
            ]
        )
    )
    db.dispose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
