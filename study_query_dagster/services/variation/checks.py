"""The variation assets' checks, as functions of what the database holds for a run: the stored
classes and the newest `variation_results` rows of its strategy. Each returns a `CheckOutcome`
(passed, a sentence, the rows to list) for the Dagster check to report."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...db import (
    DatabaseConnection,
    GroupRepository,
    SemanticClusterRepository,
    StoredCluster,
    VariationResult,
    VariationResultRepository,
)
from ..formatting import count
from . import measures as m
from .calibrate import CORRECT
from .drift import min_attainable_p
from .metrics import TOLERANCE
from .scope import RUN_GROUP, RunScope, load_cells
from .stored import class_problems


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    numbers: dict[str, float | int] = field(default_factory=dict)


def _cells(rows: Iterable[VariationResult]) -> dict[tuple[str, str, str | None], dict]:
    cells: dict[tuple[str, str, str | None], dict] = {}
    for row in rows:
        cell = cells.setdefault((row.prompt_id, row.target, row.other), {})
        cell[row.metric] = row
    return cells


def modal_answers(clusters: Sequence[StoredCluster]) -> dict[tuple[str, str], str]:
    """Per cell, the answer of its largest stored class (" | " between tied classes)."""
    by_cell: dict[tuple[str, str], list[StoredCluster]] = {}
    for cluster in clusters:
        key = (cluster.metadata.get("prompt_id"), cluster.metadata.get("target"))
        by_cell.setdefault(key, []).append(cluster)
    out = {}
    for key, group in by_cell.items():
        top = max(len(c.call_ids) for c in group)
        tied = sorted(
            (c for c in group if len(c.call_ids) == top), key=lambda c: c.metadata["label"]
        )
        out[key] = " | ".join(str(c.metadata.get("answer", "")) for c in tied)
    return out


class VariationChecks:
    def __init__(self, db: DatabaseConnection, scope: RunScope, strategy_key: str):
        self.db = db
        self.scope = scope
        self.strategy_key = strategy_key

    def _latest(self, metrics: Sequence[str]) -> list[VariationResult]:
        with self.db.session_scope() as session:
            return VariationResultRepository(session).latest(
                self.scope.run_group_id,
                self.strategy_key,
                metrics,
                method_version=m.METHOD_VERSION,
            )

    def _clusters(self, run_group_id: int) -> list[StoredCluster]:
        with self.db.session_scope() as session:
            return SemanticClusterRepository(session).clusters_of_run(
                run_group_id, self.strategy_key
            )

    def every_answer_in_one_class(self) -> CheckOutcome:
        cells = load_cells(self.db, self.scope)
        problems = class_problems(cells, self._clusters(self.scope.run_group_id))
        answers = sum(c.n for c in cells)
        return CheckOutcome(
            passed=not problems,
            description=f"{answers - len({p.call_id for p in problems})} of {answers} answers "
            f"in exactly one class ({len(cells)} cells, strategy {self.strategy_key})",
            rows=[vars(p) for p in problems],
            numbers={"answers": answers, "problems": len(problems)},
        )

    def dispersion_in_bounds(self) -> CheckOutcome:
        """0 <= SE (discrete or likelihood-based) <= ln n, 1 <= Vendi <= n, 1 <= K <= n."""
        violations = []
        measured = (m.SEMANTIC_ENTROPY, m.LIKELIHOOD_SEMANTIC_ENTROPY, m.VENDI, m.NUM_CLASSES)
        for (prompt, target, _), cell in _cells(self._latest(measured)).items():
            bounds = {
                m.SEMANTIC_ENTROPY: lambda n: (0.0, math.log(n)),
                m.LIKELIHOOD_SEMANTIC_ENTROPY: lambda n: (0.0, math.log(n)),
                m.VENDI: lambda n: (1.0, float(n)),
                m.NUM_CLASSES: lambda n: (1.0, float(n)),
            }
            for metric, row in cell.items():
                low, high = bounds[metric](row.n)
                if not low - TOLERANCE <= row.value <= high + TOLERANCE:
                    violations.append(
                        {
                            "prompt": prompt,
                            "target": target,
                            "metric": metric,
                            "value": row.value,
                            "n": row.n,
                            "bounds": f"[{low:.4g}, {high:.4g}]",
                        }
                    )
        return CheckOutcome(
            passed=not violations,
            description=f"{count(len(violations), 'value')} outside their bounds"
            if violations
            else "every value within its bounds",
            rows=violations,
        )

    def deterministic_targets_stable(self) -> CheckOutcome:
        deterministic = set(self.scope.deterministic_targets)
        modal = modal_answers(self._clusters(self.scope.run_group_id))
        unstable = [
            {
                "prompt": p,
                "target": t,
                "classes": int(cell[m.NUM_CLASSES].value),
                "n": cell[m.SEMANTIC_ENTROPY].n,
                "semantic_entropy": round(cell[m.SEMANTIC_ENTROPY].value, 4),
                "modal_answer": modal.get((p, t), ""),
            }
            for (p, t, _), cell in _cells(self._latest((m.SEMANTIC_ENTROPY, m.NUM_CLASSES))).items()
            if t in deterministic and cell[m.SEMANTIC_ENTROPY].value > TOLERANCE
        ]
        if not deterministic:
            text = "no target is at temperature 0 or has a fixed seed"
        elif unstable:
            text = (
                f"{count(len(unstable), 'cell')} of deterministic targets "
                f"({', '.join(sorted({r['target'] for r in unstable}))}) gave varying answers"
            )
        else:
            text = f"deterministic targets ({', '.join(sorted(deterministic))}) answered the same"
        return CheckOutcome(
            passed=not unstable,
            description=text,
            rows=unstable,
            numbers={"unstable_cells": len(unstable)},
        )

    def enough_samples_for_entropy(self) -> CheckOutcome:
        small = [
            {"prompt": p, "target": t, "n": cell[m.SEMANTIC_ENTROPY].n}
            for (p, t, _), cell in _cells(self._latest((m.SEMANTIC_ENTROPY,))).items()
            if cell[m.SEMANTIC_ENTROPY].n < m.MIN_SAMPLES_FOR_ENTROPY
        ]
        return CheckOutcome(
            passed=not small,
            description=f"{count(len(small), 'cell')} with fewer than {m.MIN_SAMPLES_FOR_ENTROPY} "
            "answers: their semantic entropy is biased low"
            if small
            else f"every cell has at least {m.MIN_SAMPLES_FOR_ENTROPY} answers",
            rows=small,
        )

    def targets_agree_on_modal_answer(self) -> CheckOutcome:
        modal = modal_answers(self._clusters(self.scope.run_group_id))
        disagree: dict[str, dict[str, Any]] = {}
        for (prompt, target, other), cell in _cells(self._latest((m.MODAL_AGREEMENT,))).items():
            if cell[m.MODAL_AGREEMENT].value == 0.0:
                row = disagree.setdefault(prompt, {"prompt": prompt})
                for label in (target, other):
                    row[label] = modal.get((prompt, label), "")
        rows = [disagree[p] for p in self.scope.prompt_ids if p in disagree]
        return CheckOutcome(
            passed=not rows,
            description=f"targets disagree on the modal answer to {count(len(rows), 'prompt')}"
            if rows
            else "on every prompt, the targets share a modal answer",
            rows=rows,
        )

    def no_significant_drift(self) -> CheckOutcome:
        latest = self._latest(m.DRIFT_METRICS)
        if not latest:
            return CheckOutcome(True, "no baseline run to compare with (or no common cells)")
        baseline_name = latest[0].other
        permutations = int((latest[0].settings_json or {}).get("permutations") or 999)
        modal_now = modal_answers(self._clusters(self.scope.run_group_id))
        with self.db.session_scope() as session:
            baseline = GroupRepository(session).find_group(RUN_GROUP, baseline_name)
        modal_then = modal_answers(self._clusters(baseline.id)) if baseline else {}
        drifted, untestable = [], []
        for (p, t, _), cell in _cells(latest).items():
            jsd_row, p_row = cell[m.DRIFT_JSD], cell[m.DRIFT_P_VALUE]
            if min_attainable_p(jsd_row.n, jsd_row.n_other, permutations) >= m.DRIFT_ALPHA:
                untestable.append(f"{p}/{t} (n = {jsd_row.n} and {jsd_row.n_other})")
            elif (
                cell[m.MODAL_CHANGED].value == 1.0
                and jsd_row.value >= m.DRIFT_MIN_JSD
                and p_row.value < m.DRIFT_ALPHA
            ):
                drifted.append(
                    {
                        "prompt": p,
                        "target": t,
                        "jsd": round(jsd_row.value, 4),
                        "p_value": p_row.value,
                        "before": modal_then.get((p, t), "?"),
                        "after": modal_now.get((p, t), "?"),
                    }
                )
        text = (
            f"{count(len(drifted), 'cell')} drifted from {baseline_name} (modal answer changed, "
            f"JSD >= {m.DRIFT_MIN_JSD}, p < {m.DRIFT_ALPHA})"
            if drifted
            else f"no significant drift from {baseline_name}"
        )
        if untestable:
            text += (
                f"; {count(len(untestable), 'cell')} too small to test at p < {m.DRIFT_ALPHA} "
                f"(about 10 answers per run are needed): {', '.join(untestable[:10])}"
            )
        return CheckOutcome(
            passed=not drifted,
            description=text,
            rows=drifted,
            numbers={"drifted_cells": len(drifted), "untestable_cells": len(untestable)},
        )

    def calibration_has_both_classes(self) -> CheckOutcome:
        """AUROC needs right and wrong cells: per target, are there both?"""
        counts: dict[str, list[int]] = {}  # target -> [right, wrong]
        for row in self._latest((CORRECT,)):
            counts.setdefault(row.target, [0, 0])[0 if row.value == 1.0 else 1] += 1
        if not counts:
            return CheckOutcome(True, "no prompt has reference answers: nothing to calibrate")
        one_class = [
            {
                "target": target,
                "cells": right + wrong,
                "right": right,
                "wrong": wrong,
                "why": "all right" if not wrong else "all wrong",
            }
            for target, (right, wrong) in counts.items()
            if not right or not wrong
        ]
        if one_class:
            text = (
                f"AUROC is undefined for {len(one_class)} of {len(counts)} targets: their cells"
                f" are all right or all wrong ({', '.join(r['target'] for r in one_class)})"
            )
        else:
            text = f"every target ({len(counts)}) has right and wrong cells"
        return CheckOutcome(
            passed=not one_class,
            description=text,
            rows=one_class,
            numbers={"targets": len(counts), "one_class_targets": len(one_class)},
        )
