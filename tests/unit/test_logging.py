"""Package logging: INFO records with ids and timings, and secrets masked even if logged."""

import logging

from study_query_dagster.db import RawCallRepository
from study_query_dagster.log import MASK, configure_logging, get_logger, redact


def test_db_operations_are_logged_with_ids_and_timings(sqlite_db, caplog):
    # the bulk capture logs at DEBUG (a run commits many batches; INFO is a Dagster event each)
    caplog.set_level(logging.DEBUG, logger="study_query_dagster")
    with sqlite_db.session_scope() as session:
        repo = RawCallRepository(session)
        call_id = repo.insert_raw_call(provider="offline", status="success", request_json={})
        repo.insert_raw_calls([{"provider": "offline", "status": "failed", "request_json": {}}] * 3)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("study_query_dagster")]
    assert f"captured raw_call id={call_id} provider=offline model=None status=success" in messages
    assert any(m.startswith("captured 3 raw_calls in ") and m.endswith(" ms") for m in messages)


def test_secret_values_are_masked(monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-abcdef123456")
    monkeypatch.setenv("SOME_SETTING", "sk-not-a-secret-name")
    assert redact("key=sk-test-abcdef123456 other=sk-not-a-secret-name") == (
        f"key={MASK} other=sk-not-a-secret-name"
    )
    caplog.set_level(logging.INFO, logger="study_query_dagster")
    get_logger("test").info("calling with %s", "sk-test-abcdef123456")
    assert "sk-test-abcdef123456" not in caplog.text
    assert f"calling with {MASK}" in caplog.text


def test_configure_logging_is_idempotent():
    configure_logging("INFO")
    configure_logging("INFO")
    root = logging.getLogger("study_query_dagster")
    assert sum(getattr(h, "_sqd", False) for h in root.handlers) == 1
