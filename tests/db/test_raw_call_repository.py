"""RawCallRepository on SQLite and PostgreSQL: writes, validation, queries, groups, stats."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from study_query_dagster.db import (
    CallFilter,
    EmbeddingVector,
    GroupRepository,
    RawCall,
    RawCallRepository,
    StatisticsRepository,
    VectorStore,
)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def call(**overrides):
    row = {
        "provider": "offline",
        "model": "echo-1",
        "status": "success",
        "request_json": {"messages": [{"role": "user", "content": "What is 2+2?"}]},
        "response_json": {"text": "4"},
        "latency_ms": 10.0,
        "tokens_json": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    row.update(overrides)
    return row


def count(db, model=RawCall) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_round_trip_keeps_json_unicode_and_utc(db):
    when = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=2)))
    with db.session_scope() as session:
        call_id = RawCallRepository(session).insert_raw_call(
            **call(
                request_json={"prompt": "Ünïcødé ✓ 漢字", "n": [1, 2.5, None]},
                metadata_json={"sample_index": 3},
                created_at=when,
            )
        )
    with db.session_scope() as session:
        stored = RawCallRepository(session).get_raw_call(call_id)
        assert stored.request_json == {"prompt": "Ünïcødé ✓ 漢字", "n": [1, 2.5, None]}
        assert stored.metadata_json == {"sample_index": 3}
        assert stored.created_at == when
        assert stored.created_at.tzinfo is not None
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.modality == "text"


def test_bulk_insert_returns_ids_in_input_order(db):
    rows = [call(model=f"m{i}", latency_ms=float(i)) for i in range(2500)]
    with db.session_scope() as session:
        ids = RawCallRepository(session).insert_raw_calls(rows, chunk_size=1000)
    assert len(ids) == 2500 and len(set(ids)) == 2500
    with db.session_scope() as session:
        for i in (0, 999, 1000, 2499):
            assert session.get(RawCall, ids[i]).model == f"m{i}"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"status": "done"}, r"row 1: field 'status' must be one of success, failed"),
        ({"provider": ""}, r"row 1: field 'provider' is required"),
        ({"request_json": None}, r"row 1: field 'request_json' is required"),
        ({"latency_ms": -5}, r"row 1: field 'latency_ms' must be a number >= 0"),
        ({"colour": "red"}, r"row 1: unknown field\(s\) \['colour'\]"),
    ],
)
def test_invalid_rows_are_rejected_and_nothing_is_written(db, bad, message):
    with pytest.raises(ValueError, match=message), db.session_scope() as session:
        RawCallRepository(session).insert_raw_calls([call(), call(**bad), call()])
    assert count(db) == 0


def test_missing_required_field_rejected_by_database_too(db):
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO raw_calls (modality, status, request_json, created_at)"
                " VALUES ('text', 'success', '{}', CURRENT_TIMESTAMP)"
            )
        )
    assert count(db) == 0


def test_query_filters(db):
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        groups = GroupRepository(session)
        ids = repo.insert_raw_calls(
            [
                call(provider="openai", model="gpt-4o", created_at=T0),
                call(provider="openai", model="gpt-4o-mini", status="failed", created_at=T0 + timedelta(hours=1)),
                call(provider="azure", model="gpt-4o", modality="embedding", created_at=T0 + timedelta(hours=2)),
                call(provider="offline", status="timeout", created_at=T0 + timedelta(days=2)),
            ]
        )  # fmt: skip
        group_id = groups.create_group("run", "r1")
        groups.add_group_members(group_id, [ids[0], ids[3]])

    with db.session_scope() as session:
        repo = RawCallRepository(session)

        def got(**kw):
            return [c.id for c in repo.query_raw_calls(**kw)]

        assert got() == [ids[3], ids[2], ids[1], ids[0]]  # newest first
        assert got(provider="openai") == [ids[1], ids[0]]
        assert got(model="gpt-4o") == [ids[2], ids[0]]
        assert got(status=["failed", "timeout"]) == [ids[3], ids[1]]
        assert got(modality="embedding") == [ids[2]]
        assert got(group_id=group_id) == [ids[3], ids[0]]
        assert got(date_range=(T0 + timedelta(minutes=30), T0 + timedelta(days=1))) == [
            ids[2],
            ids[1],
        ]
        assert got(date_range=(None, T0)) == [ids[0]]
        assert got(limit=2, offset=1) == [ids[2], ids[1]]
        assert repo.count_raw_calls(CallFilter(provider="openai")) == 2


def test_groups_members_positions_and_duplicates(db):
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        groups = GroupRepository(session)
        ids = repo.insert_raw_calls([call(model=f"m{i}") for i in range(5)])
        group_id = groups.get_or_create_group("batch", "b-1", description="first")
        assert groups.get_or_create_group("batch", "b-1") == group_id
        assert groups.add_group_members(group_id, [ids[2], ids[0]], role="turn") == 2
        # Duplicates are ignored; new members continue after the last position.
        assert groups.add_group_members(group_id, [ids[0], ids[4], ids[2]]) == 1
        assert groups.add_group_members(group_id, [{"call_id": ids[1], "position": 0}]) == 1

    with db.session_scope() as session:
        members = GroupRepository(session).get_group_members(group_id)
        assert [(m.call_id, m.position) for m in members] == [
            (ids[1], 0), (ids[2], 1), (ids[0], 2), (ids[4], 3),
        ]  # fmt: skip
        assert members[1].role == "turn" and members[3].role is None
        assert members[1].call.model == "m2"


def test_group_needs_type_and_name(db):
    with pytest.raises(ValueError, match="a group needs a type and a name"):
        with db.session_scope() as session:
            GroupRepository(session).create_group("", "x")


def test_provider_stats_match_hand_computed_values(db):
    rng = np.random.default_rng(7)
    latencies = {("openai", "gpt-4o"): rng.uniform(50, 900, 37), ("azure", "gpt-4o"): [120.0]}
    rows = []
    for (provider, model), values in latencies.items():
        for i, ms in enumerate(values):
            rows.append(call(provider=provider, model=model, latency_ms=float(ms),
                             tokens_json={"prompt_tokens": i, "completion_tokens": 2, "total_tokens": i + 2}))  # fmt: skip
    # Failures count, but their latency is not in the latency statistics.
    rows.append(
        call(
            provider="openai", model="gpt-4o", status="failed", latency_ms=99999.0, tokens_json=None
        )
    )
    rows.append(
        call(
            provider="openai",
            model="gpt-4o",
            status="timeout",
            latency_ms=30000.0,
            tokens_json=None,
        )
    )
    with db.session_scope() as session:
        RawCallRepository(session).insert_raw_calls(rows)
    with db.session_scope() as session:
        stats = {
            (s["provider"], s["model"]): s
            for s in StatisticsRepository(session).get_provider_stats()
        }

    openai = stats[("openai", "gpt-4o")]
    values = np.asarray(latencies[("openai", "gpt-4o")], dtype=float)
    assert openai["calls"] == 39
    assert (openai["success"], openai["failed"], openai["timeout"], openai["cancelled"]) == (
        37,
        1,
        1,
        0,
    )
    assert openai["success_rate"] == pytest.approx(37 / 39)
    assert openai["avg_latency_ms"] == pytest.approx(values.mean())
    assert openai["p50_latency_ms"] == pytest.approx(np.percentile(values, 50))
    assert openai["p95_latency_ms"] == pytest.approx(np.percentile(values, 95))
    assert openai["total_tokens"] == sum(i + 2 for i in range(37))
    assert openai["prompt_tokens"] == sum(range(37))
    assert openai["completion_tokens"] == 74
    azure = stats[("azure", "gpt-4o")]
    assert azure["p50_latency_ms"] == azure["p95_latency_ms"] == 120.0


def test_search_matches_prompts_and_answers_only(db):
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        ids = repo.insert_raw_calls(
            [
                call(request_json={"messages": [{"role": "user", "content": "Capital of France?"}]},
                     response_json={"text": "Paris"}),
                call(request_json={"prompt": "100% sure_thing"}, response_json={"text": "yes"}),
                call(response_json={"text": "The CONTENT of PARIS"}),
                call(request_json={"messages": [{"role": "user", "content": [
                         {"type": "text", "text": "a user question"}]}], "temperature": 0.5},
                     response_json={"text": "ok", "finish_reason": "stop", "id": "chatcmpl-9"}),
                call(modality="embedding", request_json={"input": ["embed this sentence"]},
                     response_json=None),
            ]
        )  # fmt: skip
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        assert [c.id for c in repo.search_raw_calls("paris")] == [ids[2], ids[0]]
        assert [c.id for c in repo.search_raw_calls("france")] == [ids[0]]
        assert [c.id for c in repo.search_raw_calls("100%")] == [ids[1]]
        assert [c.id for c in repo.search_raw_calls("e_t")] == [ids[1]]
        # "content" and "role" are keys in every request; only the third row has it as text.
        assert [c.id for c in repo.search_raw_calls("content")] == [ids[2]]
        # Roles, parameters, finish reasons and ids are not what anyone searches for.
        assert [c.id for c in repo.search_raw_calls("user")] == [ids[3]]  # the question only
        for noise in ("stop", "chatcmpl", "0.5", "text"):
            assert repo.search_raw_calls(noise) == [], noise
        assert [c.id for c in repo.search_raw_calls("embed this")] == [ids[4]]
        assert repo.search_raw_calls("paris", limit=1)[0].id == ids[2]


def _embedding_call(session) -> int:
    return RawCallRepository(session).insert_raw_call(**call(modality="embedding"))


def test_embedding_vectors_round_trip_and_dimension_checks(db):
    with db.session_scope() as session:
        repo = VectorStore(session)
        call_id = _embedding_call(session)
        [vid] = repo.insert_embedding_vectors(
            [{"call_id": call_id, "model": "e", "vector": [3.0, 4.0], "request_hash": "h1"}]
        )
    with db.session_scope() as session:
        stored = session.get(EmbeddingVector, vid)
        assert isinstance(stored.vector, np.ndarray) and stored.vector.dtype == np.float32
        assert stored.vector.tolist() == [3.0, 4.0]
        assert (stored.dimension, stored.norm) == (2, 5.0)

    with pytest.raises(ValueError, match="row 1: vector has 3 components but dimension is 4"):
        with db.session_scope() as session:
            VectorStore(session).insert_embedding_vectors(
                [
                    {"call_id": call_id, "model": "e", "vector": [1, 2], "dimension": 2},
                    {"call_id": call_id, "model": "e", "vector": [1, 2, 3], "dimension": 4},
                ]
            )
    assert count(db, EmbeddingVector) == 1


def test_database_rejects_vector_length_mismatch(db):
    with db.session_scope() as session:
        call_id = _embedding_call(session)
    with pytest.raises(IntegrityError), db.session_scope() as session:
        session.add(EmbeddingVector(call_id=call_id, model="e", dimension=5, vector=[1.0, 2.0]))
    assert count(db, EmbeddingVector) == 0


def test_insert_or_ignore_returns_stored_ids(db):
    with db.session_scope() as session:
        repo = VectorStore(session)
        call_id = _embedding_call(session)
        first = repo.insert_embedding_vectors(
            [{"call_id": call_id, "model": "e", "vector": [1, 0], "request_hash": "a"}]
        )
        again = repo.insert_embedding_vectors(
            [
                {"call_id": call_id, "model": "e", "vector": [0, 1], "request_hash": "b"},
                {"call_id": call_id, "model": "e", "vector": [9, 9], "request_hash": "a"},
            ],
            ignore_duplicates=True,
        )
    assert again[1] == first[0]
    assert count(db, EmbeddingVector) == 2
    with db.session_scope() as session:
        assert session.get(EmbeddingVector, first[0]).vector.tolist() == [1.0, 0.0]


def test_duplicate_request_hash_without_ignore_is_an_error(db):
    with pytest.raises(IntegrityError), db.session_scope() as session:
        repo = VectorStore(session)
        call_id = _embedding_call(session)
        repo.insert_embedding_vectors(
            [
                {"call_id": call_id, "model": "e", "vector": [1, 0], "request_hash": "a"},
                {"call_id": call_id, "model": "e", "vector": [0, 1], "request_hash": "a"},
            ]
        )


def test_nul_characters_are_stored_as_replacement_on_both_backends(db):
    # PostgreSQL's JSONB refuses U+0000; a literal backslash-u0000 text must survive untouched.
    with db.session_scope() as session:
        call_id = RawCallRepository(session).insert_raw_call(
            **call(request_json={"prompt": "a\x00b", "k\x00": ["\x00"], "raw": "\\u0000 stays"})
        )
    with db.session_scope() as session:
        stored = RawCallRepository(session).get_raw_call(call_id)
    assert stored.request_json == {
        "prompt": "a\ufffdb",
        "k\ufffd": ["\ufffd"],
        "raw": "\\u0000 stays",
    }


def test_bulk_insert_keeps_fields_that_only_some_rows_have(db):
    # An executemany takes its columns from the first row; later rows' extra keys must not
    # be dropped.
    rows = [
        call(),
        call(status="failed", response_json=None, error_json={"message": "boom"}),
        call(metadata_json={"k": 1}, created_at=T0),
        call(),
    ]
    with db.session_scope() as session:
        ids = RawCallRepository(session).insert_raw_calls(rows)
    with db.session_scope() as session:
        stored = [session.get(RawCall, i) for i in ids]
        assert [c.status for c in stored] == ["success", "failed", "success", "success"]
        assert stored[1].error_json == {"message": "boom"}
        assert stored[2].metadata_json == {"k": 1} and stored[2].created_at == T0
        assert stored[0].error_json is None and stored[3].metadata_json is None
