"""Two real processes embed overlapping batches into the same database at the same moment:
one entry per request hash, no error, and both see the same stored entry."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from study_query_dagster.db import EmbeddingVector, RawCall
from tests.support.fake_llm_server import fake_embedding

ROOT = Path(__file__).resolve().parents[2]


def wait_for(workers: list[subprocess.Popen], llm_server) -> list[str]:
    """Wait for every worker; if one fails, open the server's hold so the others finish."""
    while any(w.poll() is None for w in workers):
        if any(w.returncode not in (None, 0) for w in workers):
            llm_server.release()
        time.sleep(0.02)
    return [w.communicate()[0] for w in workers]


def test_two_processes_embedding_overlapping_batches_leave_one_entry_per_hash(
    db, db_url, llm_server, tmp_path
):
    # No answer until both workers have sent a call. A fresh service sends the first call of a
    # model alone (it doubles as the deployment probe), so the first two calls come from the
    # two workers: each has looked its whole batch up before either stored anything, and both
    # send every text of the overlap.
    llm_server.hold(until=lambda requests: len(requests) >= 2, match="embeddings")
    # Every API call answers a different vector for the same text (as real APIs may), so a
    # worker that lost the race must return the stored vector, not the one it was sent.
    rng = np.random.default_rng(0)
    llm_server.embedding_fn = lambda request, text, dims: (
        np.asarray(fake_embedding(text, dims)) + rng.normal(scale=0.01, size=dims)
    ).tolist()
    batches = [
        [f"overlapping text {i}" for i in range(0, 60)],
        [f"overlapping text {i}" for i in range(30, 90)][::-1],
    ]
    go = tmp_path / "go"
    workers = []
    for n, texts in enumerate(batches):
        config = {
            "db_url": db_url,
            "base_url": llm_server.openai_base_url,
            "texts": texts,
            "ready": str(tmp_path / f"ready-{n}"),
            "go": str(go),
            "out": str(tmp_path / f"out-{n}.json"),
            "max_batch_size": 8,
        }
        path = tmp_path / f"config-{n}.json"
        path.write_text(json.dumps(config))
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.embedding_worker", str(path)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    while not all((tmp_path / f"ready-{n}").exists() for n in range(2)):
        assert all(w.poll() is None for w in workers), [w.communicate()[0] for w in workers]
        time.sleep(0.02)
    go.touch()
    outputs = wait_for(workers, llm_server)
    assert [w.returncode for w in workers] == [0, 0], outputs

    results = [json.loads((tmp_path / f"out-{n}.json").read_text()) for n in range(2)]
    assert all(r["error"] is None for rs in results for r in rs)
    # The race happened: every text of the overlap was sent by both processes.
    sent = Counter(t for r in llm_server.requests for t in r.body["input"])
    overlap = {f"overlapping text {i}" for i in range(30, 60)}
    assert all(sent[t] == 2 for t in overlap), sent

    with db.session_scope() as session:
        stored = {e.request_hash: e for e in session.scalars(select(EmbeddingVector))}
        assert session.scalar(select(func.count()).select_from(RawCall)) >= 2 * 60 // 8
        assert len(stored) == session.scalar(select(func.count()).select_from(EmbeddingVector))
        assert len(stored) == 90
        # Each worker answered with exactly what is stored (id and vector) for every text,
        # including the texts whose own API answer lost the race.
        for rs in results:
            for r in rs:
                assert r["id"] == stored[r["hash"]].id
                assert r["vector"] == stored[r["hash"]].vector.tolist()
    first = {r["hash"]: r for r in results[0]}
    assert sum(1 for r in results[1] if r["hash"] in first) == 30
