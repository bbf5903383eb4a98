"""Equivalence classes as stored (`semantic_cluster` groups) <-> classified cells.

`cluster_specs` turns a classified cell into the groups to store; `classified_from_stored`
rebuilds classified cells from them, and `class_problems` says where the stored classes and a
run's answers disagree (an answer in no class or in two, a class member that is not an answer
of its cell): what the `every_answer_in_one_class` check reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...db import ClusterSpec, StoredCluster
from .cells import REFUSED, Cell
from .classes import ClassifiedCell

# Representative texts kept in a class group's metadata, enough to recognise the answer.
MAX_NAME_CHARS = 500


def cluster_specs(classified: ClassifiedCell, strategy: str, settings: dict) -> list[ClusterSpec]:
    cell = classified.cell
    specs = []
    for label in range(classified.num_classes):
        members = [
            a.call_id for a, k in zip(cell.answers, classified.labels, strict=True) if k == label
        ]
        if not members:
            continue
        representative = classified.representatives[label]
        assert representative is not None  # a class with members has one in this cell
        refused = label == classified.refused_class
        text = REFUSED if refused else cell.answers[representative].text
        specs.append(
            ClusterSpec(
                label=label,
                call_ids=tuple(members),
                representative=cell.answers[representative].call_id,
                metadata={
                    "prompt_id": cell.prompt_id,
                    "target": cell.target,
                    "label": label,
                    "size": len(members),
                    "n": cell.n,
                    "refused": refused,
                    "answer": text[:MAX_NAME_CHARS],
                    "strategy": strategy,
                    "settings": settings,
                },
            )
        )
    return specs


@dataclass(frozen=True)
class ClassProblem:
    prompt_id: str
    target: str
    call_id: int
    problem: str  # "in no class" | "in N classes" | "not an answer of this cell"


def class_problems(cells: Sequence[Cell], clusters: Sequence[StoredCluster]) -> list[ClassProblem]:
    by_cell: dict[tuple[str, str], list[StoredCluster]] = {}
    for cluster in clusters:
        key = (cluster.metadata.get("prompt_id"), cluster.metadata.get("target"))
        by_cell.setdefault(key, []).append(cluster)
    problems = []
    for cell in cells:
        answers = {a.call_id for a in cell.answers}
        seen: dict[int, int] = {}
        for cluster in by_cell.get(cell.key, []):
            for call_id in cluster.call_ids:
                seen[call_id] = seen.get(call_id, 0) + 1
        for call_id in sorted(answers):
            count = seen.get(call_id, 0)
            if count != 1:
                where = "in no class" if count == 0 else f"in {count} classes"
                problems.append(ClassProblem(cell.prompt_id, cell.target, call_id, where))
        for call_id in sorted(set(seen) - answers):
            problems.append(
                ClassProblem(cell.prompt_id, cell.target, call_id, "not an answer of this cell")
            )
    return problems


class IncompleteClasses(LookupError):
    """The stored classes do not cover the run's answers (answers came in since)."""


def classified_from_stored(
    cells: Sequence[Cell], clusters: Sequence[StoredCluster]
) -> list[ClassifiedCell]:
    problems = class_problems(cells, clusters)
    if problems:
        first = problems[0]
        raise IncompleteClasses(
            f"{len(problems)} answers are not in exactly one stored class (e.g. call "
            f"{first.call_id} of {first.prompt_id}/{first.target}: {first.problem}); "
            "materialize answer_equivalence_classes for this run again"
        )
    by_cell: dict[tuple[str, str], list[StoredCluster]] = {}
    for cluster in clusters:
        key = (cluster.metadata["prompt_id"], cluster.metadata["target"])
        by_cell.setdefault(key, []).append(cluster)
    out = []
    for cell in cells:
        stored = sorted(by_cell.get(cell.key, []), key=lambda c: c.metadata["label"])
        # Labels renumbered 0..K-1 in stored order (a cell stores only its own classes).
        label_of = {}
        for label, cluster in enumerate(stored):
            for call_id in cluster.call_ids:
                label_of[call_id] = label
        index_of = {a.call_id: i for i, a in enumerate(cell.answers)}
        refused = [i for i, c in enumerate(stored) if c.metadata.get("refused")]
        out.append(
            ClassifiedCell(
                cell=cell,
                labels=tuple(label_of[a.call_id] for a in cell.answers),
                num_classes=len(stored),
                refused_class=refused[0] if refused else None,
                representatives=tuple(index_of.get(c.representative) for c in stored),
                class_names=tuple(c.metadata.get("answer", "") for c in stored),
            )
        )
    return out
