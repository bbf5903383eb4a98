"""The per-(model, dimension) HNSW index on PostgreSQL, and exact tie handling in
`nearest_embeddings` on both backends."""

from __future__ import annotations

import numpy as np
from sqlalchemy import event, inspect, text

from study_query_dagster.db import VectorStore
from study_query_dagster.db.vector_store import hnsw_index_name
from tests.support.db import store_vectors

TRICKY_MODEL = 'x\'; DROP TABLE raw_calls; -- "model"'


def _indexes(db) -> dict[str, str]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'embedding_vectors'")
        )
        return {name: definition for name, definition in rows}


def test_hnsw_index_is_created_once_per_model_and_dimension_with_a_safe_name(pg_db):
    with pg_db.session_scope() as session:
        repo = VectorStore(session)
        name = repo.ensure_hnsw_index(TRICKY_MODEL, 16)
        assert repo.ensure_hnsw_index(TRICKY_MODEL, 16) == name  # IF NOT EXISTS
        other = repo.ensure_hnsw_index("text-embedding-3-small", 1536)
        assert repo.ensure_hnsw_index("big", 3072) is None  # beyond pgvector's HNSW limit
    assert name == hnsw_index_name(TRICKY_MODEL, 16) and name != other
    assert name.isidentifier() and len(name) < 63
    definition = _indexes(pg_db)[name]
    assert "USING hnsw" in definition and "vector_cosine_ops" in definition
    assert "vector(16)" in definition and "dimension = 16" in definition
    assert "x''; DROP TABLE raw_calls; -- \"model\"" in definition  # a quoted literal
    assert "raw_calls" in inspect(pg_db.engine).get_table_names()


def test_the_nearest_query_is_served_by_the_hnsw_index(pg_db):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(400, 16)).astype(np.float32)
    store_vectors(pg_db, vectors, TRICKY_MODEL)
    store_vectors(pg_db, rng.normal(size=(50, 16)), "another-model")
    with pg_db.session_scope() as session:
        name = VectorStore(session).ensure_hnsw_index(TRICKY_MODEL, 16)
    with pg_db.engine.connect() as conn:
        conn.execute(text("ANALYZE embedding_vectors"))
        conn.commit()

    captured = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if "<=>" in statement:
            captured.append((statement, parameters))

    event.listen(pg_db.engine, "before_cursor_execute", capture)
    try:
        with pg_db.session_scope() as session:
            session.execute(text("SET LOCAL enable_seqscan = off"))
            hits = VectorStore(session).nearest_embeddings(vectors[5], k=5, model=TRICKY_MODEL)
            found = [(e.text, d) for e, d in hits]
    finally:
        event.remove(pg_db.engine, "before_cursor_execute", capture)
    assert found[0][0] == "t5" and abs(found[0][1]) < 1e-6
    assert [d for _, d in found] == sorted(d for _, d in found)

    statement, parameters = captured[0]
    raw = pg_db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN " + statement, parameters)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    finally:
        raw.rollback()
        raw.close()
    assert f"Index Scan using {name}" in plan, plan


def test_ties_at_the_k_boundary_are_settled_by_id_on_both_backends(db):
    rng = np.random.default_rng(11)
    same = rng.normal(size=8)
    vectors = [same * 1.0] * 6 + list(rng.normal(size=(20, 8))) + [same * 2.0] * 4
    ids = store_vectors(db, vectors, "m")
    with db.session_scope() as session:
        repo = VectorStore(session)
        for k in (1, 3, 7, 10, 11):
            hits = repo.nearest_embeddings(same, k=k, model="m")
            # Ten vectors point the same way (distance 0); the k smallest ids win.
            expected = [ids[i] for i in [*range(6), *range(26, 30)]][: min(k, 10)]
            assert [e.id for e, _ in hits][: min(k, 10)] == expected, k
            assert len(hits) == k
