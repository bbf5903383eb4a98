"""Which run the variation of a prompt set is measured on, its cells, and its drift baseline.

A run is a `run` group `<prompt set>/<root run id>` that keeps the prompt set it ran (see the
runs service); its cells come in the prompt set's order (prompt, then target).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import cached_property

from ...db import DatabaseConnection, Group, GroupRepository, RawCallRepository
from ..prompt_sets import PromptSet
from ..prompt_sets.variation import PREVIOUS, VariationConfig
from ..runs import RUN_GROUP, prompt_set_of_run
from .cells import Cell, cells_from_calls


@dataclass(frozen=True)
class RunScope:
    run_group_id: int
    name: str  # the run group's name, `<prompt set>/<root run id>`
    created_at: datetime
    prompt_set: PromptSet

    @property
    def prompt_set_name(self) -> str:
        return self.prompt_set.name

    @property
    def config(self) -> VariationConfig:
        return self.prompt_set.variation

    @property
    def prompt_ids(self) -> list[str]:
        return [p.id for p in self.prompt_set.prompts]

    @property
    def targets(self) -> list[str]:
        return self.prompt_set.target_labels

    @property
    def deterministic_targets(self) -> list[str]:
        """Targets expected to repeat themselves: temperature 0, or a seed every sample shares."""
        return [
            label
            for label, target in zip(self.targets, self.prompt_set.targets, strict=True)
            if target.params.temperature == 0 or _fixed_seed(self.prompt_set, target)
        ]

    @cached_property
    def _prompts(self) -> dict:
        return {p.id: p for p in self.prompt_set.prompts}

    def question(self, prompt_id: str) -> str:
        """What the prompt asks, as sent: its last user message ("" for an unknown prompt).
        A judge reads this; the earlier turns of a multi-turn prompt are not shown to it."""
        prompt = self._prompts.get(prompt_id)
        if prompt is None:
            return ""
        messages = self.prompt_set.prompt_messages(prompt)
        return next((str(m["content"]) for m in reversed(messages) if m["role"] == "user"), "")

    def references(self, prompt_id: str) -> list[str] | None:
        """The prompt's reference answers, None when it has none."""
        prompt = self._prompts.get(prompt_id)
        return list(prompt.reference) if prompt is not None and prompt.reference else None

    def order(self, cells: list[Cell]) -> list[Cell]:
        """Cells in prompt-set order (prompt, then target); cells the set no longer names last."""
        rank = {
            (p, t): i
            for i, (p, t) in enumerate((p, t) for p in self.prompt_ids for t in self.targets)
        }
        return sorted(cells, key=lambda c: rank.get(c.key, len(rank)))


def _fixed_seed(prompt_set: PromptSet, target) -> bool:
    if target.params.seed is None:
        return False
    # With `sample_seed: fixed` every sample sends the same seed; by default sample i sends
    # seed + i (distinct draws). A schema without the option sends one seed to all samples.
    return getattr(prompt_set, "sample_seed", "fixed") == "fixed"


def run_scope(group: Group) -> RunScope:
    return RunScope(group.id, group.name, group.created_at, prompt_set_of_run(group))


def load_cells(db: DatabaseConnection, scope: RunScope) -> list[Cell]:
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        calls = repo.calls_in_group(scope.run_group_id, modality="text")
        large = {
            c.id: repo.logprobs(c.id)
            for c in calls
            if c.status == "success" and (c.response_json or {}).get("logprobs_artifact")
        }
        cells = scope.order(cells_from_calls(calls, large))
    for cell in cells:
        cell.question = scope.question(cell.prompt_id)
    return cells


def find_baseline(db: DatabaseConnection, scope: RunScope) -> Group | None:
    """The run this run's drift is measured against: the set's previous run, or the run of
    the Dagster run id named in `variation.baseline` (an error if it does not exist)."""
    baseline = scope.config.baseline
    with db.session_scope() as session:
        repo = GroupRepository(session)
        if baseline == PREVIOUS:
            return repo.newest_group(
                RUN_GROUP, f"{scope.prompt_set_name}/", before_id=scope.run_group_id
            )
        group = repo.find_group(RUN_GROUP, f"{scope.prompt_set_name}/{baseline}")
    if group is None:
        raise LookupError(
            f"prompt set {scope.prompt_set_name!r}: variation.baseline names run {baseline!r}, "
            "which this database has no run of"
        )
    return group
