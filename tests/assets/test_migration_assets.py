"""The migration asset and its checks driven by run config, as the launchpad sets it: skipping
bad rows into the quarantine, naming the source, and a full verification instead of a sample.
On SQLite and PostgreSQL app databases (`db_url`)."""

import dagster as dg
from sqlalchemy import text

from study_query_dagster.assets.migration import MigrationConfig, VerificationConfig
from study_query_dagster.db import DatabaseConnection
from study_query_dagster.definitions import defs
from tests.support.legacy import create_v1_sqlite, ledger_unlocked, sql_v1
from tests.support.pipeline import make_resources, no_stale_state_storage

MIGRATION = dg.AssetSelection.assets("migrated_raw_calls")


def rows(n: int, bad: dict | None = None) -> list[dict]:
    out = [
        {
            "prompt": f"legacy prompt {i}",
            "response": f"legacy answer {i}",
            "provider": "azure",
            "tokens": 10 + i,
            "latency_ms": 100.0 + i,
            "batch_id": f"batch-{i % 3}",
            "metadata": {"model": "gpt-4o-mini", "prompt_tokens": i, "completion_tokens": 10},
            "created_at": f"2024-03-01 09:00:{i % 60:02d}.{i:06d}",
        }
        for i in range(n)
    ]
    for index, change in (bad or {}).items():
        out[index] = {**out[index], **change}
    return out


def run(resources, instance, migration=None, checks=None):
    ops = {}
    if migration is not None:
        ops["migrated_raw_calls"] = migration
    if checks is not None:
        ops["migration_checks"] = checks
    # a run here can leave a closed instance's defs state storage behind for the next one
    with no_stale_state_storage():
        return dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=MIGRATION,
            resources=resources,
            instance=instance,
            run_config=dg.RunConfig(ops=ops),
            raise_on_error=False,
        )


def materialized(result) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def check_results(result) -> dict:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def test_bad_rows_fail_or_go_to_the_quarantine_as_configured(db_url, tmp_path):
    legacy = create_v1_sqlite(
        tmp_path / "v1.db", rows(30, {4: {"provider": ""}, 9: {"latency_ms": -3.0}})
    )
    resources = make_resources(db_url, tmp_path / "sets", legacy_url=f"sqlite:///{legacy}")
    with dg.instance_for_test() as instance:
        failed = run(resources, instance)
        assert not failed.success
        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        message = str(failure.event_specific_data.error)
        assert "v1 ids [5]" in message and "v1 ids [10]" in message
        assert "skip_invalid_rows: true" in message

        skipped = run(resources, instance, MigrationConfig(skip_invalid_rows=True))
        assert skipped.success
        meta = materialized(skipped)
        assert (meta["migrated_now"], meta["quarantined"], meta["quarantined_now"]) == (28, 2, 2)
        assert "| 5 | provider | is empty (got '') |" in meta["quarantine"]
        assert "| 10 | latency_ms |" in meta["quarantine"]
        checks = check_results(skipped)
        assert {n: c.passed for n, c in checks.items() if not c.passed} == {
            "no_rows_quarantined": False
        }
        warning = checks["no_rows_quarantined"]
        assert warning.severity == dg.AssetCheckSeverity.WARN
        assert warning.metadata["quarantined_rows"].value == 2
        assert checks["row_counts_match"].metadata["quarantined_rows"].value == 2

        # fixed in v1: the next plain run migrates them and the warning clears
        sql_v1(legacy, "UPDATE inference_runs SET provider = 'azure' WHERE id = 5")
        sql_v1(legacy, "UPDATE inference_runs SET latency_ms = 3.0 WHERE id = 10")
        fixed = run(resources, instance)
        assert fixed.success
        assert materialized(fixed)["released_from_quarantine"] == 2
        assert all(c.passed for c in check_results(fixed).values())


def test_source_id_and_full_verification_from_run_config(db_url, tmp_path):
    legacy = create_v1_sqlite(tmp_path / "v1.db", rows(60))
    resources = make_resources(db_url, tmp_path / "sets", legacy_url=f"sqlite:///{legacy}")
    with dg.instance_for_test() as instance:
        first = run(resources, instance, MigrationConfig(source_id="lab-archive-2024"))
        assert first.success and materialized(first)["source_id"] == "lab-archive-2024"
        # the checks take the source the migration reported, without being told
        assert all(c.passed for c in check_results(first).values())

        # one changed answer: a sample of 1 can miss it, the full comparison cannot
        db = DatabaseConnection(db_url)
        with ledger_unlocked(db), db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO raw_calls (provider, model, modality, status, request_json,"
                    " response_json, latency_ms, tokens_json, metadata_json, created_at)"
                    " SELECT provider, model, modality, status, request_json, :changed,"
                    " latency_ms, tokens_json, metadata_json, created_at FROM raw_calls"
                    " WHERE id = (SELECT raw_call_id FROM migration_ledger WHERE v1_id = 33)"
                ),
                {"changed": '{"text": "edited later"}'},
            )
            conn.execute(
                text(
                    "UPDATE migration_ledger SET raw_call_id = (SELECT max(id) FROM raw_calls)"
                    " WHERE v1_id = 33"
                )
            )
        db.dispose()
        full = run(
            resources,
            instance,
            MigrationConfig(source_id="lab-archive-2024"),
            VerificationConfig(full=True),
        )
        parity = check_results(full)["sample_parity"]
        assert not parity.passed and parity.metadata["mode"].value == "full"
        assert parity.metadata["compared_rows"].value == 60
        report = parity.metadata["report"].value
        assert "| 33 | batch-2 | response | legacy answer 32 | edited later |" in report
        sampled = run(
            resources,
            instance,
            MigrationConfig(source_id="lab-archive-2024"),
            VerificationConfig(sample_size=1, seed=5),
        )
        one = check_results(sampled)["sample_parity"]
        assert one.metadata["sampled_rows"].value == 1 and one.metadata["seed"].value == 5
