"""deploy/dagster.yaml on PostgreSQL: `dagster instance migrate` on an empty database, then a
materialization through that instance, read back from PostgreSQL."""

from __future__ import annotations

import logging
import os

import dagster as dg
import yaml
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy import create_engine, inspect, text

from study_query_dagster.db import DatabaseConnection, RawCallRepository
from study_query_dagster.log import get_logger
from tests.support.deployment import DEPLOY_DIR

DEPLOY_CONFIG = yaml.safe_load((DEPLOY_DIR / "dagster.yaml").read_text())


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


@dg.asset(pool="llm_api")
def deploy_probe() -> dg.MaterializeResult:
    """Reads the app DB named by DATABASE_URL and logs through our managed logger."""
    db = DatabaseConnection(os.environ["DATABASE_URL"])
    try:
        with db.session_scope() as session:
            calls = RawCallRepository(session).count_raw_calls()
    finally:
        db.dispose()
    get_logger("deploy_probe").info("probe saw %d raw calls", calls)
    return dg.MaterializeResult(metadata={"raw_calls": calls, "dialect": db.dialect})


def test_migrate_then_materialize_on_postgres(pg_deployment):
    assert _tables(pg_deployment.dagster_db_url) == set()

    pg_deployment.migrate()

    tables = _tables(pg_deployment.dagster_db_url)
    assert {"runs", "event_logs", "jobs", "concurrency_limits", "alembic_version"} <= tables
    # The app schema lives in its own database, untouched by Dagster's migrations.
    assert "raw_calls" not in tables and "runs" not in _tables(pg_deployment.app_db_url)

    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)

        result = dg.materialize([deploy_probe], instance=instance)
        assert result.success

        event = instance.get_latest_materialization_event(dg.AssetKey("deploy_probe"))
        assert event is not None and event.run_id == result.run_id
        metadata = event.asset_materialization.metadata
        assert metadata["raw_calls"].value == 0
        assert metadata["dialect"].value == "postgresql"

        # Our module logger's record was captured into the run's event log.
        messages = [
            record.user_message
            for record in instance.all_logs(result.run_id)
            if record.level == logging.INFO
        ]
        assert any("probe saw 0 raw calls" in m for m in messages), messages

        # The llm_api pool was created with the instance default and its slot given back.
        default_limit = DEPLOY_CONFIG["concurrency"]["pools"]["default_limit"]
        info = instance.event_log_storage.get_concurrency_info("llm_api")
        assert info.slot_count == default_limit
        assert info.active_slot_count == 0

    # The event is in PostgreSQL itself, not in a file next to DAGSTER_HOME.
    engine = create_engine(pg_deployment.dagster_db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT run_id FROM event_logs "
                    "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key LIKE :key"
                ),
                {"key": '%"deploy_probe"%'},
            ).all()
    finally:
        engine.dispose()
    assert [r.run_id for r in rows] == [result.run_id]

    # docker-compose's migrate service runs on every start: a second migrate is harmless.
    pg_deployment.migrate()
    with dg.DagsterInstance.get() as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("deploy_probe"))
        assert event is not None and event.run_id == result.run_id


def test_llm_api_pool_limit_is_set_with_the_cli(pg_dagster_instance, pg_deployment):
    """dagster.yaml has no per-pool key; the command DEPLOYMENT.md gives sets the limit."""
    pg_deployment.dagster("instance", "concurrency", "set", "llm_api", "2")

    info = pg_dagster_instance.event_log_storage.get_concurrency_info("llm_api")
    assert info.slot_count == 2
    shown = pg_deployment.dagster("instance", "concurrency", "get", "llm_api")
    assert "llm_api" in shown.stdout and "2" in shown.stdout


def test_instance_settings_come_from_the_deploy_config(pg_dagster_instance):
    instance = pg_dagster_instance
    runs = DEPLOY_CONFIG["concurrency"]["runs"]
    queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == runs["max_concurrent_runs"] > 0
    assert list(queue.tag_concurrency_limits) == runs["tag_concurrency_limits"]

    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
    assert instance.run_retries_enabled and instance.run_retries_max_retries > 0
    assert not instance.run_retries_retry_on_asset_or_op_failure
    assert list(instance.managed_python_loggers) == ["study_query_dagster"]
    assert instance.get_settings("telemetry") == {"enabled": False}
