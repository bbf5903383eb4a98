"""`VariationService`: measures how a run's answers vary, and stores what it measured.

Five computations, one per asset: `equivalence_classes` (a strategy's classes of each cell,
stored as `semantic_cluster` groups), `dispersion` (per-cell metrics over those stored
classes), `agreement` (per prompt and pair of targets, over classes pooled across targets),
`drift` (per cell against the baseline run, over classes pooled across the two runs) and
`calibration` (correctness against reference answers, and how well each uncertainty score
predicts it; calibrate.py). Every value goes to `variation_results` with n, strategy, settings
and method version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...db import DatabaseConnection, SemanticClusterRepository, VariationResultRepository
from ..prompt_sets.variation import VariationConfig
from . import calibrate
from . import measures as m
from .cells import Cell
from .classes import ClassifiedCell, classify_each
from .correctness import Grader
from .embedder import Embedder
from .judge import Judge
from .reports import (
    AgreementReport,
    CalibrationReport,
    ClassesReport,
    DispersionReport,
    DriftReport,
    wide,
)
from .scope import RunScope, find_baseline, load_cells, run_scope
from .stored import classified_from_stored, cluster_specs
from .strategies import EquivalenceStrategy, strategy_for_config


class VariationService:
    def __init__(
        self,
        db: DatabaseConnection,
        strategy: EquivalenceStrategy,
        embedder: Embedder | None = None,
        *,
        permutations: int = 999,
        seed: int = 0,
        judge: Judge | None = None,
    ):
        self.db = db
        self.strategy = strategy
        self.embedder = embedder
        self.permutations = permutations
        self.seed = seed
        self.judge = judge  # grades answers when correctness is `judge`

    @classmethod
    def for_config(
        cls,
        db: DatabaseConnection,
        config: VariationConfig,
        embedder: Embedder | None = None,
        judge: Judge | None = None,
    ) -> VariationService:
        strategy = strategy_for_config(config, embedder=embedder, judge=judge)
        return cls(
            db,
            strategy,
            embedder,
            permutations=config.permutations,
            seed=config.seed,
            judge=judge,
        )

    # --- shared -----------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        return self.strategy.settings()

    def _store(self, scope: RunScope, values: Sequence[m.MetricValue], **extra: Any) -> int:
        settings = {**self.settings, **extra} or None
        rows = [
            {
                "run_group_id": scope.run_group_id,
                "prompt_set": scope.prompt_set_name,
                "prompt_id": v.prompt_id,
                "target": v.target,
                "other": v.other,
                "metric": v.metric,
                "value": v.value,
                "n": v.n,
                "n_other": v.n_other,
                "strategy": self.strategy.name,
                "strategy_key": self.strategy.key,
                "settings_json": settings,
                "method_version": m.METHOD_VERSION,
            }
            for v in values
        ]
        with self.db.session_scope() as session:
            return VariationResultRepository(session).append(rows)

    async def _vectors(self, cell: Cell) -> np.ndarray | None:
        """Embeddings of the cell's non-empty answers (refusals have none), if an embedder is
        configured."""
        texts = [t for t in cell.texts if t.strip()]
        if self.embedder is None or not texts:
            return None
        return await self.embedder.embed(texts)

    async def _warm(self, cells: Sequence[Cell]) -> None:
        """Embed every answer of the run in one batch, so the per-cell look-ups that follow
        are cache hits instead of one embedding call per cell."""
        texts = list(dict.fromkeys(t for c in cells for t in c.texts if t.strip()))
        if self.embedder is not None and texts:
            await self.embedder.embed(texts)

    def _stored_classes(self, scope: RunScope, cells: list[Cell]) -> list[ClassifiedCell]:
        with self.db.session_scope() as session:
            clusters = SemanticClusterRepository(session).clusters_of_run(
                scope.run_group_id, self.strategy.key
            )
        return classified_from_stored(cells, clusters)

    # --- the four computations -------------------------------------------------------------

    async def equivalence_classes(self, scope: RunScope) -> ClassesReport:
        """Classify each cell of the run on its own and store the classes."""
        cells = load_cells(self.db, scope)
        if self.strategy.needs_embeddings:
            await self._warm(cells)
        specs, rows = {}, []
        for cell, (classified,) in zip(
            cells, await classify_each([[c] for c in cells], self.strategy), strict=True
        ):
            specs[cell.key] = cluster_specs(classified, self.strategy.name, self.settings)
            counts = classified.present_counts()
            rows.append(
                {
                    "prompt": cell.prompt_id,
                    "target": cell.target,
                    "n": cell.n,
                    "excluded": cell.excluded,
                    "refusals": cell.refusals,
                    "classes": len(counts),
                    "modal_answer": classified.modal_answer(),
                    "modal_share": round(max(counts) / cell.n, 4) if cell.n else None,
                }
            )
        with self.db.session_scope() as session:
            groups = SemanticClusterRepository(session).replace_run_clusters(
                scope.run_group_id, self.strategy.key, specs
            )
        return ClassesReport(self.strategy.name, self.settings, rows, groups, self.strategy.usage())

    async def dispersion(self, scope: RunScope) -> DispersionReport:
        """Per-cell metrics over the stored classes (IncompleteClasses if they are stale)."""
        cells = load_cells(self.db, scope)
        await self._warm(cells)
        values: list[m.MetricValue] = []
        for classified in self._stored_classes(scope, cells):
            values += m.cell_metrics(classified, await self._vectors(classified.cell))
        written = self._store(scope, values)
        rows = wide(values)
        for cell in cells:  # cells without any answer still show up, with what was excluded
            row = rows.setdefault(
                (cell.prompt_id, cell.target, None),
                {"prompt": cell.prompt_id, "target": cell.target, "n": 0},
            )
            row["excluded"] = cell.excluded
            row["classes"] = int(row.get(m.NUM_CLASSES, 0))
        return DispersionReport(
            self.strategy.name, list(rows.values()), written, self.embedder is not None
        )

    async def agreement(self, scope: RunScope) -> AgreementReport:
        """Per prompt, every pair of targets over one partition of all the targets' answers."""
        by_prompt: dict[str, list[Cell]] = {}
        for cell in load_cells(self.db, scope):
            by_prompt.setdefault(cell.prompt_id, []).append(cell)
        values: list[m.MetricValue] = []
        modal: dict[str, dict[str, str]] = {}
        pools = await classify_each(
            [[c for c in cells if c.n] for cells in by_prompt.values()], self.strategy
        )
        for prompt_id, pooled in zip(by_prompt, pools, strict=True):
            modal[prompt_id] = {c.cell.target: c.modal_answer() for c in pooled}
            for a, b in m.pairs(pooled):
                values += m.pair_metrics(a, b)
        written = self._store(scope, values)
        return AgreementReport(
            self.strategy.name, list(wide(values).values()), modal, written, self.strategy.usage()
        )

    async def drift(self, scope: RunScope) -> DriftReport:
        """Each cell against the same cell of the baseline run (see `find_baseline`)."""
        baseline_group = find_baseline(self.db, scope)
        if baseline_group is None or baseline_group.id == scope.run_group_id:
            return DriftReport(self.strategy.name, None)
        baseline = run_scope(baseline_group)
        before = {c.key: c for c in load_cells(self.db, baseline)}
        pairs = [
            (c, before[c.key])
            for c in load_cells(self.db, scope)
            if c.key in before and c.n and before[c.key].n
        ]
        centroids = self._centroids(pairs)
        report = DriftReport(self.strategy.name, baseline.name)
        values: list[m.MetricValue] = []
        pools = await classify_each([list(pair) for pair in pairs], self.strategy)
        for (run_cell, base_cell), (now, then) in zip(pairs, pools, strict=True):
            outcome = m.drift_metrics(
                now,
                then,
                baseline.name,
                permutations=self.permutations,
                seed=self.seed,
                centroids=centroids.get(run_cell.key),
            )
            values += outcome.values
            row = {
                "prompt": run_cell.prompt_id,
                "target": run_cell.target,
                "n": run_cell.n,
                "n_baseline": base_cell.n,
                **{v.metric: v.value for v in outcome.values},
                "testable": outcome.test.testable(m.DRIFT_ALPHA),
                "before": then.modal_answer(),
                "after": now.modal_answer(),
            }
            report.rows.append(row)
            report.shares[run_cell.key] = [
                (now.class_names[k], b / base_cell.n, a / run_cell.n)
                for k, (a, b) in enumerate(zip(now.counts(), then.counts(), strict=True))
            ]
        report.written = self._store(scope, values, permutations=self.permutations, seed=self.seed)
        report.history = self.drift_history(scope)
        report.usage = self.strategy.usage()
        return report

    async def calibration(self, scope: RunScope) -> CalibrationReport:
        """Correctness of each cell against its prompt's references, and how well each
        uncertainty score stored by `dispersion` predicts the wrong ones."""
        config = scope.config
        cells = load_cells(self.db, scope)
        classified = self._stored_classes(scope, cells)
        with self.db.session_scope() as session:
            rows = VariationResultRepository(session).latest(
                scope.run_group_id,
                self.strategy.key,
                calibrate.SCORE_METRICS,
                method_version=m.METHOD_VERSION,
            )
        stored: dict[tuple[str, str], dict[str, float]] = {}
        for row in rows:
            if row.other is None:
                stored.setdefault((row.prompt_id, row.target), {})[row.metric] = row.value
        referenced = [c for c in cells if c.n and scope.references(c.prompt_id)]
        if referenced and not stored:
            raise LookupError(
                f"run {scope.name!r} has no stored dispersion for strategy {self.strategy.key}:"
                " materialize sample_dispersion for this run first"
            )
        grader = Grader(config.correctness, self.judge)
        graded = await calibrate.grade(classified, scope, grader, stored)
        outcome = calibrate.calibrate(graded, config.coverages)
        written = self._store(scope, outcome.values, correctness=config.correctness)
        return CalibrationReport(
            config.correctness,
            outcome,
            graded,
            written,
            prompts_with_reference=sum(1 for p in scope.prompt_set.prompts if p.reference),
            usage=self.judge.usage() if hasattr(self.judge, "usage") else {},
        )

    def _centroids(self, pairs: list[tuple[Cell, Cell]]) -> dict:
        """Per cell key, (mean embedding now, mean embedding at baseline) when both runs'
        answers have stored vectors of this embedder."""
        if self.embedder is None or not pairs:
            return {}
        hashes = {}
        for run_cell, base_cell in pairs:
            for when, cell in (("now", run_cell), ("then", base_cell)):
                texts = [t for t in cell.texts if t.strip()]
                hashes[(cell.key, when)] = [h for h in self.embedder.request_hashes(texts) if h]
        with self.db.session_scope() as session:
            means = VariationResultRepository(session).answer_centroids(hashes)
        return {
            run_cell.key: (means[(run_cell.key, "now")], means[(run_cell.key, "then")])
            for run_cell, _ in pairs
            if (run_cell.key, "now") in means and (run_cell.key, "then") in means
        }

    def drift_history(self, scope: RunScope) -> list[tuple[Any, float]]:
        """Mean drift JSD of each run of the prompt set, oldest first."""
        with self.db.session_scope() as session:
            points = VariationResultRepository(session).history(
                scope.prompt_set_name, m.DRIFT_JSD, self.strategy.key, m.METHOD_VERSION
            )
        runs: dict[int, tuple[Any, list[float]]] = {}
        for point in points:
            runs.setdefault(point.run_group_id, (point.run_created_at, []))[1].append(point.value)
        return [(at, float(np.mean(values))) for at, values in runs.values()]
