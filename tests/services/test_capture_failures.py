"""When the database refuses a capture: the failure is one readable log line per flush, and rows
whose caller stopped waiting (cancelled calls) leave no "exception was never retrieved" trail."""

import asyncio
import gc
import logging

from sqlalchemy.exc import OperationalError

from study_query_dagster.db import DatabaseConnection
from study_query_dagster.services import CaptureWriter

ROW = {
    "provider": "offline",
    "model": "offline-echo",
    "status": "success",
    "request_json": {"messages": [{"role": "user", "content": "a prompt"}]},
}


def capture_twice_into_a_broken_database(sqlite_db) -> tuple[list, list]:
    """Submit two rows (one awaited, one abandoned) to a database without raw_calls, under
    asyncio.run as an asset step runs its calls. Returns (errors raised, unhandled contexts)."""
    db = DatabaseConnection(sqlite_db.url)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE raw_calls RENAME TO raw_calls_elsewhere")
    raised, unhandled = [], []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        writer = CaptureWriter(db)
        awaited = writer.submit(dict(ROW))
        writer.submit(dict(ROW))  # a cancelled call's row: nobody awaits it
        try:
            await awaited
        except OperationalError as exc:
            raised.append(str(exc.orig))
        writer.close()

    asyncio.run(main())
    db.dispose()
    gc.collect()  # the abandoned row's future goes with the loop's leftovers
    return raised, unhandled


def test_a_refused_capture_is_one_readable_log_line(sqlite_db, caplog):
    with caplog.at_level(logging.ERROR, logger="study_query_dagster"):
        raised, _ = capture_twice_into_a_broken_database(sqlite_db)
    assert raised == ["no such table: raw_calls"]
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("capture of")]
    # The driver's reason only: not the INSERT statement with every row's parameters.
    assert lines == ["capture of 2 row(s) failed: no such table: raw_calls"]


def test_an_abandoned_row_leaves_no_unretrieved_exception(sqlite_db, monkeypatch):
    # Off, so that pytest's log capture keeps no reference to the error.
    monkeypatch.setattr(
        logging.getLogger("study_query_dagster.services.inference.capture"), "disabled", True
    )
    raised, unhandled = capture_twice_into_a_broken_database(sqlite_db)
    assert raised == ["no such table: raw_calls"]
    assert [c["message"] for c in unhandled] == []
