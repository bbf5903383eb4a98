"""Per-set results and the study report of a run, on SQLite and PostgreSQL: the matrix cells,
identical answers grouped, per-target figures by label, failures with their errors, exports per
set and run that are never overwritten, and the variation section before variation exists."""

from __future__ import annotations

import csv
import re
import shutil
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import dagster as dg

from study_query_dagster.db import DatabaseConnection, GroupRepository, RawCallRepository
from study_query_dagster.services.reports import (
    NO_RESULTS,
    answer_groups,
    load_run,
    publish_run_results,
)
from tests.support.pipeline import make_resources, study_assets_and_checks
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


SHIPPED = Path(__file__).resolve().parents[2] / "prompt_sets"
WITH_VARIATION = dg.AssetSelection.assets(
    "prompt_set", "inference_run", "response_embeddings", "study_results"
) | dg.AssetSelection.groups("variation")


def materialize_shipped(name: str, db_url: str, tmp_path: Path, instance, file: str):
    prompt_dir = tmp_path / "sets"
    prompt_dir.mkdir(exist_ok=True)
    shutil.copy(SHIPPED / file, prompt_dir / file)
    resources = make_resources(db_url, prompt_dir)
    instance.add_dynamic_partitions("prompt_sets", [name])
    result = dg.materialize(
        study_assets_and_checks(), selection=WITH_VARIATION, partition_key=name,
        instance=instance, resources=resources, raise_on_error=False,
    )  # fmt: skip
    assert result.success
    [event] = [e for e in result.get_asset_materialization_events()
               if e.asset_key.path == ["study_results"]]  # fmt: skip
    return Path(event.materialization.metadata["report"].value), result


def variation_of(report: Path) -> tuple[dict, list[str]]:
    """The report's variation table {(prompt, target): row} and its findings."""
    section = report.read_text(encoding="utf-8").split('<section id="variation">')[1]
    parser = Table()
    parser.feed(section)
    header, *rows = parser.rows
    table = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in rows}
    findings = re.findall(r"<li>(.*?)</li>", section)
    return table, [unescape(f) for f in findings]


class Table(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def test_the_report_shows_the_variation_of_the_run(db_url, tmp_path):
    with dg.instance_for_test() as instance:
        report, _ = materialize_shipped(
            "variation_disagree", db_url, tmp_path, instance, "variation_disagree.yaml"
        )
    table, findings = variation_of(report)
    # known answers (prompt_sets/variation_disagree.yaml): SE of 8/2 and 6/4 splits, in nats
    a, b = table["capital", "model-a"], table["capital", "model-b"]
    assert (a["answers"], a["classes"], a["semantic entropy"]) == ("10", "2", "0.5")
    assert (b["classes"], b["semantic entropy"], b["modal share"]) == ("2", "0.673", "0.6")
    assert table["boiling", "model-a"]["semantic entropy"] == "0"
    assert table["boiling", "model-b"]["same answer every time"] == "yes"
    [disagree] = [f for f in findings if "differ in their most frequent answer" in f]
    assert disagree.startswith("capital: model-a and model-b")
    assert "JSD 0.125" in disagree  # 0.1245112, base 2
    assert "model-a: 'Canberra'" in disagree and "model-b: 'Sydney'" in disagree
    # the matrix has the scripted answers, grouped
    parser = Cells()
    parser.feed(report.read_text(encoding="utf-8"))
    assert parser.cells["capital", "model-a"] == [("answer", 8), ("answer", 2)]


def test_the_report_names_the_drift_since_the_previous_run(db_url, tmp_path):
    with dg.instance_for_test() as instance:
        first, _ = materialize_shipped(
            "variation_drift", db_url, tmp_path, instance, "variation_drift.yaml"
        )
        assert not [f for f in variation_of(first)[1] if "changed since" in f]  # no baseline
        second, _ = materialize_shipped(
            "variation_drift", db_url, tmp_path, instance, "variation_drift.yaml"
        )
    assert second != first  # a report per run
    _, findings = variation_of(second)
    [drift] = [f for f in findings if "changed since" in f]
    assert drift.startswith("capital / drifting: the most frequent answer changed since")
    assert "drift JSD 0.493" in drift  # 0.4934226: Canberra 10 -> Sydney 7 / Canberra 3
