"""v1 fidelity: the token split (and cost analytics on migrated calls), NaN/Infinity and NUL in
v1 data, the quarantine for rows that cannot be migrated, and copies of one v1 file that
diverged. Targets: SQLite and PostgreSQL (the `db` fixture); sources built by plain SQL."""

from __future__ import annotations

import gc
import math
import shutil

import pytest
from sqlalchemy import func, select

from study_query_dagster.db import (
    DatabaseConnection,
    MigrationLedger,
    MigrationQuarantine,
    RawCall,
    RawCallRepository,
)
from study_query_dagster.db.migration_ledger import MigrationLedgerRepository
from study_query_dagster.db.migration_writer import SQLITE_BULK_PRAGMAS
from study_query_dagster.services.migration import (
    migrate_v1_to_v2,
    no_rows_quarantined,
    restore_nonfinite,
    validate_migration,
)
from study_query_dagster.services.pricing import PriceTable
from study_query_dagster.services.study import StudyService
from tests.support.legacy import add_v1_sqlite_rows, create_v1_sqlite, sql_v1

from .conftest import V1_ROWS
from .test_migration import count, migrated

PRICES = PriceTable.from_json(
    {"prices": {"openai": {"gpt-4o-mini": {"input": 0.15, "output": 0.60}}}}
)


def passed(reports) -> dict[str, bool]:
    return {r.check: r.passed for r in reports}


# --- the token split ---------------------------------------------------------------------------


def split_rows() -> list[dict]:
    """The original tool's metadata (model, prompt/completion tokens), plus odd values."""
    rows = [
        {
            "prompt": f"q{i}",
            "response": f"a{i}",
            "provider": "openai",
            "tokens": 10 * i + 5,
            "metadata": {
                "model": "gpt-4o-mini",
                "finish_reason": "stop",
                "prompt_tokens": 10 * i,
                "completion_tokens": 5,
            },
            "created_at": f"2025-01-0{i + 1} 00:00:00",
        }
        for i in range(4)
    ]
    rows += [
        # azure deployments price like OpenAI's model of the same name
        {
            "prompt": "az",
            "response": "r",
            "provider": "azure",
            "tokens": 1500,
            "metadata": {
                "model": "gpt-4o-mini-2024-07-18",
                "deployment": "mini",
                "prompt_tokens": 1000,
                "completion_tokens": 500,
            },
        },
        # no split: only the total survives, the model cannot be priced completely
        {
            "prompt": "old",
            "response": "r",
            "provider": "openai",
            "tokens": 40,
            "metadata": {"model": "gpt-4o-mini"},
        },
        # values that are not counts stay in v1_metadata only
        {
            "prompt": "odd",
            "response": "r",
            "provider": "hyperbolic",
            "tokens": 9,
            "metadata": {"prompt_tokens": "7", "completion_tokens": -1, "model": ""},
        },
        {
            "prompt": "bool",
            "response": "r",
            "provider": "hyperbolic",
            "tokens": None,
            "metadata": {"prompt_tokens": True, "completion_tokens": 2.5},
        },
        {
            "prompt": "only split",
            "response": "r",
            "provider": "hyperbolic",
            "tokens": None,
            "metadata": {"prompt_tokens": 3, "completion_tokens": 4.0},
        },
    ]
    return rows


def test_token_split_and_model_are_kept(db, tmp_path):
    path = create_v1_sqlite(tmp_path / "split.db", split_rows())
    migrate_v1_to_v2(f"sqlite:///{path}", db)
    calls = migrated(db)
    assert calls[1].tokens_json == {"total_tokens": 5, "prompt_tokens": 0, "completion_tokens": 5}
    assert calls[4].tokens_json == {"total_tokens": 35, "prompt_tokens": 30, "completion_tokens": 5}
    assert calls[4].model == "gpt-4o-mini"
    assert calls[5].tokens_json == {
        "total_tokens": 1500,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
    }
    assert calls[5].model == "gpt-4o-mini-2024-07-18"
    assert calls[6].tokens_json == {"total_tokens": 40}
    assert (calls[7].tokens_json, calls[7].model) == ({"total_tokens": 9}, None)
    assert calls[8].tokens_json is None
    assert calls[9].tokens_json == {"prompt_tokens": 3, "completion_tokens": 4}
    # what v1 had stays in v1_metadata, untouched
    assert calls[7].metadata_json["v1_metadata"] == {
        "prompt_tokens": "7",
        "completion_tokens": -1,
        "model": "",
    }
    assert all(passed(validate_migration(f"sqlite:///{path}", db, sample_size=None)).values())


def test_cost_analytics_work_on_migrated_calls(db, tmp_path):
    path = create_v1_sqlite(tmp_path / "split.db", split_rows()[:5])
    migrate_v1_to_v2(f"sqlite:///{path}", db)
    frame = StudyService(db, price_table=PRICES).get_provider_comparison()
    rows = {(r.provider, r.model): r for r in frame.itertuples()}
    openai = rows[("openai", "gpt-4o-mini")]
    # prompt tokens 0+10+20+30 = 60, completion 4 x 5 = 20
    assert openai.prompt_tokens == 60 and openai.completion_tokens == 20
    assert openai.estimated_cost_usd == pytest.approx((60 * 0.15 + 20 * 0.60) / 1e6, rel=1e-12)
    assert openai.cost_status == "complete"
    azure = rows[("azure", "gpt-4o-mini-2024-07-18")]
    assert azure.estimated_cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6, rel=1e-12)
    # a v1 row without the split makes its model's cost partial, never silently complete
    add_v1_sqlite_rows(path, split_rows()[5:6])
    migrate_v1_to_v2(f"sqlite:///{path}", db)
    frame = StudyService(db, price_table=PRICES).get_provider_comparison()
    openai = next(r for r in frame.itertuples() if r.provider == "openai")
    assert openai.cost_status == "partial"
    assert openai.estimated_cost_usd == pytest.approx((60 * 0.15 + 20 * 0.60) / 1e6, rel=1e-12)


# --- NaN, Infinity and NUL ------------------------------------------------------------------


NONFINITE_METADATA = (
    '{"temperature": NaN, "scores": [1.5, Infinity, -Infinity], "nested": {"x": NaN},'
    ' "label": "NaN", "model": "m"}'
)


def test_nonfinite_numbers_and_nul_are_stored_json_safe_and_recorded(db, tmp_path):
    rows = [
        {"prompt": "p", "response": "r", "provider": "openai", "metadata": NONFINITE_METADATA},
        {
            "prompt": "nul \x00 here",
            "response": "\x00",
            "provider": "openai",
            "metadata": '{"k\\u0000": "v\\u0000", "n": 1}',
            "batch_id": "b",
        },
        {
            "prompt": "plain",
            "response": "r",
            "provider": "openai",
            "metadata": '{"t": 0.7}',
            "batch_id": "b",
        },
    ]
    path = create_v1_sqlite(tmp_path / "nan.db", rows)
    url = f"sqlite:///{path}"
    migrate_v1_to_v2(url, db)
    calls = migrated(db)
    meta = calls[1].metadata_json
    assert meta["v1_metadata"] == {
        "temperature": "NaN",
        "scores": [1.5, "Infinity", "-Infinity"],
        "nested": {"x": "NaN"},
        "label": "NaN",
        "model": "m",
    }
    # the real string "NaN" under "label" is not in the record: it was a string in v1 too
    assert meta["v1_encoding"] == {
        "nonfinite_as_string": [["temperature"], ["scores", 1], ["scores", 2], ["nested", "x"]]
    }
    restored = restore_nonfinite(meta["v1_metadata"], meta["v1_encoding"]["nonfinite_as_string"])
    assert math.isnan(restored["temperature"]) and math.isnan(restored["nested"]["x"])
    assert restored["scores"] == [1.5, math.inf, -math.inf] and restored["label"] == "NaN"
    nul = calls[2]
    assert nul.request_json == {"prompt": "nul \ufffd here"}
    assert nul.response_json == {"text": "\ufffd"}
    assert nul.metadata_json["v1_metadata"] == {"k\ufffd": "v\ufffd", "n": 1}
    assert nul.metadata_json["v1_encoding"] == {"nul_as_fffd": ["prompt", "response", "metadata"]}
    assert "v1_encoding" not in calls[3].metadata_json
    # every check works on them (row_counts_match used to fail with "malformed JSON")
    reports = validate_migration(url, db, sample_size=None)
    assert all(passed(reports).values()), [r.mismatches for r in reports if not r.passed]
    # and still sees a change: NaN -> a number in v1 is a metadata difference
    sql_v1(
        path,
        "UPDATE inference_runs SET metadata = ? WHERE id = 1",
        [NONFINITE_METADATA.replace("NaN,", "0.5,", 1)],
    )
    parity = validate_migration(url, db, sample_size=None, checks=["sample_parity"])[0]
    assert {(m["v1_id"], m["field"]) for m in parity.mismatches} == {
        (1, "metadata"),
        (1, "encoding"),
    }


# --- quarantine ------------------------------------------------------------------------------


def bad_rows() -> list[dict]:
    rows = [
        {
            "prompt": f"p{i}",
            "response": "r",
            "provider": "p",
            "batch_id": "b",
            "created_at": f"2025-02-01 00:00:{i:02d}",
        }
        for i in range(12)
    ]
    bad = {
        2: {"provider": ""},
        3: {"provider": "x" * 65},
        4: {"latency_ms": -1.0},
        5: {"created_at": "yesterday"},
        6: {"metadata": "{not json"},
        7: {"tokens": "many"},
    }
    for index, change in bad.items():
        rows[index] = {**rows[index], **change}
    return rows


def quarantine_of(db) -> dict[int, str]:
    with db.session_scope() as session:
        stmt = select(MigrationQuarantine.v1_id, MigrationQuarantine.field)
        return dict(session.execute(stmt).all())


def test_quarantine_skips_records_accounts_and_retries(db, tmp_path):
    path = create_v1_sqlite(tmp_path / "bad.db", bad_rows())
    url = f"sqlite:///{path}"
    with pytest.raises(ValueError, match="skip_invalid_rows"):
        migrate_v1_to_v2(url, db)
    assert count(db, RawCall) == 0

    result = migrate_v1_to_v2(url, db, skip_invalid_rows=True)
    assert (result.migrated, result.quarantined, result.in_quarantine) == (6, 6, 6)
    expected = {
        3: "provider",
        4: "provider",
        5: "latency_ms",
        6: "created_at",
        7: "metadata",
        8: "tokens",
    }
    assert quarantine_of(db) == expected
    assert [(q["v1_id"], q["field"]) for q in result.quarantine] == sorted(expected.items())
    reasons = {q["v1_id"]: q["reason"] for q in result.quarantine}
    assert reasons[3] == "is empty (got '')" and "longer than 64 characters" in reasons[4]
    assert "'yesterday'" in reasons[6] and "-1.0" in reasons[5] and "'many'" in reasons[8]

    reports = {r.check: r for r in validate_migration(url, db, sample_size=None)}
    assert {k: r.passed for k, r in reports.items()} == {
        "row_counts_match": True,
        "batch_sizes_match": True,
        "batch_order_matches": True,
        "timestamps_match": True,
        "sample_parity": True,
        "no_rows_quarantined": False,
    }
    assert reports["row_counts_match"].counts["quarantined_rows"] == 6
    assert reports["batch_sizes_match"].counts["quarantined_members"] == 6
    listed = reports["no_rows_quarantined"].mismatches
    assert [(m["v1_id"], m["field"], m["batch_id"]) for m in listed] == [
        (i, f, "b") for i, f in sorted(expected.items())
    ]
    assert "'yesterday'" in reports["no_rows_quarantined"].to_markdown()

    # two rows fixed in v1: a plain re-run (no skip) migrates them; the others stay quarantined
    sql_v1(path, "UPDATE inference_runs SET provider = 'p' WHERE id IN (3, 4)")
    again = migrate_v1_to_v2(url, db)
    assert (again.migrated, again.released, again.quarantined, again.in_quarantine) == (2, 2, 4, 4)
    assert set(quarantine_of(db)) == {5, 6, 7, 8}
    assert all(r.passed for r in validate_migration(url, db, sample_size=None)[:5])
    # a new bad row is not skipped without being asked to
    add_v1_sqlite_rows(path, [{"prompt": "new", "response": "r", "provider": ""}])
    with pytest.raises(ValueError, match=r"an invalid 'provider' \(v1 ids \[13\]\)"):
        migrate_v1_to_v2(url, db)
    assert no_rows_quarantined(url, db).counts["quarantined_rows"] == 4


# --- diverged copies ----------------------------------------------------------------------------


def grow(path, n: int, label: str) -> None:
    add_v1_sqlite_rows(
        path,
        [
            {
                "prompt": f"{label} {i}",
                "response": "r",
                "provider": "openai",
                "batch_id": f"{label}-batch",
            }
            for i in range(n)
        ],
    )


def test_diverged_copies_are_told_apart(db, v1_url, v1_path, tmp_path):
    first = migrate_v1_to_v2(v1_url, db)
    older = tmp_path / "older.db"
    shutil.copy(v1_path, older)  # a copy that stays behind: the same source
    copy = tmp_path / "copy.db"
    shutil.copy(v1_path, copy)
    grow(v1_path, 20, "original")
    grow(copy, 30, "copy")  # the same new ids, other rows

    again = migrate_v1_to_v2(v1_url, db)
    assert (again.source_id, again.migrated) == (first.source_id, 20)
    assert migrate_v1_to_v2(f"sqlite:///{older}", db).source_id == first.source_id
    other = migrate_v1_to_v2(f"sqlite:///{copy}", db)
    assert other.source_id != first.source_id
    assert other.migrated == V1_ROWS + 30  # complete on its own, shared rows included
    # each resolves to itself from now on, and each validates against its own ledger
    assert migrate_v1_to_v2(f"sqlite:///{copy}", db).source_id == other.source_id
    assert migrate_v1_to_v2(v1_url, db).source_id == first.source_id
    # the copy both diverged from is now a prefix of two sources: only an explicit id says which
    with pytest.raises(ValueError, match="matches several migrated sources"):
        migrate_v1_to_v2(f"sqlite:///{older}", db)
    for url in (v1_url, f"sqlite:///{copy}"):
        reports = validate_migration(url, db, sample_size=None)
        assert all(passed(reports).values()), [r.summary for r in reports]
    with db.session_scope() as session:
        per_source = dict(
            session.execute(
                select(MigrationLedger.source, func.count()).group_by(MigrationLedger.source)
            ).all()
        )
    assert per_source == {first.source_id: V1_ROWS + 20, other.source_id: V1_ROWS + 30}


# --- the bulk write path ---------------------------------------------------------------------


AWKWARD = [
    "tab\there",
    "new\nline",
    "carriage\rreturn",
    "back\\slash",
    "\\N",
    "\\",
    "",
    " ",
    "quote \" and ' and `",
    "emoji 🙂 and 漢字",
    "\\t literally",
    "line1\r\nline2",
    "ends with backslash\\",
    "\u2028 line separator",
    "a\x00nul",
]


def test_awkward_text_survives_the_bulk_write_exactly(db, tmp_path):
    """Every character COPY's text format or a multi-row INSERT could mangle comes back as it
    was (U+0000 as U+FFFD, as recorded)."""
    rows = [
        {
            "prompt": text,
            "response": text[::-1],
            "provider": "p",
            "batch_id": "awk",
            "metadata": {"k": text, text or "empty": [text]},
            "created_at": f"2025-06-01 00:00:{i:02d}",
        }
        for i, text in enumerate(AWKWARD)
    ]
    path = create_v1_sqlite(tmp_path / "awkward.db", rows)
    migrate_v1_to_v2(f"sqlite:///{path}", db)
    calls = migrated(db)
    for i, text in enumerate(AWKWARD, 1):
        stored = text.replace("\x00", "\ufffd")
        assert calls[i].request_json == {"prompt": stored}
        assert calls[i].response_json == {"text": stored[::-1]}
        assert calls[i].metadata_json["v1_metadata"] == {"k": stored, (stored or "empty"): [stored]}
    assert calls[len(AWKWARD)].metadata_json["v1_encoding"] == {
        "nul_as_fffd": ["prompt", "response", "metadata"]
    }
    reports = validate_migration(f"sqlite:///{path}", db, sample_size=None)
    assert all(passed(reports).values()), [r.mismatches for r in reports if not r.passed]


def test_other_writers_between_chunks_do_not_confuse_the_ledger(db, v1_url):
    """raw_calls ids are assigned in bulk (a block after the insert on SQLite, the sequence on
    PostgreSQL): calls captured by another connection between two chunks must not be taken for
    migrated ones."""
    other = DatabaseConnection(db.url)

    def capture_elsewhere(progress):
        with other.session_scope() as session:
            RawCallRepository(session).insert_raw_calls(
                [{"provider": "live", "status": "success", "request_json": {"prompt": "x"}}] * 3
            )

    result = migrate_v1_to_v2(v1_url, db, chunk_rows=300, on_chunk=capture_elsewhere)
    other.dispose()
    assert result.chunks >= 4
    assert count(db, RawCall) == V1_ROWS + 3 * result.chunks
    reports = validate_migration(v1_url, db, sample_size=None)
    assert all(passed(reports).values()), [r.mismatches for r in reports if not r.passed]


def test_the_copy_leaves_no_settings_behind(db, v1_url):
    """Bulk-load settings (SQLite page cache and checkpoint interval on the migration's
    connection; no cyclic GC during the copy) are put back afterwards."""
    enabled = gc.isenabled()
    seen = {}
    with MigrationLedgerRepository(db).writer("probe") as writer:
        if db.dialect == "sqlite":
            dbapi = writer.conn.connection.dbapi_connection
            seen = {n: dbapi.execute(f"PRAGMA {n}").fetchone()[0] for n in SQLITE_BULK_PRAGMAS}
    if db.dialect == "sqlite":
        assert seen == SQLITE_BULK_PRAGMAS
        after = {n: dbapi.execute(f"PRAGMA {n}").fetchone()[0] for n in SQLITE_BULK_PRAGMAS}
        assert after == {"cache_size": -2000, "wal_autocheckpoint": 1000}  # SQLite's defaults
    during = []
    migrate_v1_to_v2(v1_url, db, on_chunk=lambda r: during.append(gc.isenabled()))
    assert during and not any(during)
    assert gc.isenabled() == enabled
