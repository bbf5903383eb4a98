"""One run of a prompt set as its results are read: the prompt set it ran, every call it
captured matched to its item (prompt × target × sample) by request hash, and per-target figures.

The matrix the report and the per-set tables show is built from here: each item's outcome is
its successful call if it has one, else its latest call, so a run re-executed from failure shows
what it finally got, while every failed attempt stays listed among the failures.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...db import CallRow, DatabaseConnection, GroupRepository, RunResultsRepository
from ..prompt_sets import PromptSet, WorkItem
from ..runs import RUN_GROUP, find_run_group, item_request_hash, prompt_set_of_run, run_group_name
from ..study import StudyService, params_text

# One captured call of the run as a reader of the results needs it (db.CallRow): id, status,
# answer, error type and message, latency, tokens, cost, attempts, created_at.
CallOutcome = CallRow


@dataclass(frozen=True)
class TargetInfo:
    label: str
    provider: str
    model: str
    params: dict[str, Any]

    @property
    def params_text(self) -> str:
        return params_text(self.params)


@dataclass(frozen=True)
class PromptInfo:
    id: str
    text: str  # the prompt as a reader sees it: text, rendered template or the last user turn
    turns: int  # messages in the conversation (1 for a plain prompt)


@dataclass
class ItemResult:
    item: WorkItem
    calls: list[CallOutcome] = field(default_factory=list)  # oldest first

    @property
    def final(self) -> CallOutcome | None:
        """The successful call when there is one, else the latest; None when never sent."""
        for call in self.calls:
            if call.status == "success":
                return call
        return self.calls[-1] if self.calls else None


@dataclass
class RunData:
    prompt_set_name: str
    run_group_id: int
    run_name: str  # the run group: "<set>/<root run id>"
    root_run_id: str
    started_at: datetime
    content_hash: str | None
    prompt_set: PromptSet
    prompts: list[PromptInfo]
    targets: list[TargetInfo]
    items: list[ItemResult]  # in expansion order: prompt, then target, then sample
    per_target: list[dict[str, Any]]  # StudyService.get_target_comparison rows
    unmatched_calls: int  # calls in the group that match no item of this prompt set
    _cells: dict[tuple[str, str], list[ItemResult]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for result in self.items:
            key = (result.item.prompt_id, result.item.target_label)
            self._cells.setdefault(key, []).append(result)

    def cell(self, prompt_id: str, target: str) -> list[ItemResult]:
        """The samples of one prompt × target, by sample index."""
        return self._cells.get((prompt_id, target), [])

    def groups(self, prompt_id: str, target: str) -> list[dict[str, Any]]:
        """`answer_groups` of the cell (fresh dicts: callers may annotate them)."""
        return answer_groups(self.cell(prompt_id, target))

    @property
    def calls(self) -> list[CallOutcome]:
        return [c for i in self.items for c in i.calls]

    @property
    def failed_calls(self) -> list[tuple[ItemResult, CallOutcome]]:
        return [(i, c) for i in self.items for c in i.calls if c.status != "success"]


def prompt_info(prompt_set: PromptSet, items: list[WorkItem]) -> list[PromptInfo]:
    first = {}
    for item in items:
        first.setdefault(item.prompt_id, item)
    out = []
    for prompt in prompt_set.prompts:
        item = first.get(prompt.id)
        messages = item.messages if item else []
        last_user = next((m for m in reversed(messages) if m.get("role") == "user"), {})
        text = (item.prompt_text if item else None) or str(last_user.get("content") or "")
        out.append(PromptInfo(prompt.id, text, sum(1 for m in messages if m["role"] != "system")))
    return out


def run_exists(db: DatabaseConnection, prompt_set_name: str, root_run_id: str) -> bool:
    """Whether the Dagster run `root_run_id` started a run group for the set (it got as far
    as capturing, or trying to)."""
    with db.session_scope() as session:
        group = GroupRepository(session).find_group(
            RUN_GROUP, run_group_name(prompt_set_name, root_run_id)
        )
    return group is not None


def load_run(db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None) -> RunData:
    """The run of `root_run_id` (else the set's newest run), with its calls matched to items.
    LookupError when the set has no run yet."""
    group = find_run_group(db, prompt_set_name, root_run_id)
    prompt_set = prompt_set_of_run(group)
    work = prompt_set.work_items()
    # Two targets can send the very same request (same provider, model and parameters, as
    # scripted offline targets do): a hash can name several items.
    by_hash: dict[str, list[ItemResult]] = {}
    results = []
    for item in work:
        result = ItemResult(item)
        results.append(result)
        by_hash.setdefault(item_request_hash(item), []).append(result)
    unmatched = 0
    with db.session_scope() as session:
        for call in RunResultsRepository(session).call_rows(group.id):
            candidates = by_hash.get(call.request_hash)
            if not candidates:
                unmatched += 1
                continue
            # the item of the target the run recorded, else every item the request answers
            own = [r for r in candidates if r.item.target_label == call.target] or candidates
            for result in own:
                result.calls.append(call)
    meta = group.metadata_json or {}
    targets = [
        TargetInfo(label, t.provider, t.model_name, t.params.as_dict())
        for t, label in zip(prompt_set.targets, prompt_set.target_labels, strict=True)
    ]
    per_target = StudyService(db).get_target_comparison(group_id=group.id)
    return RunData(
        prompt_set_name=prompt_set_name,
        run_group_id=group.id,
        run_name=group.name,
        root_run_id=meta.get("root_run_id") or group.name.split("/", 1)[-1],
        started_at=group.created_at,
        content_hash=meta.get("content_hash"),
        prompt_set=prompt_set,
        prompts=prompt_info(prompt_set, work),
        targets=targets,
        items=results,
        per_target=per_target.to_dict("records"),
        unmatched_calls=unmatched,
    )


def answer_groups(samples: list[ItemResult]) -> list[dict[str, Any]]:
    """A cell's samples with identical outcomes together, most frequent first (ties in sample
    order): `{"kind": "answer"|"failure"|"missing", "text", "samples": [indices], "count"}`.
    Answers are identical when their text is, leading and trailing whitespace aside."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for result in samples:
        final = result.final
        if final is None:
            key = ("missing", "not sent yet")
        elif final.status == "success":
            key = ("answer", (final.answer or "").strip())
        else:
            key = ("failure", f"{final.error_type or final.status}: {final.error_message or ''}")
        groups[key].append(result.item.sample_index)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), min(kv[1])))
    return [
        {"kind": kind, "text": text, "samples": indices, "count": len(indices)}
        for (kind, text), indices in ordered
    ]
