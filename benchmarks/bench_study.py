"""StudyService on 1,000,000 raw_calls: aggregating in SQL versus loading the rows into pandas.

Baseline, measured in the same run on the same rows: select the columns the figures need
(token counts already extracted from JSON by the database, the most favourable case for
pandas), load them with `pandas.read_sql_query`, and aggregate with groupby/quantile. The
figures of both ways are checked against each other before the timings are printed.
"""

from __future__ import annotations

import io
import json
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from sqlalchemy import text

from .support import postgres_database, sqlite_database, timed

N = 1_000_000
PAGE = 100_000
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("azure", "gpt-4o-mini"),
          ("azure", "gpt-4.1"), ("hyperbolic", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
          ("hyperbolic", "my-finetune")]  # fmt: skip
COLUMNS = ("provider", "model", "modality", "status", "request_json", "response_json",
           "latency_ms", "tokens_json", "created_at")  # fmt: skip


def rows(start: int, count: int):
    rng = random.Random(start)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(start, start + count):
        provider, model = MODELS[i % len(MODELS)]
        roll = rng.random()
        status = ("success" if roll < 0.95 else "failed" if roll < 0.98
                  else "timeout" if roll < 0.99 else "cancelled")  # fmt: skip
        ok = status == "success"
        p, c = rng.randrange(5, 500), rng.randrange(1, 800)
        yield (
            provider, model, "text", status,
            json.dumps({"messages": [{"role": "user", "content": f"prompt {i}"}], "params": {}}),
            json.dumps({"text": f"answer {i}"}) if ok else None,
            round(rng.lognormvariate(6, 0.6), 3),
            json.dumps({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
            if ok else None,
            t0 + timedelta(seconds=i * 2.5),
        )  # fmt: skip


def fill(db) -> None:
    """1M rows through the driver: sqlite3 executemany, PostgreSQL COPY."""
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        if db.dialect == "sqlite":
            cursor.execute("BEGIN")
            sql = f"INSERT INTO raw_calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            for start in range(0, N, PAGE):
                cursor.executemany(
                    sql,
                    [
                        (*r[:-1], r[-1].replace(tzinfo=None).isoformat(" "))
                        for r in rows(start, PAGE)
                    ],
                )
        else:
            for start in range(0, N, PAGE):
                buffer = io.StringIO()
                for r in rows(start, PAGE):
                    buffer.write("\t".join(_copy_value(v) for v in r) + "\n")
                buffer.seek(0)
                cursor.copy_expert(f"COPY raw_calls ({', '.join(COLUMNS)}) FROM STDIN", buffer)
        raw.commit()
    finally:
        raw.close()
    # Fresh statistics (and, on PostgreSQL, a visibility map for index-only scans), as
    # autovacuum would provide on a live database.
    if db.dialect == "sqlite":
        with db.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    else:
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE raw_calls")


def _copy_value(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def pandas_comparison(db) -> pd.DataFrame:
    if db.dialect == "sqlite":
        tokens = ", ".join(f"json_extract(tokens_json, '$.{k}') AS {k}"
                           for k in ("prompt_tokens", "completion_tokens", "total_tokens"))  # fmt: skip
    else:
        tokens = ", ".join(f"(tokens_json->>'{k}')::float AS {k}"
                           for k in ("prompt_tokens", "completion_tokens", "total_tokens"))  # fmt: skip
    sql = (f"SELECT provider, model, status, latency_ms, {tokens} FROM raw_calls"
           " WHERE modality = 'text'")  # fmt: skip
    with db.engine.connect() as conn:
        frame = pd.read_sql_query(text(sql), conn)
    groups = frame.groupby(["provider", "model"])
    ok = frame[frame["status"] == "success"].groupby(["provider", "model"])["latency_ms"]
    out = pd.DataFrame({"calls": groups.size()})
    for status in ("success", "failed", "timeout", "cancelled"):
        out[status] = groups["status"].agg(lambda s, st=status: int((s == st).sum()))
    out["success_rate"] = out["success"] / out["calls"]
    out["avg_latency_ms"] = ok.mean()
    out["p50_latency_ms"] = ok.quantile(0.5)
    out["p95_latency_ms"] = ok.quantile(0.95)
    for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
        out[k] = groups[k].sum()
    out["avg_tokens"] = groups["total_tokens"].mean()
    return out.reset_index()


def measure(db, label: str):
    from study_query_dagster.services.pricing import PriceTable
    from study_query_dagster.services.study import StudyService

    seconds = timed(lambda: fill(db))
    yield f"   ({label}: wrote {N:,} raw_calls in {seconds:.1f} s)"
    service = StudyService(db, PriceTable.load())
    ours: list[pd.DataFrame] = []
    theirs: list[pd.DataFrame] = []
    service.get_provider_comparison()  # warm the page cache for both contenders alike
    t_sql = timed(lambda: ours.append(service.get_provider_comparison()))
    t_pandas = timed(lambda: theirs.append(pandas_comparison(db)))
    a = ours[0].set_index(["provider", "model"]).sort_index()
    b = theirs[0].set_index(["provider", "model"]).sort_index()
    for column in ("calls", "success", "total_tokens"):
        assert (a[column].to_numpy() == b[column].to_numpy()).all(), column
    for column in ("avg_latency_ms", "p50_latency_ms", "p95_latency_ms"):
        assert np.allclose(a[column].to_numpy(), b[column].to_numpy()), column
    yield (f"{label} get_provider_comparison() on {N:,} raw_calls: {t_sql:.2f} s vs baseline "
           f"{t_pandas:.2f} s -> ratio {t_pandas / t_sql:.2f} (speed-up; baseline: read_sql + "
           "pandas groupby/quantile)")  # fmt: skip
    series: list[pd.DataFrame] = []
    t_series = timed(lambda: series.append(service.get_time_series_data("day")))
    t_series_pandas = timed(lambda: series.append(pandas_time_series(db)))
    assert series[0]["calls"].sum() == series[1]["calls"].sum() == N
    assert len(series[0]) == len(series[1])
    yield (f"{label} get_time_series_data('day') on {N:,} raw_calls: {t_series:.2f} s vs "
           f"baseline {t_series_pandas:.2f} s -> ratio {t_series_pandas / t_series:.2f} "
           "(speed-up; baseline: read_sql + pandas resample)")  # fmt: skip
    t_summary = timed(lambda: service.get_summary_stats())
    yield (f"{label} get_summary_stats() on {N:,} raw_calls: {t_summary:.2f} s vs "
           f"get_provider_comparison() {t_sql:.2f} s, which it includes -> ratio "
           f"{t_sql / t_summary:.2f}")  # fmt: skip


def pandas_time_series(db) -> pd.DataFrame:
    tokens = ("json_extract(tokens_json, '$.total_tokens')" if db.dialect == "sqlite"
              else "(tokens_json->>'total_tokens')::float")  # fmt: skip
    sql = (f"SELECT created_at, provider, status, latency_ms, {tokens} AS total_tokens"
           " FROM raw_calls WHERE modality = 'text'")  # fmt: skip
    with db.engine.connect() as conn:
        frame = pd.read_sql_query(text(sql), conn)
    frame["bucket"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601").dt.floor("D")
    frame["ok"] = frame["status"] == "success"
    frame["ok_latency"] = frame["latency_ms"].where(frame["ok"])
    groups = frame.groupby(["bucket", "provider"])
    return pd.DataFrame({
        "calls": groups.size(),
        "successes": groups["ok"].sum(),
        "total_tokens": groups["total_tokens"].sum(),
        "avg_latency_ms": groups["ok_latency"].mean(),
    }).reset_index()  # fmt: skip


def run():
    with sqlite_database() as db:
        yield from measure(db, "sqlite")
    with postgres_database() as db:
        yield from measure(db, "postgresql")
