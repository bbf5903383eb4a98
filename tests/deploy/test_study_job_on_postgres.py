"""The production `study_job` on the production instance: deploy/dagster.yaml with its storage on
the embedded PostgreSQL (after `dagster instance migrate`), the app DB on PostgreSQL as well,
resources built from the environment by definitions.py, steps in subprocesses (the job's own
multiprocess executor), and a sample prompt set from prompt_sets/."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import create_engine, func, select, text

from study_query_dagster.db import DatabaseConnection, EmbeddingVector, Group, GroupMember, RawCall
from tests.support.deployment import ROOT
from tests.support.pipeline import reconstructable_production_study_job

PROMPT_SETS = ROOT / "prompt_sets"
STUDY_ASSETS = {"prompt_set", "inference_run", "response_embeddings", "study_results"}


def _dagster_rows(url: str, sql: str, **params) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


@pytest.mark.slow  # one subprocess per step, as in production
def test_capitals_through_study_job_on_postgres_storage(
    pg_deployment, pg_dagster_instance, monkeypatch
):
    monkeypatch.setenv("PROMPT_SETS_DIR", str(PROMPT_SETS))
    instance = pg_dagster_instance
    # `dagster instance migrate` (run by the fixture) left the schema at Dagster's head.
    db_revision, head = instance.run_storage.alembic_version()
    assert db_revision is not None and db_revision == head

    instance.add_dynamic_partitions("prompt_sets", ["capitals"])
    result = dg.execute_job(
        reconstructable_production_study_job(), instance, tags={"dagster/partition": "capitals"}
    )
    assert result.success
    run_id = result.run_id
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == STUDY_ASSETS
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert len(checks) == 6 and all(checks.values()), checks

    # The run and its events are rows in PostgreSQL, not files next to DAGSTER_HOME.
    url = pg_deployment.dagster_db_url
    [(status,)] = _dagster_rows(url, "SELECT status FROM runs WHERE run_id = :r", r=run_id)
    assert status == "SUCCESS"
    events = _dagster_rows(
        url, "SELECT dagster_event_type, asset_key FROM event_logs WHERE run_id = :r", r=run_id
    )
    kinds = [kind for kind, _ in events]
    assert kinds.count(dg.DagsterEventType.RUN_SUCCESS.value) == 1
    assert kinds.count("ASSET_CHECK_EVALUATION") == 6
    stored_assets = {key for kind, key in events if kind == "ASSET_MATERIALIZATION"}
    assert stored_assets == {f'["{name}"]' for name in STUDY_ASSETS}
    assert not list(pg_deployment.home.glob("**/*.db"))  # no SQLite storage anywhere
    # The llm_api pool slots the steps claimed were given back.
    assert instance.event_log_storage.get_concurrency_info("llm_api").active_slot_count == 0

    # The calls are in the app DB: 4 prompts x 2 targets x 3 samples, in the run's group.
    db = DatabaseConnection(pg_deployment.app_db_url)
    with db.session_scope() as session:
        group = session.scalars(
            select(Group).where(Group.group_type == "run", Group.name == f"capitals/{run_id}")
        ).one()
        members = select(GroupMember.call_id).where(GroupMember.group_id == group.id)
        statuses = session.execute(
            select(RawCall.status, func.count())
            .where(RawCall.id.in_(members), RawCall.modality == "text")
            .group_by(RawCall.status)
        ).all()
        vectors = session.scalar(select(func.count()).select_from(EmbeddingVector))
    db.dispose()
    assert dict(statuses) == {"success": 24}
    assert vectors > 0
    embedded = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path == ["response_embeddings"]
    )
    assert embedded["embedded"].value == 24

    # An upgrade runs `dagster instance migrate` on a populated instance: it keeps the history.
    output = pg_deployment.migrate().stdout
    assert "Updating run storage" in output
    with dg.DagsterInstance.get() as again:
        assert again.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        event = again.get_latest_materialization_event(dg.AssetKey("inference_run"))
        assert event is not None and event.run_id == run_id
