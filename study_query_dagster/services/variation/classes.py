"""Equivalence classes of cells: a strategy's partition of the answers plus the `refused` class.

`classify(cells, strategy)` partitions the answers of the given cells *together* (one pooled
partition), so class k means the same answer in each of them: one cell alone for its own
classes, every target of a prompt for cross-target agreement, a cell's two runs for drift.
Refusals of all the cells form one extra class, after the strategy's classes.
`classify_each` classifies many pools at once (a judge's calls for different cells overlap).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from .cells import REFUSED, Cell
from .metrics import class_counts
from .strategies import EquivalenceStrategy


@dataclass(frozen=True)
class ClassifiedCell:
    """A cell's answers with their class (aligned with `cell.answers`), in a partition whose
    classes are 0..num_classes-1 and possibly shared with other cells."""

    cell: Cell
    labels: tuple[int, ...]
    num_classes: int
    refused_class: int | None  # the label of `refused`, None when no cell in the pool refused
    representatives: tuple[int | None, ...]  # per class, index into this cell's answers or None
    class_names: tuple[str, ...]  # per class, the pool medoid's text (or `refused`)

    def counts(self) -> list[int]:
        """Answers per class over every class of the partition (0 for classes of other cells)."""
        found = class_counts(self.labels)
        return [found.get(k, 0) for k in range(self.num_classes)]

    def present_counts(self) -> list[int]:
        """Answers per class, only the classes this cell has (what its entropy is taken over)."""
        return [c for c in self.counts() if c]

    def modal_labels(self) -> list[int]:
        """The most frequent classes of this cell (several on a tie), by label."""
        counts = self.counts()
        top = max(counts) if counts else 0
        return [k for k, count in enumerate(counts) if top and count == top]

    def modal_answer(self) -> str:
        """The text of the (first) modal class's representative, for people to read."""
        labels = self.modal_labels()
        return " | ".join(self.class_names[k] for k in labels) if labels else ""


async def classify(cells: Sequence[Cell], strategy: EquivalenceStrategy) -> list[ClassifiedCell]:
    """One pooled partition of the cells' answers (see the module docstring)."""
    texts: list[str] = []
    owners: list[tuple[int, int]] = []  # (cell, answer index) of each text
    for c, cell in enumerate(cells):
        for a, answer in enumerate(cell.answers):
            if not answer.refused:
                texts.append(answer.text)
                owners.append((c, a))
    # Pooled cells answer one prompt (a cell alone, a prompt's targets, a cell's two runs).
    question = next((cell.question for cell in cells if cell.question), None)
    partition = await strategy.partition(texts, question) if texts else None
    answered = partition.num_classes if partition else 0
    refused_class = answered if any(cell.refusals for cell in cells) else None
    num_classes = answered + (1 if refused_class is not None else 0)

    labels = [[refused_class] * cell.n for cell in cells]
    for position, (c, a) in enumerate(owners):
        labels[c][a] = partition.labels[position]
    medoid_owner = (
        {k: owners[i] for k, i in enumerate(partition.representatives)} if partition else {}
    )
    names = [cells[c].answers[a].text for c, a in medoid_owner.values()]
    names += [REFUSED] if refused_class is not None else []
    out = []
    for c, cell in enumerate(cells):
        representatives: list[int | None] = [None] * num_classes
        for k in range(num_classes):
            if k == refused_class:
                refused = [a for a, answer in enumerate(cell.answers) if answer.refused]
                representatives[k] = refused[0] if refused else None
            elif medoid_owner[k][0] == c:
                representatives[k] = medoid_owner[k][1]
            else:  # the pool's medoid is another cell's answer: this cell's first member
                representatives[k] = next((a for a, k2 in enumerate(labels[c]) if k2 == k), None)
        out.append(
            ClassifiedCell(
                cell=cell,
                labels=tuple(labels[c]),
                num_classes=num_classes,
                refused_class=refused_class,
                representatives=tuple(representatives),
                class_names=tuple(names),
            )
        )
    return out


# Pools classified at once by `classify_each`: a strategy that calls a model (the judge) has
# this many cells' conversations in flight, within the provider's own concurrency limit.
CONCURRENT_POOLS = 16


async def classify_each(
    pools: Sequence[Sequence[Cell]], strategy: EquivalenceStrategy
) -> list[list[ClassifiedCell]]:
    """`classify` of each pool, concurrently; results in the order of `pools`."""
    gate = asyncio.Semaphore(CONCURRENT_POOLS)

    async def one(pool: Sequence[Cell]) -> list[ClassifiedCell]:
        async with gate:
            return await classify(pool, strategy)

    return list(await asyncio.gather(*(one(pool) for pool in pools)))
