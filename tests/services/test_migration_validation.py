"""Backfill validation: all four checks pass on a faithful migration, and each fails — naming
the v1 row and/or batch — when a migrated database or its v1 source is tampered with.

raw_calls refuses UPDATE and DELETE, so a "changed copy" is made the way it could really
happen: insert an altered copy of a migrated call and repoint the ledger at it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text

from study_query_dagster.db import MigrationLedger, RawCallRepository
from study_query_dagster.db.legacy_reader import ID_PAGE
from study_query_dagster.services.migration import (
    CHECKS,
    ValidationReport,
    batch_sizes_match,
    migrate_v1_to_v2,
    row_counts_match,
    sample_parity,
    sample_v1_ids,
    timestamps_match,
    validate_migration,
)
from tests.support.legacy import add_v1_sqlite_rows, create_v1_sqlite, ledger_unlocked, sql_v1

from .conftest import V1_ROWS

ALL = {"sample_size": None}  # compare every row, so the tampered one is always in the sample


@pytest.fixture
def migrated_db(db, v1_url):
    migrate_v1_to_v2(v1_url, db)
    return db


def outcome(reports: list[ValidationReport]) -> dict[str, bool]:
    return {r.check: r.passed for r in reports}


def raw_call_id(db, v1_id: int) -> int:
    with db.session_scope() as session:
        return session.scalar(
            select(MigrationLedger.raw_call_id).where(MigrationLedger.v1_id == v1_id)
        )


def replace_with_copy(db, v1_id: int, **changes) -> int:
    """Insert an altered copy of v1 row `v1_id`'s raw_call and point the ledger at it."""
    old = raw_call_id(db, v1_id)
    with ledger_unlocked(db), db.session_scope() as session:
        repo = RawCallRepository(session)
        row = repo.get_raw_call(old).to_dict()
        row.pop("id")
        new = repo.insert_raw_call(**{**row, **changes})
        session.execute(
            text("UPDATE migration_ledger SET raw_call_id = :new WHERE raw_call_id = :old"),
            {"new": new, "old": old},
        )
    return new


def test_faithful_migration_passes_every_check(migrated_db, v1_url):
    reports = validate_migration(v1_url, migrated_db, **ALL)
    assert outcome(reports) == dict.fromkeys(CHECKS, True)
    assert len(CHECKS) == 6
    by_check = {r.check: r for r in reports}
    assert by_check["row_counts_match"].counts == {
        "v1_rows": V1_ROWS, "ledger_rows": V1_ROWS, "v2_tagged_rows": V1_ROWS,
        "quarantined_rows": 0,
    }  # fmt: skip
    sizes = by_check["batch_sizes_match"].counts
    assert (sizes["v1_batches"], sizes["v2_batches"]) == (7, 7)
    assert sizes["v1_batched_rows"] == sizes["v2_batch_members"] == 1006
    assert by_check["timestamps_match"].counts["batches_compared"] == 7
    assert by_check["sample_parity"].counts["compared_rows"] == V1_ROWS
    assert all(r.mismatches == [] and r.mismatch_count == 0 for r in reports)


def test_dropped_group_member_fails_batch_sizes_naming_batch_and_row(migrated_db, v1_url):
    with migrated_db.engine.begin() as conn:
        conn.execute(
            text("DELETE FROM group_members WHERE call_id = :id"),
            {"id": raw_call_id(migrated_db, 500)},
        )
    report = batch_sizes_match(v1_url, migrated_db)
    assert not report.passed and report.mismatch_count == 1
    (mismatch,) = report.mismatches
    assert mismatch["batch_id"] == "batch-of-1000" and mismatch["v1_id"] == 500
    assert (mismatch["v1"], mismatch["v2"]) == (1000, 999)
    assert "v1 ids missing from the group: [500]" in mismatch["problem"]
    assert "batch-of-1000" in report.to_markdown() and "| 500 |" in report.to_markdown()
    # no data was lost from raw_calls, and the other checks say so
    others = [row_counts_match(v1_url, migrated_db), sample_parity(v1_url, migrated_db, **ALL)]
    assert all(r.passed for r in others)


def test_deleted_batch_group_is_named(migrated_db, v1_url):
    with migrated_db.engine.begin() as conn:
        conn.execute(text("DELETE FROM groups WHERE name = 'batch-of-1'"))  # cascades members
    report = batch_sizes_match(v1_url, migrated_db)
    (mismatch,) = report.mismatches
    assert (mismatch["batch_id"], mismatch["v1_id"], mismatch["v2"]) == ("batch-of-1", 1001, 0)
    assert "v1 ids missing from the group: [1001]" in mismatch["problem"]


def test_altered_v1_row_fails_sample_parity_naming_row_and_field(migrated_db, v1_url, v1_path):
    sql_v1(v1_path, "UPDATE inference_runs SET response = 'tampered' WHERE id = 42")
    sql_v1(v1_path, "UPDATE inference_runs SET tokens = NULL, metadata = '{}' WHERE id = 7")
    report = sample_parity(v1_url, migrated_db, **ALL)
    assert not report.passed
    found = {(m["v1_id"], m["field"]) for m in report.mismatches}
    # row 7 lost its metadata, so also the model taken from it
    assert found == {(42, "response"), (7, "tokens"), (7, "metadata"), (7, "model")}
    response = next(m for m in report.mismatches if m["v1_id"] == 42)
    assert (response["v1"], response["v2"], response["batch_id"]) == (
        "tampered", "answer 41", "batch-of-1000",
    )  # fmt: skip
    assert row_counts_match(v1_url, migrated_db).passed


def test_altered_v1_timestamp_fails_timestamps_naming_row(migrated_db, v1_url, v1_path):
    # v1 id 1 is the earliest of its batch: the batch range and the row both disagree
    sql_v1(v1_path, "UPDATE inference_runs SET created_at = '2025-05-01 11:00:00' WHERE id = 1")
    report = timestamps_match(v1_url, migrated_db, **ALL)
    assert not report.passed
    rows = [m for m in report.mismatches if m["v1_id"] == 1]
    assert len(rows) == 1 and rows[0]["field"] == "created_at"
    assert rows[0]["v1"] == "2025-05-01T11:00:00+00:00"
    assert rows[0]["v2"] == "2025-05-01T12:00:00+00:00"
    batch = [m for m in report.mismatches if m["batch_id"] == "batch-of-1000" and not m["v1_id"]]
    assert [m["field"] for m in batch] == ["first created_at"]


def test_changed_copy_in_v2_fails_parity_timestamps_and_counts(migrated_db, v1_url):
    stray = raw_call_id(migrated_db, 1003)
    replace_with_copy(
        migrated_db,
        1003,
        response_json={"text": "rewritten"},
        latency_ms=999.0,
        created_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    )
    parity = sample_parity(v1_url, migrated_db, **ALL)
    assert {(m["v1_id"], m["field"]) for m in parity.mismatches} == {
        (1003, "response"), (1003, "latency_ms"),
    }  # fmt: skip
    times = timestamps_match(v1_url, migrated_db, **ALL)
    assert [(m["v1_id"], m["field"]) for m in times.mismatches if m["v1_id"]] == [
        (1003, "created_at")
    ]
    assert any(m["problem"] == "time range of all rows differs" for m in times.mismatches)
    counts = row_counts_match(v1_url, migrated_db)
    assert not counts.passed and counts.counts["v2_tagged_rows"] == V1_ROWS + 1
    (extra,) = counts.mismatches
    assert extra["v1_id"] == 1003 and extra["v2"] == f"extra raw_call {stray}"


def test_unmigrated_and_vanished_rows_fail_row_counts(migrated_db, v1_url, v1_path):
    add_v1_sqlite_rows(v1_path, [{"prompt": "late", "response": "r", "provider": "p",
                                  "batch_id": "batch-of-1"}])  # fmt: skip
    sql_v1(v1_path, "DELETE FROM inference_runs WHERE id = 10")
    report = row_counts_match(v1_url, migrated_db)
    assert not report.passed
    assert [(m["v1_id"], m["problem"]) for m in report.mismatches] == [
        (10, "ledger entry without a v1 row"),
        (V1_ROWS + 1, "v1 row was not migrated"),
    ]
    assert report.counts["v1_rows"] == V1_ROWS and report.counts["ledger_rows"] == V1_ROWS
    parity = sample_parity(v1_url, migrated_db, **ALL)
    assert [(m["v1_id"], m["problem"]) for m in parity.mismatches] == [
        (V1_ROWS + 1, "sampled row was not migrated")
    ]
    sizes = batch_sizes_match(v1_url, migrated_db)
    assert {(m["batch_id"], m["v1_id"]) for m in sizes.mismatches} == {
        ("batch-of-1", V1_ROWS + 1), ("batch-of-1000", 10),
    }  # fmt: skip


def test_mismatch_lists_are_capped_but_counted(migrated_db, v1_url, v1_path):
    sql_v1(v1_path, "UPDATE inference_runs SET provider = 'other' WHERE batch_id = 'batch-of-1000'")
    report = sample_parity(v1_url, migrated_db, sample_size=None, limit=10)
    assert report.mismatch_count == 1000 and len(report.mismatches) == 10
    assert [m["v1_id"] for m in report.mismatches] == list(range(1, 11))
    assert "… 990 more" in report.to_markdown(limit=10)
    assert report.summary == "sample_parity: 1000 mismatch(es)"


def test_sampling_is_seeded_uniform_and_reported(migrated_db, v1_url):
    a = sample_v1_ids(v1_url, 50, seed=7)
    assert a == sample_v1_ids(v1_url, 50, seed=7) != sample_v1_ids(v1_url, 50, seed=8)
    assert len(a) == len(set(a)) == 50 and a == sorted(a)
    assert sample_v1_ids(v1_url, None) == list(range(1, V1_ROWS + 1))
    assert sample_v1_ids(v1_url, 10_000, seed=1) == list(range(1, V1_ROWS + 1))
    # every id can be drawn: over many seeds the sample reaches the whole range
    drawn = set().union(*(sample_v1_ids(v1_url, 20, seed=s) for s in range(200)))
    assert min(drawn) <= 5 and max(drawn) >= V1_ROWS - 5 and len(drawn) > 900
    report = sample_parity(v1_url, migrated_db, sample_size=25, seed=3)
    assert report.passed and report.counts["seed"] == 3 and report.counts["compared_rows"] == 25
    drawn_seed = timestamps_match(v1_url, migrated_db, sample_size=25).counts["seed"]
    assert isinstance(drawn_seed, int)
    with pytest.raises(ValueError, match="sample_size must be >= 0"):
        sample_parity(v1_url, migrated_db, sample_size=-1)


def test_report_to_dict_and_markdown(migrated_db, v1_url):
    report = row_counts_match(v1_url, migrated_db)
    as_dict = report.to_dict()
    assert as_dict["passed"] is True and as_dict["counts"]["v1_rows"] == V1_ROWS
    markdown = report.to_markdown()
    assert markdown.startswith("**row_counts_match: passed**") and "| v1_rows |" in markdown


# --- verification as the run config selects it -------------------------------------------------


def test_full_comparison_catches_what_a_sample_misses(migrated_db, v1_url):
    """One changed response and a +1 s timestamp: found in every run of the full comparison,
    named by v1 id, first mismatches first."""
    replace_with_copy(migrated_db, 640, response_json={"text": "changed"})
    shifted = raw_call_id(migrated_db, 77)
    with migrated_db.session_scope() as session:
        created = RawCallRepository(session).get_raw_call(shifted).created_at
    replace_with_copy(migrated_db, 77, created_at=created + timedelta(seconds=1))
    replace_with_copy(migrated_db, 900, response_json={"text": "changed too"})
    # a sample of 5 rows that leaves them out passes: that is what a sample can miss
    small = validate_migration(v1_url, migrated_db, sample_size=5, seed=11)
    sampled = set(sample_v1_ids(v1_url, 5, seed=11))
    assert not sampled & {77, 640, 900}
    assert {r.check: r.passed for r in small}["sample_parity"]
    full = {r.check: r for r in validate_migration(v1_url, migrated_db, sample_size=None)}
    parity, times = full["sample_parity"], full["timestamps_match"]
    assert parity.counts["mode"] == "full" and parity.counts["compared_rows"] == V1_ROWS
    assert [(m["v1_id"], m["field"]) for m in parity.mismatches] == [
        (640, "response"), (900, "response"),
    ]  # fmt: skip
    assert (parity.mismatches[0]["v1"], parity.mismatches[0]["v2"]) == ("answer 639", "changed")
    rows = [m for m in times.mismatches if m["v1_id"]]
    assert [(m["v1_id"], m["field"]) for m in rows] == [(77, "created_at")]


def test_reversed_batch_order_fails_the_order_check_only(migrated_db, v1_url):
    with migrated_db.engine.begin() as conn:
        group = conn.execute(text("SELECT id FROM groups WHERE name = 'batch-of-1000'")).scalar()
        conn.execute(
            text("UPDATE group_members SET position = 1001 - position WHERE group_id = :g"),
            {"g": group},
        )
    reports = {r.check: r for r in validate_migration(v1_url, migrated_db, sample_size=None)}
    assert {k: r.passed for k, r in reports.items() if not r.passed} == {
        "batch_order_matches": False
    }
    (mismatch,) = reports["batch_order_matches"].mismatches
    assert mismatch["batch_id"] == "batch-of-1000" and mismatch["field"] == "position"
    # v1 lists the batch by created_at: "question 0" (v1 id 1) first, now found last
    assert mismatch["v1_id"] == 1 and mismatch["v2"] == 48  # the latest, i = 47
    assert "position 1 of 1000" in mismatch["problem"]
    assert reports["batch_order_matches"].counts["members_compared"] == 1006


def test_full_comparison_streams_page_by_page(db, tmp_path):
    """More rows than one page of ids: pages whose digests agree are skipped, and the rows that
    differ in other pages are still named, in v1 id order."""
    n = ID_PAGE * 2 + 500
    path = create_v1_sqlite(tmp_path / "many.db", [
        {"prompt": f"p{i}", "response": f"r{i}", "provider": "openai", "tokens": i,
         "batch_id": f"b{i % 7}", "created_at": f"2025-03-01 00:00:00.{i:06d}"}
        for i in range(n)
    ])  # fmt: skip
    url = f"sqlite:///{path}"
    migrate_v1_to_v2(url, db)
    sql_v1(path, "UPDATE inference_runs SET tokens = -5 WHERE id IN (3, 10007)")
    sql_v1(path, "UPDATE inference_runs SET response = 'x' WHERE id = 5200")
    parity = sample_parity(url, db, sample_size=None)
    assert parity.counts["compared_rows"] == n
    assert [(m["v1_id"], m["field"]) for m in parity.mismatches] == [
        (3, "tokens"), (5200, "response"), (10007, "tokens"),
    ]  # fmt: skip
    assert parity.mismatches[0]["problem"] == "v1 row cannot be migrated any more"
