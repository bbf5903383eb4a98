"""deploy/monitoring/failure_rate.sql, the failure-rate query of DEPLOYMENT.md, on PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text

from study_query_dagster.db import RawCallRepository

from .files import DEPLOY


def test_failure_rate_per_provider_and_model(pg_db):
    statuses = {
        ("azure", "gpt"): ["success", "failed", "timeout", "success"],
        ("openai", "m"): ["success"],
    }
    with pg_db.session_scope() as session:
        RawCallRepository(session).insert_raw_calls(
            [
                {"provider": p, "model": m, "status": s, "request_json": {"i": i}}
                for (p, m), values in statuses.items()
                for i, s in enumerate(values)
            ]
        )
    with pg_db.engine.connect() as conn:
        rows = conn.execute(text((DEPLOY / "monitoring" / "failure_rate.sql").read_text())).all()
    assert [tuple(r) for r in rows] == [
        ("azure", "gpt", 4, 2, Decimal("0.500")),
        ("openai", "m", 1, 0, Decimal("0.000")),
    ]
