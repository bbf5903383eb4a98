"""Results of one run of a prompt set, as a researcher reads them: the per-target, answer and
call tables, their CSV exports per set and run, and the self-contained HTML study report
(`<reports>/<set>/<run>.html`). Free of Dagster: the `study_results` asset calls
`publish_run_results` and reports what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...db import DatabaseConnection
from .exports import write_run_exports
from .html import render_report, summary, write_html
from .run_data import RunData, answer_groups, load_run, run_exists
from .tables import ANSWER_TABLE, CALL_TABLE, TARGET_TABLE, answer_rows, call_rows, target_rows
from .variation import NO_RESULTS, VariationSection, variation_section

__all__ = [
    "NO_RESULTS",
    "RunData",
    "RunResults",
    "VariationSection",
    "answer_groups",
    "answer_rows",
    "call_rows",
    "load_run",
    "publish_run_results",
    "render_report",
    "report_path",
    "run_exists",
    "target_rows",
    "variation_section",
    "write_run_exports",
]


@dataclass
class RunResults:
    run: RunData
    summary: dict[str, Any]
    targets: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    calls: list[dict[str, Any]]
    variation: VariationSection
    report_path: Path
    export_dir: Path


def modal_answers(run: RunData) -> dict[tuple[str, str], str]:
    """(prompt, target) -> the cell's most frequent answer as given."""
    out = {}
    for prompt in run.prompts:
        for target in run.targets:
            answers = [g for g in run.groups(prompt.id, target.label) if g["kind"] == "answer"]
            if answers:
                out[prompt.id, target.label] = answers[0]["text"]
    return out


def report_path(reports_dir: Path, prompt_set: str, run_id: str) -> Path:
    return Path(reports_dir) / prompt_set / f"{run_id}.html"


def publish_run_results(
    db: DatabaseConnection,
    prompt_set: str,
    root_run_id: str | None,
    *,
    reports_dir: Path,
    exports_dir: Path,
) -> RunResults:
    """Read the run of `root_run_id` (else the set's newest run), write its study report (the
    report of a run is rewritten as the run completes) and its CSV exports (never
    overwritten), and return the tables. LookupError when the set has no run yet."""
    run = load_run(db, prompt_set, root_run_id)
    variation = variation_section(db, run.run_group_id, modal_answers(run))
    path = write_html(
        report_path(reports_dir, prompt_set, run.root_run_id), render_report(run, variation)
    )
    targets, answers, calls = target_rows(run, rounded=False), answer_rows(run), call_rows(run)
    folder = write_run_exports(
        Path(exports_dir),
        prompt_set,
        run.root_run_id,
        {
            "targets": (targets, TARGET_TABLE),
            "answers": (answers, ANSWER_TABLE),
            "calls": (calls, CALL_TABLE),
        },
    )
    return RunResults(
        run=run,
        summary=summary(run),
        targets=target_rows(run),
        answers=answers,
        calls=calls,
        variation=variation,
        report_path=path.resolve(),
        export_dir=folder,
    )
