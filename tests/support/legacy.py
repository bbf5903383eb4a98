"""v1 databases built with plain SQL in the original tool's layout (not through our models)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

V1_SQLITE_DDL = """
CREATE TABLE inference_runs (
    id INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    provider VARCHAR(50) NOT NULL,
    tokens INTEGER,
    latency_ms FLOAT,
    metadata JSON,
    batch_id VARCHAR(36),
    created_at DATETIME DEFAULT (CURRENT_TIMESTAMP) NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_inference_runs_provider ON inference_runs (provider);
CREATE INDEX ix_inference_runs_batch_id ON inference_runs (batch_id);
CREATE INDEX ix_inference_runs_created_at ON inference_runs (created_at);
"""

V1_POSTGRES_DDL = """
CREATE TABLE inference_runs (
    id SERIAL PRIMARY KEY,
    prompt TEXT NOT NULL,
    response TEXT NOT NULL,
    provider VARCHAR(50) NOT NULL,
    tokens INTEGER,
    latency_ms DOUBLE PRECISION,
    metadata JSON,
    batch_id VARCHAR(36),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL
);
CREATE INDEX ix_inference_runs_provider ON inference_runs (provider);
CREATE INDEX ix_inference_runs_batch_id ON inference_runs (batch_id);
CREATE INDEX ix_inference_runs_created_at ON inference_runs (created_at);
"""

COLUMNS = ("prompt", "response", "provider", "tokens", "latency_ms", "metadata", "batch_id",
           "created_at")  # fmt: skip


def create_v1_sqlite(path: Path, rows: Iterable[Mapping[str, Any]] = ()) -> Path:
    """A v1 SQLite file as the original tool left it; `created_at` strings as SQLite stores them."""
    con = sqlite3.connect(path)
    con.executescript(V1_SQLITE_DDL)
    add_v1_sqlite_rows(path, rows, con)
    con.close()
    return path


def add_v1_sqlite_rows(path: Path, rows: Iterable[Mapping[str, Any]], con=None) -> None:
    own = con is None
    con = con or sqlite3.connect(path)
    for row in rows:
        values = {k: row.get(k) for k in COLUMNS if k in row}
        if isinstance(values.get("metadata"), dict | list):
            values["metadata"] = json.dumps(values["metadata"])
        names = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        con.execute(f"INSERT INTO inference_runs ({names}) VALUES ({marks})", list(values.values()))
    con.commit()
    if own:
        con.close()
