"""Legacy v1 databases for the migration tests, built by plain SQL in the original layout."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.support.legacy import create_v1_postgres, create_v1_sqlite

BASE = datetime(2025, 5, 1, 12, 0, 0)
HUGE = "长" * 50_000 + "x" * 50_000  # 100,000 characters
UNICODE = "Ünïcødé ✓ 漢字 🙂 مرحبا שלום e\u0301"


def v1_dataset() -> list[dict]:
    """What a real v1 database holds: a batch of 1,000 (created out of id order), a batch of 1,
    rows without batch_id, NULL tokens/latency/metadata, unicode, 100k-character prompts, and
    timestamps as SQLite's CURRENT_TIMESTAMP and as Python wrote them (with microseconds)."""
    rows = []
    for i in range(1000):
        # a permutation of seconds: id order is not time order inside the batch
        at = BASE + timedelta(seconds=(i * 617) % 1000, microseconds=i)
        rows.append(
            {
                "prompt": f"question {i}",
                "response": f"answer {i}",
                "provider": "azure" if i % 2 else "openai",
                "tokens": 10 + i,
                "latency_ms": 100.0 + i / 8,
                "metadata": {"model": "gpt-4o-mini", "temperature": 0.7, "i": i},
                "batch_id": "batch-of-1000",
                "created_at": at.isoformat(" "),
            }
        )
    rows.append(
        {
            "prompt": "alone",
            "response": "solo",
            "provider": "hyperbolic",
            "tokens": 3,
            "latency_ms": 12.5,
            "metadata": {"nested": {"list": [1, 2, {"k": None}]}},
            "batch_id": "batch-of-1",
            "created_at": "2025-04-30 23:59:59",  # CURRENT_TIMESTAMP format, no fraction
        }
    )
    rows += [
        {"prompt": "nothing known", "response": "r", "provider": "openai"},  # all NULL, now()
        {"prompt": UNICODE, "response": UNICODE[::-1], "provider": "azure", "tokens": None,
         "latency_ms": None, "metadata": None, "created_at": "2025-05-02 08:00:00.000001"},
        {"prompt": HUGE, "response": HUGE[::-1], "provider": "openai", "tokens": 100_000,
         "latency_ms": 0.0, "metadata": {"note": UNICODE}, "created_at": "2025-05-03 00:00:00"},
        {"prompt": HUGE + "!", "response": "ok", "provider": "openai", "tokens": 1,
         "latency_ms": 1.0, "metadata": [], "batch_id": "big-prompts",
         "created_at": "2025-05-03 00:00:01"},
        {"prompt": "", "response": "", "provider": "offline", "tokens": 0, "latency_ms": 0.5,
         "metadata": {}, "batch_id": "", "created_at": "2025-05-04 00:00:00"},
    ]  # fmt: skip
    # batch ids whose order differs between bytewise and locale collations
    for name in ("Zeta", "alpha", "Ärger", "zeta"):
        rows.append({"prompt": f"in {name}", "response": "r", "provider": "openai",
                     "batch_id": name, "created_at": "2025-05-05 00:00:00"})  # fmt: skip
    return rows


V1_ROWS = len(v1_dataset())


@pytest.fixture
def v1_path(tmp_path) -> Path:
    return create_v1_sqlite(tmp_path / "legacy_v1.db", v1_dataset())


@pytest.fixture
def v1_url(v1_path) -> str:
    return f"sqlite:///{v1_path}"


@pytest.fixture
def v1_pg_url(pg_server) -> Iterator[str]:
    """The same dataset in a v1 PostgreSQL database (timestamptz, json)."""
    url = pg_server.create_database(migrated=False)
    rendered = url.render_as_string(hide_password=False)
    create_v1_postgres(rendered, v1_dataset())
    yield rendered
    pg_server.drop_database(url)
