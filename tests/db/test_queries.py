"""Shared SQL building blocks, identical on SQLite and PostgreSQL."""

from datetime import datetime, timezone

import numpy as np
import pytest
from sqlalchemy import select

from study_query_dagster.db import RawCall, RawCallRepository
from study_query_dagster.db.queries import percentiles, percentiles_query, time_bucket


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 20, 101])
def test_percentiles_equal_numpy_linear_interpolation(db, n):
    # Sizes chosen so that the interpolation position has fractions above and below 0.5
    # (PostgreSQL's CAST rounds where SQLite's truncates; neither may leak into the result).
    rng = np.random.default_rng(n)
    values = rng.uniform(0, 1000, n).round(3)
    with db.session_scope() as session:
        RawCallRepository(session).insert_raw_calls(
            [{"provider": "p", "status": "success", "request_json": {}, "latency_ms": float(v)}
             for v in values]
        )  # fmt: skip
    qs = [0.05, 0.25, 0.5, 0.9, 0.95, 0.99]
    with db.session_scope() as session:
        one_statement = session.execute(percentiles_query(RawCall.latency_ms, [], qs)).one()
        two_steps = percentiles(session, RawCall.latency_ms, [], qs)[()]
    for q, a, b in zip(qs, one_statement, two_steps, strict=True):
        expected = np.percentile(values, q * 100)
        assert a == pytest.approx(expected, abs=1e-6) and b == pytest.approx(expected), q


def test_grouped_percentiles_and_the_many_groups_fallback(db):
    rng = np.random.default_rng(0)
    groups = {("a", "m1"): rng.uniform(0, 100, 13), ("a", None): rng.uniform(0, 100, 6),
              ("b", "m1"): np.array([5.0])}  # fmt: skip
    with db.session_scope() as session:
        RawCallRepository(session).insert_raw_calls(
            [{"provider": p, "model": m, "status": "success", "request_json": {},
              "latency_ms": float(v)} for (p, m), vs in groups.items() for v in vs]
            + [{"provider": "c", "status": "success", "request_json": {}, "latency_ms": None}]
        )  # fmt: skip
    keys = [RawCall.provider, RawCall.model]
    with db.session_scope() as session:
        found = percentiles(session, RawCall.latency_ms, keys, [0.5, 0.95])
        fallback = percentiles(session, RawCall.latency_ms, keys, [0.5, 0.95], many_groups=1)
    assert set(found) == set(fallback) == set(groups)  # no values, no group
    for key, vs in groups.items():
        expected = [np.percentile(vs, 50), np.percentile(vs, 95)]
        assert found[key] == pytest.approx(expected) and fallback[key] == pytest.approx(expected)


def test_time_bucket_rejects_unknown_granularity():
    with pytest.raises(ValueError, match="granularity must be one of day, hour, minute"):
        time_bucket(RawCall.created_at, "week", "sqlite")


def test_time_buckets_are_utc_starts(db):
    at = datetime(2026, 2, 3, 4, 5, 6, 789000, tzinfo=timezone.utc)
    with db.session_scope() as session:
        RawCallRepository(session).insert_raw_call(
            provider="p", status="success", request_json={}, created_at=at
        )
        got = {
            g: str(session.scalar(select(time_bucket(RawCall.created_at, g, db.dialect))))
            for g in ("day", "hour", "minute")
        }
    assert got == {
        "day": "2026-02-03 00:00:00",
        "hour": "2026-02-03 04:00:00",
        "minute": "2026-02-03 04:05:00",
    }
