"""A run's items, in shards, in flat memory: what is still to send, sending it, and what each
item ended with.

A prompt set's items (prompt x target x sample, in the file's order) are cut into `shards`
contiguous slices. `plan_shards` counts what each slice still has to send and reserves the run
group positions they will take, in item order; `run_shard` sends one slice's pending items
(one stream per target, through `InferenceService.run_stream`) and reports its outcomes. A
shard is one Dagster step (several can run at once on different workers); re-executed, it
finds what already succeeded and sends only the rest.

Nothing here holds one object per call: items are generated as they are sent, pending items
are one byte each, and every question to the database is asked a chunk of request hashes at a
time (`RunCallsRepository`).
"""

from __future__ import annotations

import asyncio
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from ..db import DatabaseConnection, GroupRepository, RunCallsRepository
from ..log import get_logger
from .inference import InferenceService, compute_request_hash
from .prompt_sets import PromptSet, WorkItem
from .retry import RetryPolicy

logger = get_logger(__name__)

CHUNK = 1000  # request hashes per database question
KEY_SAMPLE = 1000  # item keys a report keeps (the rest are counted)
# Outcomes that another attempt would not change: the provider refused the content or the
# request itself. They are results to study, so they do not fail the run.
FINAL_ERROR_TYPES = frozenset({"content_filter", "bad_request", "unprocessable_entity"})

ServiceFactory = Callable[[str, str], InferenceService]  # (provider, model) -> service


def call_model(item: WorkItem) -> str:
    """What the provider is called with: the Azure deployment, else the model."""
    return item.deployment or item.model or ""


def item_request_hash(item: WorkItem) -> str:
    """The request hash InferenceService will record for this item (same recipe)."""
    return compute_request_hash(
        item.provider, call_model(item), item.messages, item.params, item.sample_index
    )


def shard_bounds(total: int, shards: int) -> list[tuple[int, int]]:
    """[start, stop) item ranges of `shards` near-equal contiguous slices (fewer when there
    are fewer items than shards)."""
    shards = max(1, min(shards, total)) if total else 1
    size, extra = divmod(total, shards)
    bounds, start = [], 0
    for i in range(shards):
        stop = start + size + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _chunks(items: Iterator[WorkItem]) -> Iterator[list[WorkItem]]:
    chunk: list[WorkItem] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def pending_flags(
    db: DatabaseConnection, ps: PromptSet, run_group_id: int, start: int, stop: int
) -> bytearray | None:
    """One byte per item of [start, stop): 1 if it has not succeeded in the run yet. None when
    the run has no call at all (everything is pending; nothing needs hashing)."""
    with db.read_session() as session:
        if not RunCallsRepository(session).has_calls(run_group_id):
            return None
    flags = bytearray(b"\x01") * (stop - start)
    for chunk in _chunks(ps.iter_work_items(start, stop)):
        hashes = [item_request_hash(item) for item in chunk]
        with db.read_session() as session:
            done = RunCallsRepository(session).succeeded_hashes(run_group_id, hashes)
        for item, request_hash in zip(chunk, hashes, strict=True):
            if request_hash in done:
                flags[item.index - start] = 0
    return flags


def _ranks(flags: bytearray | None) -> array | None:
    """ranks[i]: pending items before item i of the slice (None: every item is pending)."""
    if flags is None:
        return None
    ranks, seen = array("I", bytes(4 * (len(flags) + 1))), 0
    for i, flag in enumerate(flags):
        ranks[i] = seen
        seen += flag
    ranks[len(flags)] = seen
    return ranks


@dataclass(frozen=True)
class ShardPlan:
    """One slice of a run's items, as the planning step saw it (small: it travels between
    steps through Dagster's IO manager)."""

    run_group_id: int
    prompt_set_group_id: int
    shard: int  # 0-based
    shards: int
    start: int  # first item index
    stop: int  # one past the last
    first_position: int  # the group positions reserved for its pending items start here
    pending: int  # items it had to send when planned

    @property
    def key(self) -> str:
        return f"shard_{self.shard}"


def plan_shards(
    db: DatabaseConnection, ps: PromptSet, run_group_id: int, prompt_set_group_id: int
) -> list[ShardPlan]:
    """Cut the run into `ps.shards` slices and reserve one block of group positions for all
    their pending items, in item order (so positions follow the items across shards)."""
    bounds = shard_bounds(ps.expected_calls, ps.shards)
    counts = []
    for start, stop in bounds:
        flags = pending_flags(db, ps, run_group_id, start, stop)
        counts.append(stop - start if flags is None else sum(flags))
    with db.session_scope() as session:
        first = RunCallsRepository(session).reserve_positions(run_group_id, sum(counts))
    plans = []
    for shard, ((start, stop), pending) in enumerate(zip(bounds, counts, strict=True)):
        plans.append(
            ShardPlan(
                run_group_id, prompt_set_group_id, shard, len(bounds), start, stop, first, pending
            )
        )
        first += pending
    return plans


@dataclass
class ShardReport:
    run_group_id: int
    prompt_set_group_id: int
    shard: int
    expected: int
    skipped: int  # already succeeded before this execution
    attempted: int
    outcomes: Counter  # per item: success / final / unfinished / missing
    unfinished_keys: list[str] = field(default_factory=list)  # the first KEY_SAMPLE

    @property
    def unfinished(self) -> int:
        return self.outcomes.get("unfinished", 0) + self.outcomes.get("missing", 0)


async def run_shard(
    db: DatabaseConnection,
    ps: PromptSet,
    plan: ShardPlan,
    make_service: ServiceFactory,
    extra_metadata: dict[str, Any] | None = None,
) -> ShardReport:
    """Send the shard's items that have not succeeded yet (each target's as one stream) and
    report what every item of the shard ended with."""
    flags = pending_flags(db, ps, plan.run_group_id, plan.start, plan.stop)
    size = plan.stop - plan.start
    pending = size if flags is None else sum(flags)
    first = plan.first_position
    with db.session_scope() as session:
        repo = RunCallsRepository(session)
        if pending and (
            pending != plan.pending
            or repo.positions_used(plan.run_group_id, first, first + pending - 1)
        ):
            first = None  # this step ran before: its block is (partly) taken
    if first is None:
        with db.session_scope() as session:
            first = RunCallsRepository(session).reserve_positions(plan.run_group_id, pending)
    ranks = _ranks(flags)
    logger.info(
        "run group %s shard %d/%d: items %d-%d, %d already done, %d to send",
        plan.run_group_id,
        plan.shard + 1,
        plan.shards,
        plan.start,
        plan.stop - 1,
        size - pending,
        pending,
    )
    metadata = {"prompt_set": ps.name, **(extra_metadata or {})}
    if plan.shards > 1:
        metadata["shard"] = plan.shard

    def stream(label: str) -> Iterator[dict[str, Any]]:
        for item in ps.iter_work_items(plan.start, plan.stop, target=label):
            offset = item.index - plan.start
            if flags is not None and not flags[offset]:
                continue
            rank = offset if ranks is None else ranks[offset]
            yield {
                "messages": item.messages,
                "sample_index": item.sample_index,
                # Per item: samples differ in seed, scripted answers per prompt.
                "params": item.params,
                "position": first + rank,
                "extra_metadata": {
                    "item_key": item.key,
                    "prompt_id": item.prompt_id,
                    "target": item.target_label,
                },
            }

    if pending:
        async with AsyncExitStack() as stack:
            streams = []
            for label in ps.target_labels:
                items = stream(label)
                head = next(items, None)
                if head is None:
                    continue
                target = next(ps.iter_work_items(plan.start, plan.stop, target=label))
                service = await stack.enter_async_context(
                    make_service(target.provider, call_model(target))
                )
                service.check_item(head)  # a bad item stops the run before any call
                streams.append((service, _prepend(head, items)))
            await asyncio.gather(
                *(
                    service.run_stream(
                        items, group_id=plan.run_group_id, extra_metadata=metadata, cache=ps.cache
                    )
                    for service, items in streams
                )
            )
    ended = item_outcomes(db, ps, plan.run_group_id, plan.start, plan.stop)
    return ShardReport(
        plan.run_group_id,
        plan.prompt_set_group_id,
        plan.shard,
        size,
        size - pending,
        pending,
        ended.counts,
        ended.open_keys,
    )


def _prepend(head: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield head
    yield from rest


def outcome_of(found) -> str:
    """success | final (refused for good) | unfinished (worth another attempt) | missing"""
    if found is None:
        return "missing"
    if found.succeeded:
        return "success"
    if found.status == "failed" and found.error_type in FINAL_ERROR_TYPES:
        return "final"
    return "unfinished"


@dataclass
class ItemOutcomes:
    """What each item of a run (or a slice of it) ended with: counts per outcome, and the
    keys of the first items without an answer yet, in item order (the rest are counted)."""

    counts: Counter = field(default_factory=Counter)
    open_keys: list[str] = field(default_factory=list)  # missing or unfinished
    missing_keys: list[str] = field(default_factory=list)  # never captured
    failed_keys: list[str] = field(default_factory=list)  # captured, failed, worth retrying

    @property
    def open(self) -> int:
        return self.counts.get("unfinished", 0) + self.counts.get("missing", 0)


def item_outcomes(
    db: DatabaseConnection,
    ps: PromptSet,
    run_group_id: int,
    start: int = 0,
    stop: int | None = None,
    sample: int = KEY_SAMPLE,
) -> ItemOutcomes:
    """The outcome in the run of every item of [start, stop), a chunk at a time."""
    result = ItemOutcomes()
    for chunk in _chunks(ps.iter_work_items(start, stop)):
        hashes = [item_request_hash(item) for item in chunk]
        with db.read_session() as session:
            found = RunCallsRepository(session).outcomes(run_group_id, hashes)
        for item, request_hash in zip(chunk, hashes, strict=True):
            outcome = outcome_of(found.get(request_hash))
            result.counts[outcome] += 1
            if outcome in ("unfinished", "missing"):
                named = result.missing_keys if outcome == "missing" else result.failed_keys
                for keys in (result.open_keys, named):
                    if len(keys) < sample:
                        keys.append(item.key)
    return result


def copy_members(db: DatabaseConnection, run_group_id: int, prompt_set_group_id: int) -> None:
    """Add the run's calls to its prompt set's group, in position order, a page at a time."""
    after = (-1, 0)
    while True:
        with db.read_session() as session:
            page = RunCallsRepository(session).member_page(run_group_id, after, CHUNK)
        if not page:
            return
        # idempotent (calls already in the group are skipped), so a page whose write met a
        # locked or lost database is simply written again
        for attempt in RetryPolicy().synchronous():
            with attempt, db.session_scope() as session:
                calls = [c for _, _, c in page]
                GroupRepository(session).add_group_members(prompt_set_group_id, calls)
        after = page[-1][:2]
