"""The report's answer-variation section: semantic entropy per cell, cross-target disagreement
and drift findings, read from the `variation_results` table through its repository once the
variation assets have computed them for the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...db import DatabaseConnection

NO_RESULTS = "no variation results yet"


@dataclass
class VariationSection:
    available: bool
    note: str
    per_cell: list[dict[str, Any]] = field(default_factory=list)  # prompt, target, metrics
    findings: list[str] = field(default_factory=list)


def variation_section(db: DatabaseConnection, run_group_id: int) -> VariationSection:
    """What the variation assets found for this run. Until this project stores variation
    results, every report says so instead of showing an empty table."""
    return VariationSection(available=False, note=NO_RESULTS)
