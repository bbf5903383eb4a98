"""compute_request_hash: the recipe other layers rely on, and what it covers."""

import hashlib
import json

import pytest

from study_query_dagster.services import TokenBucket, compute_request_hash
from tests.support.clock import ManualClock

MESSAGES = [{"role": "user", "content": "Größe von 漢字?"}]


def test_recipe_is_sha256_of_canonical_json():
    payload = {
        "key_version": 1,
        "provider": "openai",
        "model": "gpt-4o",
        "messages": MESSAGES,
        "params": {"temperature": 0.5, "seed": 1},
        "sample_index": 3,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    got = compute_request_hash("openai", "gpt-4o", MESSAGES, {"seed": 1, "temperature": 0.5}, 3)
    assert got == expected and len(got) == 64


def test_every_part_of_the_request_changes_the_hash():
    base = compute_request_hash("openai", "m", MESSAGES, {"temperature": 0})
    variants = [
        compute_request_hash("azure", "m", MESSAGES, {"temperature": 0}),
        compute_request_hash("openai", "m2", MESSAGES, {"temperature": 0}),
        compute_request_hash(
            "openai", "m", [{"role": "user", "content": "other"}], {"temperature": 0}
        ),
        compute_request_hash("openai", "m", MESSAGES, {"temperature": 1}),
        compute_request_hash("openai", "m", MESSAGES, {"temperature": 0}, 0),
    ]
    assert base not in variants and len(set(variants)) == len(variants)
    assert base == compute_request_hash("openai", "m", MESSAGES, {"temperature": 0}, None)


async def test_token_bucket_waits_for_debt_to_refill():
    manual = ManualClock()
    bucket = TokenBucket(rate_per_minute=600, clock=manual.clock)  # 10 per second, capacity 10
    assert bucket.capacity == 10
    assert await bucket.acquire(50) == 10  # capped at capacity, granted at once
    bucket.adjust(5)  # the call really used 15: 5 of debt
    manual.advance(0.2)  # 2 units refill meanwhile
    await bucket.acquire(1)
    assert manual.waited == pytest.approx(0.4)  # 5 - 2 of debt plus 1 unit, at 10/s
    assert bucket.waited_s == pytest.approx(0.4)
