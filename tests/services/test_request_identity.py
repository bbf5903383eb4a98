"""The request-identity recipes: stored hashes depend on them byte for byte."""

from study_query_dagster.services.request_identity import (
    canonical_json,
    embedding_hash_frame,
    embedding_request_hash,
    hash_in_frame,
    normalize_text,
    sha256_hex,
)


def test_canonical_json_is_sorted_compact_and_keeps_unicode():
    assert canonical_json({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'


def test_embedding_hash_frame_equals_the_canonical_json_of_the_whole_payload():
    text = ' Zoë  says "hi"\x00\n'
    payload = {
        "key_version": 1,
        "provider": "openai",
        "model": "m",
        "normalized_text": normalize_text(text),
        "dimensions": 256,
        "encoding_format": "float",
    }
    expected = sha256_hex(canonical_json(payload))
    assert embedding_request_hash(text, provider="openai", model="m", dimensions=256) == expected
    prefix, suffix = embedding_hash_frame("openai", "m", 256, "float")
    assert hash_in_frame(prefix, normalize_text(text), suffix) == expected
    assert normalize_text(text) == 'Zoë says "hi"'
