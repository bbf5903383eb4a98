"""Per-set results and the study report of a run, on SQLite and PostgreSQL: the matrix cells,
identical answers grouped, per-target figures by label, failures with their errors, exports per
set and run that are never overwritten, and the variation section before variation exists."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

from study_query_dagster.db import DatabaseConnection, GroupRepository, RawCallRepository
from study_query_dagster.services.reports import (
    NO_RESULTS,
    answer_groups,
    load_run,
    publish_run_results,
)
from tests.support.report_run import EXPECTED, run_demo


def groups_of(run) -> dict[tuple[str, str], list[tuple[str, str | None, int]]]:
    out = {}
    for prompt in run.prompts:
        for target in run.targets:
            out[prompt.id, target.label] = [
                (g["kind"], g["text"] if g["kind"] == "answer" else None, g["count"])
                for g in answer_groups(run.cell(prompt.id, target.label))
            ]
    return out


def test_run_matrix_targets_and_failures(db_url, tmp_path, llm_server):
    result, _ = run_demo(db_url, tmp_path, llm_server)
    assert result.success
    db = DatabaseConnection(db_url)
    run = load_run(db, "report-demo", result.run_id)
    assert [t.label for t in run.targets] == ["cold", "warm"]
    assert groups_of(run) == EXPECTED
    # per target, by label: one model at two temperatures is two rows
    rows = {r["target"]: r for r in run.per_target}
    assert set(rows) == {"cold", "warm"}
    assert (rows["cold"]["params"], rows["warm"]["params"]) == ("temperature=0", "temperature=1")
    assert (rows["cold"]["calls"], rows["cold"]["success_rate"]) == (6, 1.0)
    assert (rows["warm"]["calls"], rows["warm"]["success_rate"]) == (6, 5 / 6)
    [(item, failed)] = run.failed_calls
    assert item.item.key.startswith("fr/warm/") and failed.error_type == "bad_request"
    db.dispose()


class Cells(HTMLParser):
    """The matrix as the page has it: {(prompt, target): [(kind, count), ...]}."""

    def __init__(self):
        super().__init__()
        self.prompt = self.target = None
        self.cells: dict = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-prompt" in a:
            self.prompt = a["data-prompt"]
        elif tag == "td" and a.get("class") == "cell":
            self.target = a["data-target"]
            self.cells[self.prompt, self.target] = []
        elif tag == "div" and "data-kind" in a:
            self.cells[self.prompt, self.target].append((a["data-kind"], int(a["data-count"])))


def test_report_and_exports_are_written_per_set_and_run(db_url, tmp_path, llm_server):
    result, _ = run_demo(db_url, tmp_path, llm_server)
    db = DatabaseConnection(db_url)
    reports, exports = tmp_path / "reports", tmp_path / "exports"
    published = publish_run_results(
        db, "report-demo", result.run_id, reports_dir=reports, exports_dir=exports
    )
    assert published.report_path == (reports / "report-demo" / f"{result.run_id}.html").resolve()
    html = published.report_path.read_text(encoding="utf-8")
    # self-contained: nothing to fetch, nothing to run
    assert not re.search(r"<script|<link|src=\"http|href=\"http|@import", html)
    parser = Cells()
    parser.feed(html)
    assert parser.cells == {
        key: [(kind, count) for kind, _, count in groups] for key, groups in EXPECTED.items()
    }
    assert "bad_request" in html and "HTTP 400" in html  # the failure with its error text
    assert NO_RESULTS in html  # the variation section says so instead of an empty table

    folder = published.export_dir
    assert folder == (exports / "report-demo" / result.run_id).resolve()
    with open(folder / "targets.csv") as handle:
        targets = list(csv.DictReader(handle))
    assert [t["target"] for t in targets] == ["cold", "warm"]
    with open(folder / "calls.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 12
    first = {p.name: p.read_bytes() for p in folder.iterdir()}

    # again with nothing new: the same folder, untouched
    again = publish_run_results(
        db, "report-demo", result.run_id, reports_dir=reports, exports_dir=exports
    )
    assert again.export_dir == folder

    # the run gains a call (as when re-executed from failure): a new folder, the old one kept
    with db.session_scope() as session:
        group = GroupRepository(session).find_group("run", f"report-demo/{result.run_id}")
        [call_id] = RawCallRepository(session).insert_raw_calls(
            [
                {
                    "provider": "openai",
                    "model": "gpt-4o-mini",
                    "status": "success",
                    "request_hash": run_hash(published.run, "fr/warm"),
                    "request_json": {"messages": [], "params": {"temperature": 1}},
                    "response_json": {"text": "Paris"},
                    "latency_ms": 1.0,
                    "metadata_json": {"prompt_set": "report-demo", "target": "warm"},
                }
            ]
        )
        GroupRepository(session).add_group_members(group.id, [call_id])
    resumed = publish_run_results(
        db, "report-demo", result.run_id, reports_dir=reports, exports_dir=exports
    )
    assert resumed.export_dir == Path(f"{folder}.2")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first
    assert [g["count"] for g in answer_groups(resumed.run.cell("fr", "warm"))] == [3]
    db.dispose()


def run_hash(run, prefix: str) -> str:
    """The request hash of the failed item under `prefix` (what a retry would send)."""
    from study_query_dagster.services.runs import item_request_hash

    [(item, _)] = [(i, c) for i, c in run.failed_calls if i.item.key.startswith(prefix)]
    return item_request_hash(item.item)
