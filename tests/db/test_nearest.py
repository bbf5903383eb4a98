"""Nearest-neighbour search: pgvector `<=>` in SQL on PostgreSQL, numpy on SQLite, same answers."""

import numpy as np
import pytest
from sqlalchemy import event

from study_query_dagster.db import VectorStore
from tests.support.db import store_vectors


def _nearest(db, query, k, model="e"):
    with db.session_scope() as session:
        hits = VectorStore(session).nearest_embeddings(query, k=k, model=model)
        return [(e.text, d) for e, d in hits]


def test_sqlite_and_postgres_agree(sqlite_db, pg_db):
    rng = np.random.default_rng(42)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors[17] = vectors[3]  # an exact tie: both must order it by id
    store_vectors(sqlite_db, vectors)
    store_vectors(pg_db, vectors)
    store_vectors(sqlite_db, rng.normal(size=(5, 8)), model="other")  # other model and dimension
    store_vectors(pg_db, rng.normal(size=(5, 8)), model="other")

    statements = []
    event.listen(pg_db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    for query in (vectors[3], rng.normal(size=16)):
        from_sqlite = _nearest(sqlite_db, query, k=10)
        from_pg = _nearest(pg_db, query, k=10)
        assert [t for t, _ in from_sqlite] == [t for t, _ in from_pg]
        assert [d for _, d in from_sqlite] == pytest.approx([d for _, d in from_pg], abs=1e-5)
        # and both agree with a brute-force cosine ranking
        q = np.asarray(query, dtype=np.float64)
        sims = (
            vectors.astype(np.float64) @ q / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(q))
        )
        expected = [f"t{i}" for i in np.argsort(1 - sims, kind="stable")[:10]]
        assert [t for t, _ in from_sqlite] == expected

    assert _nearest(sqlite_db, vectors[3], k=2)[:2] == [
        ("t3", pytest.approx(0, abs=1e-6)),
        ("t17", pytest.approx(0, abs=1e-6)),
    ]
    assert any("<=>" in s and "ORDER BY" in s for s in statements), "PostgreSQL must rank in SQL"


def test_model_and_dimension_filter(db):
    store_vectors(db, [[1, 0], [0, 1]], model="a")
    store_vectors(db, [[1, 0, 0]], model="b")
    assert [t for t, _ in _nearest(db, [1, 0], k=5, model="a")] == ["t0", "t1"]
    assert _nearest(db, [1, 0], k=5, model="b") == []
    assert _nearest(db, [1, 0, 0], k=0, model="b") == []
