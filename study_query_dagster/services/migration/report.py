"""`ValidationReport`: one backfill check's outcome, readable in the Dagster UI."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from ...log import get_logger

logger = get_logger(__name__)

CHECKS = (
    "row_counts_match",
    "batch_sizes_match",
    "batch_order_matches",
    "timestamps_match",
    "sample_parity",
    "no_rows_quarantined",
)
MISMATCH_KEYS = ("v1_id", "batch_id", "field", "v1", "v2", "problem")
MISMATCH_LIMIT = 50


@dataclass
class ValidationReport:
    """One check's outcome. `mismatches` holds at most `limit` entries, each a dict with
    v1_id, batch_id, field, v1, v2 and problem (values shortened for display);
    `mismatch_count` counts them all."""

    check: str
    passed: bool
    source_id: str | None
    counts: dict[str, Any] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    mismatch_count: int = 0

    @property
    def summary(self) -> str:
        if self.passed:
            return f"{self.check}: passed"
        return f"{self.check}: {self.mismatch_count} mismatch(es)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self, limit: int = 20) -> str:
        lines = [f"**{self.summary}** (source `{self.source_id}`)", ""]
        lines += ["| count | value |", "| --- | --- |"]
        lines += [f"| {k} | {_cell(v)} |" for k, v in self.counts.items()]
        if self.mismatches:
            lines += [
                "",
                "| v1_id | batch_id | field | v1 | v2 | problem |",
                "| --- | --- | --- | --- | --- | --- |",
            ]
            for m in self.mismatches[:limit]:
                lines.append("| " + " | ".join(_cell(m.get(k)) for k in MISMATCH_KEYS) + " |")
            if self.mismatch_count > min(limit, len(self.mismatches)):
                lines.append(f"\n… {self.mismatch_count - min(limit, len(self.mismatches))} more")
        return "\n".join(lines)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def preview(value: Any, length: int = 80) -> Any:
    """A value shortened for a report cell (datetimes as ISO text)."""
    if isinstance(value, str | dict | list):
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        return text if len(text) <= length else text[: length - 1] + "…"
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class Mismatches:
    """Counts every mismatch, keeps the first `limit`."""

    def __init__(self, limit: int):
        self.limit, self.count, self.items = limit, 0, []

    def add(self, *, v1_id=None, batch_id=None, field=None, v1=None, v2=None, problem=""):
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(
                {
                    "v1_id": v1_id,
                    "batch_id": batch_id,
                    "field": field,
                    "v1": preview(v1),
                    "v2": preview(v2),
                    "problem": problem,
                }
            )

    def followed_by(self, other: Mismatches) -> Mismatches:
        """These mismatches, then `other`'s (still at most `limit` kept, all counted)."""
        out = Mismatches(self.limit)
        out.items = (self.items + other.items)[: self.limit]
        out.count = self.count + other.count
        return out


def make_report(check, source_id, counts, mismatches: Mismatches) -> ValidationReport:
    report = ValidationReport(
        check=check,
        passed=mismatches.count == 0,
        source_id=source_id,
        counts=counts,
        mismatches=mismatches.items,
        mismatch_count=mismatches.count,
    )
    log = logger.info if report.passed else logger.warning
    log("backfill check %s: %s %s", report.summary, source_id, counts)
    return report


def empty_report(check: str) -> ValidationReport:
    """The report for an empty v1 table: nothing to compare, passed."""
    return ValidationReport(check=check, passed=True, source_id=None, counts={"v1_rows": 0})
