"""Byte formats of stored vectors, decoded in bulk with numpy: SQLite's float32 blobs,
pgvector's binary form (`vector_send`), and PostgreSQL's binary COPY stream of the embedding
cache's reads."""

from __future__ import annotations

import numpy as np

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_COPY_HEADER = len(COPY_SIGNATURE) + 8  # signature, int32 flags, int32 extension length
_COPY_TRAILER = 2  # int16 -1
# The cache's COPY rows: (request_hash, 64 hex digits; id int8; call_id int8; vector). Each
# field is an int32 length and its bytes; a row starts with an int16 field count.
_COPY_FIELDS = 4
HASH_LENGTH = 64
_COPY_FIXED = 2 + (4 + HASH_LENGTH) + 2 * (4 + 8) + 4
# Where each field's int32 length and value start in a row.
_HASH_AT, _ID_AT, _CALL_AT = 2, 2 + 4 + HASH_LENGTH, 2 + 4 + HASH_LENGTH + 12


def decode_vector_send(data: bytes | memoryview) -> np.ndarray:
    """pgvector's binary format: int16 dimension, int16 unused, then big-endian float32s."""
    dimension = int.from_bytes(bytes(data[:2]), "big")
    vector = np.frombuffer(data, dtype=">f4", offset=4).astype(np.float32)
    if vector.size != dimension:
        raise ValueError(f"vector_send: header says {dimension} dimensions, got {vector.size}")
    return vector


def decode_vectors(blobs: list[bytes | memoryview], postgres: bool) -> list[np.ndarray]:
    """Stored vectors (SQLite float32 blobs, or pgvector's `vector_send` form) as read-only
    float32 arrays. Vectors of one length are decoded together, as rows of one matrix."""
    size = len(blobs[0])
    if any(len(blob) != size for blob in blobs):
        by_length: dict[int, list[int]] = {}
        for i, blob in enumerate(blobs):
            by_length.setdefault(len(blob), []).append(i)
        out: list[np.ndarray] = [np.empty(0, np.float32)] * len(blobs)
        for indexes in by_length.values():
            decoded = decode_vectors([blobs[i] for i in indexes], postgres)
            for i, vector in zip(indexes, decoded, strict=True):
                out[i] = vector
        return out
    joined = b"".join(blobs)
    if postgres:
        matrix = _vector_send_matrix(np.frombuffer(joined, np.uint8).reshape(len(blobs), size))
    else:
        matrix = np.frombuffer(joined, "<f4").reshape(len(blobs), -1).astype(np.float32)
    matrix.flags.writeable = False
    return list(matrix)


def decode_cache_copy(
    data: bytes | memoryview,
) -> tuple[list[str], list[int], list[int], list[np.ndarray]] | None:
    """(request hashes, ids, call_ids, read-only vectors) from a binary COPY of
    `(request_hash, id, call_id, vector)` rows, or None when its rows are not all of one size
    (vectors of several lengths): the caller then reads them another way."""
    buffer = np.frombuffer(data, np.uint8)
    if bytes(buffer[: len(COPY_SIGNATURE)]) != COPY_SIGNATURE:
        raise ValueError("not a binary COPY stream")
    extension = int.from_bytes(bytes(buffer[_COPY_HEADER - 4 : _COPY_HEADER]), "big")
    body = buffer[_COPY_HEADER + extension : buffer.size - _COPY_TRAILER]
    if body.size == 0:
        return [], [], [], []
    vector_bytes = int.from_bytes(bytes(body[_COPY_FIXED - 4 : _COPY_FIXED]), "big")
    row_size = _COPY_FIXED + vector_bytes
    if body.size % row_size:
        return None
    rows = body.reshape(-1, row_size)
    lengths = [
        (_HASH_AT, HASH_LENGTH),
        (_ID_AT, 8),
        (_CALL_AT, 8),
        (_COPY_FIXED - 4, vector_bytes),
    ]
    same_layout = np.all(_big_endian(rows[:, 0:2], ">i2") == _COPY_FIELDS) and all(
        np.all(_big_endian(rows[:, at : at + 4], ">i4") == length) for at, length in lengths
    )
    if not same_layout:
        return None
    hashes = np.ascontiguousarray(rows[:, _HASH_AT + 4 : _ID_AT]).view(f"S{HASH_LENGTH}")
    ids = _big_endian(rows[:, _ID_AT + 4 : _CALL_AT], ">i8")
    call_ids = _big_endian(rows[:, _CALL_AT + 4 : _COPY_FIXED - 4], ">i8")
    matrix = _vector_send_matrix(rows[:, _COPY_FIXED:])
    matrix.flags.writeable = False
    return (
        hashes.ravel().astype(f"U{HASH_LENGTH}").tolist(),
        ids.tolist(),
        call_ids.tolist(),
        list(matrix),
    )


def _big_endian(columns: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(columns).view(dtype).ravel().astype(np.int64)


def _vector_send_matrix(raw: np.ndarray) -> np.ndarray:
    """Rows of `vector_send` bytes (uint8, one vector per row) as a float32 matrix."""
    dimensions = raw[:, 0].astype(np.int64) << 8 | raw[:, 1]
    matrix = np.ascontiguousarray(raw[:, 4:]).view(">f4").astype(np.float32)
    if not np.all(dimensions == matrix.shape[1]):
        raise ValueError("vector_send: a header disagrees with its vector's length")
    return matrix
