"""The embedding cache's bulk read (`VectorStore.vectors_by_hash`) on both backends: exact
values, one statement per chunk, vectors of several lengths, and the binary COPY decoder
against a stream built by hand."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from study_query_dagster.db import RawCallRepository, VectorStore
from study_query_dagster.db.vector_codec import COPY_SIGNATURE, decode_cache_copy


def request_hash(i: int) -> str:
    return hashlib.sha256(f"text {i}".encode()).hexdigest()


def store(db, vectors, model="m", first=0) -> dict[str, tuple[int, int, np.ndarray]]:
    """Vectors stored under request_hash(first), request_hash(first + 1), ...:
    {hash: (id, call_id, vector)}."""
    with db.session_scope() as session:
        call_id = RawCallRepository(session).insert_raw_call(
            provider="offline",
            model=model,
            modality="embedding",
            status="success",
            request_json={"input": "x"},
        )
        hashes = [request_hash(first + i) for i in range(len(vectors))]
        ids = VectorStore(session).insert_embedding_vectors(
            [
                {"call_id": call_id, "model": model, "vector": v, "request_hash": h}
                for v, h in zip(vectors, hashes, strict=True)
            ]
        )
    return {
        h: (id_, call_id, np.asarray(v, np.float32))
        for h, id_, v in zip(hashes, ids, vectors, strict=True)
    }


def read(db, hashes, model="m"):
    with db.session_scope() as session:
        return VectorStore(session).vectors_by_hash(hashes, model)


def assert_found(found, stored):
    assert set(found) == set(stored)
    for h, (id_, call_id, vector) in stored.items():
        entry = found[h]
        assert (entry.id, entry.call_id, entry.model) == (id_, call_id, "m")
        assert entry.vector.dtype == np.float32
        np.testing.assert_array_equal(entry.vector, vector)  # bit for bit
        assert not entry.vector.flags.writeable


def test_every_stored_hash_comes_back_exactly_and_absent_ones_are_left_out(db):
    rng = np.random.default_rng(7)
    stored = store(db, rng.normal(size=(2500, 32)))
    wanted = [*stored, "0" * 64, *list(stored)[:10]]  # an absent hash and repeats
    found = read(db, wanted)
    assert_found(found, stored)


def test_vectors_of_several_lengths_in_one_read(db):
    # One chunk holds 16- and 24-dimension vectors: PostgreSQL's COPY rows then differ in size
    # and the read falls back to rows of vector_send bytes; the answer is the same.
    rng = np.random.default_rng(8)
    stored = store(db, rng.normal(size=(30, 16)))
    stored |= store(db, rng.normal(size=(20, 24)), first=30)
    assert_found(read(db, list(stored)), stored)
    assert read(db, []) == {}


def copy_stream(rows) -> bytes:
    """A binary COPY stream as PostgreSQL sends it, for (hash, id, call_id, vector) rows."""
    out = [COPY_SIGNATURE, struct.pack(">ii", 0, 0)]
    for h, id_, call_id, vector in rows:
        vector = np.asarray(vector, ">f4")
        send = struct.pack(">hh", vector.size, 0) + vector.tobytes()
        out.append(struct.pack(">h", 4))
        out.append(struct.pack(">i", len(h)) + h.encode())
        out.append(struct.pack(">iq", 8, id_) + struct.pack(">iq", 8, call_id))
        out.append(struct.pack(">i", len(send)) + send)
    out.append(struct.pack(">h", -1))
    return b"".join(out)


def test_the_copy_decoder_reads_a_known_stream():
    rows = [
        (request_hash(1), 7, 70, [1.5, -2.0, 0.25]),
        (request_hash(2), 2**40, 3, [0.0, 1e-3, 65504.0]),
    ]
    hashes, ids, call_ids, vectors = decode_cache_copy(copy_stream(rows))
    assert hashes == [request_hash(1), request_hash(2)]
    assert ids == [7, 2**40] and call_ids == [70, 3]
    np.testing.assert_array_equal(vectors[0], np.array([1.5, -2.0, 0.25], np.float32))
    np.testing.assert_array_equal(vectors[1], np.array([0.0, 1e-3, 65504.0], np.float32))
    assert all(v.dtype == np.float32 and not v.flags.writeable for v in vectors)
    assert decode_cache_copy(copy_stream([])) == ([], [], [], [])


def test_the_copy_decoder_declines_rows_of_several_sizes_and_refuses_other_streams():
    mixed = [(request_hash(1), 1, 1, [1.0, 2.0]), (request_hash(2), 2, 1, [1.0, 2.0, 3.0])]
    assert decode_cache_copy(copy_stream(mixed)) is None
    short_hash = [("abc", 1, 1, [1.0, 2.0]), ("abd", 2, 1, [3.0, 4.0])]
    assert decode_cache_copy(copy_stream(short_hash)) is None
    with pytest.raises(ValueError, match="not a binary COPY stream"):
        decode_cache_copy(b"id\tvector\n" + bytes(40))
