"""`AnswerClusterService`: families of answers across a whole run (or the set's last few runs),
found in embedding space (clustering.py), stored as groups with their method, version and
parameters, optionally each summed up in one line by an LLM target (captured like any call).

What is clustered: every answer of the window's runs that is not a refusal and has words, each
once (a repeated answer is several points), embedded with the set's `embed:` model (the same
cache entries as `response_embeddings`).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...db import (
    AnswerClusterRepository,
    ClusterSpec,
    DatabaseConnection,
    VariationResultRepository,
)
from ..formatting import one_line
from ..inference import InferenceService
from ..prompt_sets.variation import ClusterConfig
from ..runs import RUN_GROUP
from . import clustering as cl
from .embedder import Embedder
from .scope import RunScope, load_cells, run_scope

SUMMARY_GROUP = "cluster_summary"
ALL = "*"
CLUSTERS_K = "clusters_k"
CLUSTERS_SILHOUETTE = "clusters_silhouette"
CLUSTERS_STABILITY = "clusters_stability_ari"
# Answers shown to the summariser per cluster (the ones nearest its centroid, distinct).
SUMMARY_ANSWERS = 10
MAX_ANSWER_CHARS = 500


@dataclass(frozen=True)
class Point:
    call_id: int
    text: str
    prompt_id: str
    target: str
    run: str  # the run group's name


@dataclass
class ClustersReport:
    key: str
    settings: dict[str, Any]
    skipped: str | None = None  # why nothing was clustered
    runs: list[str] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    clustering: cl.Clustering | None = None
    projection: np.ndarray | None = None  # per point, (x, y)
    rows: list[dict[str, Any]] = field(default_factory=list)  # per cluster
    group_id: int | None = None
    written: int = 0
    usage: dict[str, int] = field(default_factory=dict)


def summary_prompt(answers: Sequence[str]) -> str:
    listed = "\n".join(f"- {one_line(a, 300)}" for a in answers)
    return (
        "These answers were grouped together:\n"
        f"{listed}\n"
        "In one line of at most 15 words, say what they have in common."
    )


class ClusterSummarizer:
    """One line per cluster from a chat model, each call captured in the clustering's
    `cluster_summary` group and cached by request hash (a re-run costs nothing)."""

    def __init__(
        self, service: InferenceService, params: Mapping[str, Any], group_id: int | None = None
    ):
        self.service = service
        self.params = dict(params)
        self.group_id = group_id

    async def summarize(self, answers: Sequence[str]) -> str:
        result = await self.service.run_inference(
            messages=[{"role": "user", "content": summary_prompt(answers)}],
            cache=True,
            group_id=self.group_id,
            extra_metadata={"purpose": SUMMARY_GROUP},
            **self.params,
        )
        return one_line(result["response"], 200)

    def usage(self) -> dict[str, int]:
        return {"summary_provider_calls": self.service.provider_calls}


def clustering_key(config: ClusterConfig, embedder: Embedder) -> tuple[str, dict[str, Any]]:
    """(key, settings): what determines the clusters, and its short identity."""
    settings = {**config.settings(), **embedder.describe(), "version": cl.CLUSTERING_VERSION}
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return f"{config.method}-{hashlib.sha256(canonical.encode()).hexdigest()[:8]}", settings


class AnswerClusterService:
    def __init__(
        self,
        db: DatabaseConnection,
        embedder: Embedder,
        config: ClusterConfig,
        summarizer: ClusterSummarizer | None = None,
    ):
        self.db = db
        self.embedder = embedder
        self.config = config
        self.summarizer = summarizer
        self.key, self.settings = clustering_key(config, embedder)

    def points(self, scope: RunScope) -> tuple[list[str], list[Point]]:
        """(the window's run names, oldest first; every answer to cluster)."""
        with self.db.session_scope() as session:
            runs = AnswerClusterRepository(session).window_runs(
                RUN_GROUP, scope.prompt_set_name, scope.run_group_id, self.config.window
            )
        points = []
        for group in runs:
            for cell in load_cells(self.db, run_scope(group)):
                points += [
                    Point(a.call_id, a.text, cell.prompt_id, cell.target, group.name)
                    for a in cell.answers
                    if not a.refused and a.text.strip()
                ]
        return [g.name for g in runs], points

    def _fit(self, vectors: np.ndarray) -> cl.Clustering:
        c = self.config
        if c.method == "hdbscan":
            return cl.cluster_hdbscan(vectors, min_cluster_size=c.min_cluster_size)
        return cl.cluster_kmeans(
            vectors,
            k_min=c.k_min,
            k_max=c.k_max,
            k_rule=c.k_rule,
            restarts=c.restarts,
            seed=c.seed,
        )

    async def cluster(self, scope: RunScope) -> ClustersReport:
        report = ClustersReport(self.key, self.settings)
        report.runs, points = self.points(scope)
        if not points:
            report.skipped = "the window's runs have no answers to cluster"
            return report
        vectors = await self.embedder.embed([p.text for p in points])
        clustering = self._fit(vectors)
        specs, report.rows = await self._specs(points, vectors, clustering)
        metadata = {
            "prompt_set": scope.prompt_set_name,
            "run": scope.name,
            "key": self.key,
            "method": clustering.method,
            "version": cl.CLUSTERING_VERSION,
            "params": self.settings,
            "runs": report.runs,
            "answers": len(points),
            "summary_model": self.config.summary.describe() if self.config.summary else None,
            **clustering.summary(),
        }
        with self.db.session_scope() as session:
            report.group_id = AnswerClusterRepository(session).replace(
                scope.run_group_id, self.key, metadata, specs
            )
            report.written = VariationResultRepository(session).append(
                self._results(scope, clustering, len(points))
            )
        report.points, report.clustering = points, clustering
        report.projection = cl.project_2d(vectors)
        report.usage = self.summarizer.usage() if self.summarizer else {}
        return report

    async def _specs(
        self, points: list[Point], vectors: np.ndarray, clustering: cl.Clustering
    ) -> tuple[list[ClusterSpec], list[dict[str, Any]]]:
        unit = cl.unit_rows(vectors)
        specs, rows = [], []
        labels = sorted(set(clustering.labels.tolist()), key=lambda k: (k == cl.NOISE, k))
        for label in labels:
            members = np.flatnonzero(clustering.labels == label)
            noise = label == cl.NOISE
            centre = unit[members].mean(axis=0)
            nearest = members[np.argsort(np.linalg.norm(unit[members] - centre, axis=1))]
            representative = nearest[0] if noise else clustering.representatives[label]
            summary = None
            if self.summarizer is not None and not noise:
                shown = list(dict.fromkeys(points[i].text for i in nearest))[:SUMMARY_ANSWERS]
                summary = await self.summarizer.summarize(shown)
            targets = Counter(points[i].target for i in members)
            meta = {
                "label": int(label),
                "noise": noise,
                "size": len(members),
                "answer": points[representative].text[:MAX_ANSWER_CHARS],
                "summary": summary,
                "targets": dict(targets),
                "prompts": len({points[i].prompt_id for i in members}),
                "key": self.key,
                "method": clustering.method,
            }
            specs.append(
                ClusterSpec(
                    int(label),
                    tuple(points[i].call_id for i in members),
                    points[representative].call_id,
                    meta,
                )
            )
            rows.append(
                {
                    "cluster": "noise" if noise else int(label),
                    "size": len(members),
                    "targets": ", ".join(f"{t} {c}" for t, c in targets.most_common()),
                    "representative": one_line(points[representative].text, 80),
                    **({"summary": summary} if self.summarizer is not None else {}),
                }
            )
        return specs, rows

    def _results(self, scope: RunScope, clustering: cl.Clustering, n: int) -> list[dict]:
        values = {
            CLUSTERS_K: clustering.k,
            CLUSTERS_SILHOUETTE: clustering.silhouette,
            CLUSTERS_STABILITY: clustering.stability_ari,
        }
        return [
            {
                "run_group_id": scope.run_group_id,
                "prompt_set": scope.prompt_set_name,
                "prompt_id": ALL,
                "target": ALL,
                "metric": metric,
                "value": value,
                "n": n,
                "strategy": clustering.method,
                "strategy_key": self.key,
                "settings_json": self.settings,
                "method_version": cl.CLUSTERING_VERSION,
            }
            for metric, value in values.items()
            if value is not None
        ]
