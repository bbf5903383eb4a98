"""Bulk insert of 100k raw_calls: `RawCallRepository.insert_raw_calls` vs the plain driver.

Baselines, measured in the same run on a fresh table each time: serialise the rows' JSON and
hand them to the DB-API driver's own `executemany` (sqlite3; psycopg2), and for PostgreSQL also
to psycopg2's `execute_values`, its fastest plain path. Neither baseline validates rows or
returns ids; `insert_raw_calls` does both.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from sqlalchemy import text

from study_query_dagster.db import RawCallRepository

from .support import postgres_database, ratio_line, sqlite_database, timed, truncate_postgres

N = 100_000
COLUMNS = ("provider", "model", "modality", "status", "request_json", "response_json",
           "latency_ms", "tokens_json", "metadata_json", "created_at")  # fmt: skip


def make_rows(n: int) -> list[dict]:
    now = datetime.now(timezone.utc)
    return [
        {
            "provider": "offline",
            "model": "echo-1",
            "modality": "text",
            "status": "success",
            "request_json": {"messages": [{"role": "user", "content": f"prompt number {i}"}]},
            "response_json": {"text": f"answer {i}"},
            "latency_ms": float(i % 500),
            "tokens_json": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            "metadata_json": {"sample_index": i % 5},
            "created_at": now,
        }
        for i in range(n)
    ]


def driver_tuples(rows: list[dict], dialect: str) -> list[tuple]:
    out = []
    for r in rows:
        created = (
            r["created_at"]
            if dialect == "postgresql"
            else r["created_at"].replace(tzinfo=None).isoformat(" ")
        )
        out.append((r["provider"], r["model"], r["modality"], r["status"],
                    json.dumps(r["request_json"]), json.dumps(r["response_json"]), r["latency_ms"],
                    json.dumps(r["tokens_json"]), json.dumps(r["metadata_json"]), created))  # fmt: skip
    return out


def truncate(db) -> None:
    # raw_calls refuses DELETE/TRUNCATE by design; benchmarks empty it in a throw-away database
    # by lifting the guard.
    if db.dialect != "sqlite":
        truncate_postgres(db, "raw_calls")
        return
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER IF EXISTS raw_calls_no_delete")
        conn.exec_driver_sql("DELETE FROM raw_calls")


def measure(db, label: str):
    rows = make_rows(N)
    placeholders = ", ".join(["?" if db.dialect == "sqlite" else "%s"] * len(COLUMNS))
    sql = f"INSERT INTO raw_calls ({', '.join(COLUMNS)}) VALUES ({placeholders})"

    def ours():
        with db.session_scope() as session:
            RawCallRepository(session).insert_raw_calls(rows)

    def plain_executemany():
        tuples = driver_tuples(rows, db.dialect)  # serialising JSON is part of the job
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            if db.dialect == "sqlite":
                cursor.execute("BEGIN")
            cursor.executemany(sql, tuples)
            raw.commit()
        finally:
            raw.close()

    results = []
    t_ours = timed(ours)
    truncate(db)
    t_plain = timed(plain_executemany)
    results.append(ratio_line(f"{label} insert_raw_calls {N:,} rows", N / t_ours, N / t_plain,
                              "rows/s", "(baseline: driver executemany)"))  # fmt: skip
    if db.dialect == "postgresql":
        from psycopg2.extras import execute_values

        truncate(db)

        def plain_execute_values():
            tuples = driver_tuples(rows, db.dialect)
            raw = db.engine.raw_connection()
            try:
                values_sql = f"INSERT INTO raw_calls ({', '.join(COLUMNS)}) VALUES %s"
                execute_values(raw.cursor(), values_sql, tuples, page_size=1000)
                raw.commit()
            finally:
                raw.close()

        t_values = timed(plain_execute_values)
        results.append(ratio_line(f"{label} insert_raw_calls {N:,} rows", N / t_ours, N / t_values,
                                  "rows/s", "(baseline: psycopg2 execute_values)"))  # fmt: skip
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM raw_calls")).scalar() == N
    return results


def run():
    with sqlite_database() as db:
        yield from measure(db, "sqlite")
    with postgres_database() as db:
        yield from measure(db, "postgresql")
