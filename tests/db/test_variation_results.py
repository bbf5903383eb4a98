"""variation_results and semantic_cluster groups on SQLite and PostgreSQL: append-only by the
database, newest-per-key reads, history over runs, and mean embeddings (pgvector AVG / numpy)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from study_query_dagster.db import (
    REPRESENTATIVE,
    ClusterSpec,
    GroupRepository,
    RawCallRepository,
    SemanticClusterRepository,
    VariationResultRepository,
    VectorStore,
)

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def run_group(db, name="set/run-1"):
    with db.session_scope() as session:
        return GroupRepository(session).create_group("run", name)


def result(run_group_id, metric="semantic_entropy", value=0.5, **extra):
    return {
        "run_group_id": run_group_id,
        "prompt_set": "set",
        "prompt_id": "p",
        "target": "t",
        "metric": metric,
        "value": value,
        "n": 10,
        "strategy": "exact",
        "strategy_key": "exact",
        "method_version": "1",
        **extra,
    }


def append(db, rows):
    with db.session_scope() as session:
        return VariationResultRepository(session).append(rows)


def latest(db, run_group_id, metrics=None, key="exact"):
    with db.session_scope() as session:
        rows = VariationResultRepository(session).latest(run_group_id, key, metrics)
        return [(r.prompt_id, r.target, r.other, r.metric, r.value, r.n) for r in rows]


def test_append_and_read_newest_per_key(db):
    run = run_group(db)
    append(
        db,
        [
            result(run, value=0.1),
            result(run, "vendi", 2.0),
            result(run, "jsd", 0.3, other="u", n_other=8),
        ],
    )
    append(db, [result(run, value=0.2)])  # recomputed: the newer row wins
    assert sorted(latest(db, run), key=lambda r: r[3]) == [
        ("p", "t", "u", "jsd", 0.3, 10),
        ("p", "t", None, "semantic_entropy", 0.2, 10),
        ("p", "t", None, "vendi", 2.0, 10),
    ]
    assert latest(db, run, ["vendi"]) == [("p", "t", None, "vendi", 2.0, 10)]
    assert latest(db, run, key="embedding-00000000") == []
    with db.session_scope() as session:
        (row,) = VariationResultRepository(session).latest(run, "exact", ["jsd"])
        assert row.n_other == 8 and row.created_at.tzinfo is not None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"value": float("nan")}, "'value' must be a finite number"),
        ({"value": True}, "'value' must be a finite number"),
        ({"n": 0}, "'n' must be an integer >= 1"),
        ({"metric": ""}, "field 'metric' is required"),
        ({"colour": "red"}, "unknown field"),
    ],
)
def test_bad_rows_are_refused_before_anything_is_written(db, change, message):
    run = run_group(db)
    with pytest.raises(ValueError, match=message) as error:
        append(db, [result(run), {**result(run), **change}])
    assert "variation result 1" in str(error.value)
    assert latest(db, run) == []


@pytest.mark.parametrize(
    "statement",
    ["UPDATE variation_results SET value = 0", "DELETE FROM variation_results"],
)
def test_results_are_append_only_in_the_database(db, statement):
    run = run_group(db)
    append(db, [result(run, value=0.7)])
    with pytest.raises(DatabaseError, match="variation_results is append-only"):
        with db.engine.begin() as conn:
            conn.execute(text(statement))
    assert latest(db, run) == [("p", "t", None, "semantic_entropy", 0.7, 10)]


def test_postgres_refuses_truncate_of_results(pg_db):
    append(pg_db, [result(run_group(pg_db))])
    with pytest.raises(DatabaseError, match="append-only"), pg_db.engine.begin() as conn:
        conn.execute(text("TRUNCATE variation_results"))


def test_database_checks_n(db):
    run = run_group(db)
    with pytest.raises(DatabaseError), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO variation_results (run_group_id, prompt_set, prompt_id, target, "
                "metric, value, n, strategy, strategy_key, method_version, created_at) VALUES "
                "(:run, 's', 'p', 't', 'm', 1.0, 0, 'exact', 'exact', '1', CURRENT_TIMESTAMP)"
            ),
            {"run": run},
        )


def test_history_is_each_runs_newest_value_in_run_order(db):
    runs = []
    for i in range(3):
        runs.append(run_group(db, f"set/run-{i}"))
        with db.engine.begin() as conn:  # groups are mutable: pin creation times
            conn.execute(
                text("UPDATE groups SET created_at = :at WHERE id = :id"),
                {"at": (T0 + timedelta(days=3 - i)).replace(tzinfo=None), "id": runs[-1]},
            )
    append(db, [result(runs[0], "drift_jsd", 0.1, other="x"), result(runs[1], "drift_jsd", 0.4)])
    append(db, [result(runs[0], "drift_jsd", 0.2, other="x"), result(runs[2], "drift_jsd", 0.0)])
    with db.session_scope() as session:
        points = VariationResultRepository(session).history("set", "drift_jsd", "exact", "1")
    # newest run first by id, but created_at says run-2 is the oldest
    assert [(p.run_group_id, p.value) for p in points] == [
        (runs[2], 0.0),
        (runs[1], 0.4),
        (runs[0], 0.2),
    ]
    assert points[0].run_created_at == T0 + timedelta(days=1)


def store_answer_vectors(db, vectors_by_hash):
    with db.session_scope() as session:
        call_id = RawCallRepository(session).insert_raw_call(
            provider="offline",
            model="e",
            modality="embedding",
            status="success",
            request_json={"input": "x"},
        )
        VectorStore(session).insert_embedding_vectors(
            [
                {"call_id": call_id, "model": "e", "vector": v, "request_hash": h}
                for h, v in vectors_by_hash.items()
            ]
        )


def test_answer_centroids_weigh_each_answer(db):
    store_answer_vectors(db, {"h1": [1.0, 0.0, 0.0], "h2": [0.0, 1.0, 0.0], "h3": [0.0, 0.0, 2.0]})
    with db.session_scope() as session:
        means = VariationResultRepository(session).answer_centroids(
            {
                ("p", "now"): ["h1"] * 7 + ["h2"] * 3,  # one cached vector, seven answers
                ("p", "then"): ["h3", "h1"],
                ("q", "now"): ["missing"],
                ("q", "then"): [],
            }
        )
    assert set(means) == {("p", "now"), ("p", "then")}
    np.testing.assert_allclose(means[("p", "now")], [0.7, 0.3, 0.0], atol=1e-7)
    np.testing.assert_allclose(means[("p", "then")], [0.5, 0.0, 1.0], atol=1e-7)


def test_answer_centroids_across_chunks(db):
    """More answers than one statement holds: a key is never split, so AVG stays exact."""
    store_answer_vectors(db, {f"h{i}": [float(i), 1.0] for i in range(4)})
    hashes = {k: [f"h{(k + j) % 4}" for j in range(700)] for k in range(3)}
    with db.session_scope() as session:
        means = VariationResultRepository(session).answer_centroids(hashes)
    for k in range(3):
        expected = np.mean([[float((k + j) % 4), 1.0] for j in range(700)], axis=0)
        np.testing.assert_allclose(means[k], expected, rtol=1e-6)


def answers(db, count):
    with db.session_scope() as session:
        return RawCallRepository(session).insert_raw_calls(
            [
                {"provider": "offline", "model": "m", "status": "success", "request_json": {"i": i}}
                for i in range(count)
            ]
        )


def spec(label, call_ids, representative):
    return ClusterSpec(
        label, tuple(call_ids), representative, {"prompt_id": "p", "target": "t", "label": label}
    )


def test_clusters_are_groups_with_a_representative_and_replaced_only_when_changed(db):
    run = run_group(db)
    c = answers(db, 5)
    with db.session_scope() as session:
        repo = SemanticClusterRepository(session)
        first = repo.replace_run_clusters(
            run, "exact", {("p", "t"): [spec(0, c[:3], c[1]), spec(1, c[3:], c[4])]}
        )
    assert first == {"kept": 0, "removed": 0, "created": 2}
    with db.session_scope() as session:
        stored = SemanticClusterRepository(session).clusters_of_run(run, "exact")
        members = GroupRepository(session).get_group_members(stored[0].group_id)
        assert [(m.call_id, m.position, m.role) for m in members] == [
            (c[0], 1, None),
            (c[1], 2, REPRESENTATIVE),
            (c[2], 3, None),
        ]
    assert [(s.name, s.call_ids, s.representative) for s in stored] == [
        (f"{run}/p/t/exact/0", c[:3], c[1]),
        (f"{run}/p/t/exact/1", c[3:], c[4]),
    ]
    ids = [s.group_id for s in stored]

    with db.session_scope() as session:  # class 1 changes, class 0 stays as it was
        again = SemanticClusterRepository(session).replace_run_clusters(
            run,
            "exact",
            {("p", "t"): [spec(0, c[:3], c[1]), spec(1, c[3:4], c[3]), spec(2, c[4:], c[4])]},
        )
        assert again == {"kept": 1, "removed": 1, "created": 2}
        stored = SemanticClusterRepository(session).clusters_of_run(run)
    assert stored[0].group_id == ids[0]
    assert [s.call_ids for s in stored] == [c[:3], c[3:4], c[4:]]

    with db.session_scope() as session:  # another strategy's classes live beside them
        SemanticClusterRepository(session).replace_run_clusters(
            run, "embedding-1234abcd", {("p", "t"): [spec(0, c, c[0])]}
        )
        repo = SemanticClusterRepository(session)
        assert len(repo.clusters_of_run(run, "exact")) == 3
        assert len(repo.clusters_of_run(run, "embedding-1234abcd")) == 1
        assert repo.clusters_of_run(run + 1000) == []
