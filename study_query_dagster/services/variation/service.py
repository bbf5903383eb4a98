"""`VariationService`: measures how a run's answers vary, and stores what it measured.

Four computations, one per asset: `equivalence_classes` (a strategy's classes of each cell,
stored as `semantic_cluster` groups), `dispersion` (per-cell metrics over those stored
classes), `agreement` (per prompt and pair of targets, over classes pooled across targets) and
`drift` (per cell against the baseline run, over classes pooled across the two runs). Every
value goes to `variation_results` with n, strategy, settings and method version.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...db import DatabaseConnection, SemanticClusterRepository, VariationResultRepository
from ..prompt_sets.variation import VariationConfig
from . import measures as m
from .cells import Cell
from .classes import ClassifiedCell, classify
from .embedder import Embedder
from .reports import AgreementReport, ClassesReport, DispersionReport, DriftReport, wide
from .scope import RunScope, find_baseline, load_cells, run_scope
from .stored import classified_from_stored, cluster_specs
from .strategies import EquivalenceStrategy, build_strategy


class VariationService:
    def __init__(
        self,
        db: DatabaseConnection,
        strategy: EquivalenceStrategy,
        embedder: Embedder | None = None,
        *,
        permutations: int = 999,
        seed: int = 0,
    ):
        self.db = db
        self.strategy = strategy
        self.embedder = embedder
        self.permutations = permutations
        self.seed = seed

    @classmethod
    def for_config(
        cls, db: DatabaseConnection, config: VariationConfig, embedder: Embedder | None = None
    ) -> VariationService:
        strategy = build_strategy(
            config.strategy, embedder=embedder, threshold=config.effective_threshold
        )
        return cls(db, strategy, embedder, permutations=config.permutations, seed=config.seed)

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
        for cell in cells:
            (classified,) = await classify([cell], self.strategy)
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
        return ClassesReport(self.strategy.name, self.settings, rows, groups)

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
        for prompt_id, cells in by_prompt.items():
            pooled = await classify([c for c in cells if c.n], self.strategy)
            modal[prompt_id] = {c.cell.target: c.modal_answer() for c in pooled}
            for a, b in m.pairs(pooled):
                values += m.pair_metrics(a, b)
        written = self._store(scope, values)
        return AgreementReport(self.strategy.name, list(wide(values).values()), modal, written)

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
        for run_cell, base_cell in pairs:
            now, then = await classify([run_cell, base_cell], self.strategy)
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
        return report

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
