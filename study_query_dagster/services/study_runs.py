"""Running a prompt set and embedding its answers: the logic behind the `inference_run` and
`response_embeddings` assets, kept free of Dagster so it can be tested on its own.

A *run* is a `run` group named `<prompt set>/<root run id>`. Re-executing a failed Dagster run
keeps its root run id, so it finds the same group and resumes: an item counts as done when a
member call with the item's request hash succeeded. Items are matched to calls by request hash
(not by metadata), so cache hits, deduplicated calls and re-executions all line up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..db import (
    CallFilter,
    DatabaseConnection,
    Group,
    GroupRepository,
    RawCall,
    RawCallRepository,
    StatisticsRepository,
    VectorStore,
)
from ..log import get_logger
from .embeddings import EmbeddingService
from .inference import InferenceService, compute_request_hash
from .prompt_sets import PromptSet, WorkItem

logger = get_logger(__name__)

# Outcomes that another attempt would not change: the provider refused the content or the
# request itself. They are results to study, so they do not fail the run.
FINAL_ERROR_TYPES = frozenset({"content_filter", "bad_request", "unprocessable_entity"})
RUN_GROUP = "run"
PROMPT_SET_GROUP = "prompt_set"
EMBEDDING_GROUP = "embeddings"


def run_group_name(prompt_set_name: str, root_run_id: str) -> str:
    return f"{prompt_set_name}/{root_run_id}"


def call_model(item: WorkItem) -> str:
    """What the provider is called with: the Azure deployment, else the model."""
    return item.deployment or item.model or ""


def item_request_hash(item: WorkItem) -> str:
    """The request hash InferenceService will record for this item (same recipe)."""
    return compute_request_hash(
        item.provider, call_model(item), item.messages, item.params, item.sample_index
    )


@dataclass
class ItemState:
    succeeded: set[str] = field(default_factory=set)  # request hashes with a success
    latest: dict[str, RawCall] = field(default_factory=dict)  # hash -> newest call
    calls: list[RawCall] = field(default_factory=list)

    def outcome(self, request_hash: str) -> str:
        """success | final (refused for good) | unfinished (worth another attempt) | missing"""
        if request_hash in self.succeeded:
            return "success"
        call = self.latest.get(request_hash)
        if call is None:
            return "missing"
        error_type = (call.error_json or {}).get("type")
        if call.status == "failed" and error_type in FINAL_ERROR_TYPES:
            return "final"
        return "unfinished"


def load_item_state(db: DatabaseConnection, run_group_id: int) -> ItemState:
    state = ItemState()
    with db.session_scope() as session:
        for call in RawCallRepository(session).calls_in_group(run_group_id, modality="text"):
            state.calls.append(call)
            state.latest[call.request_hash] = call
            if call.status == "success":
                state.succeeded.add(call.request_hash)
    return state


def run_prompt_set(group: Group) -> PromptSet:
    """The prompt set a run was started with (stored in its group when the run began)."""
    content = (group.metadata_json or {}).get("content")
    if content is None:
        raise ValueError(f"run group {group.name!r} does not record its prompt set")
    return PromptSet.model_validate(content)


def find_run_group(db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None) -> Group:
    """The run group of this root run if it exists, else the newest run of the prompt set."""
    with db.session_scope() as session:
        repo = GroupRepository(session)
        if root_run_id:
            group = repo.find_group(RUN_GROUP, run_group_name(prompt_set_name, root_run_id))
            if group is not None:
                return group
        group = repo.newest_group(RUN_GROUP, f"{prompt_set_name}/")
    if group is None:
        raise LookupError(
            f"prompt set {prompt_set_name!r} has no run yet: materialize inference_run"
        )
    return group


ServiceFactory = Callable[[str, str], InferenceService]  # (provider, model) -> service


@dataclass
class ExecutionReport:
    run_group_id: int
    expected: int
    skipped: int  # already succeeded in an earlier execution of this run
    attempted: int
    outcomes: Counter  # per item: success / final / unfinished / missing
    unfinished_keys: list[str]


async def execute_prompt_set(
    db: DatabaseConnection,
    prompt_set: PromptSet,
    *,
    run_group_id: int,
    prompt_set_group_id: int,
    make_service: ServiceFactory,
    extra_metadata: dict[str, Any] | None = None,
) -> ExecutionReport:
    """Send every pending item (prompt x target x sample) and capture it in the run group.

    Calls are persisted as they complete (InferenceService's capture writer), so a crash loses
    only calls in flight; re-running with the same `run_group_id` sends only what has not
    succeeded yet."""
    items = prompt_set.work_items()
    hashes = {item.key: item_request_hash(item) for item in items}
    before = load_item_state(db, run_group_id)
    # Everything that has not succeeded is sent again, refusals included: a content filter
    # may pass another sample, and a refused request is not billed.
    pending = [i for i in items if hashes[i.key] not in before.succeeded]
    logger.info(
        "run group %s: %d items, %d already done, %d to send",
        run_group_id, len(items), len(items) - len(pending), len(pending),
    )  # fmt: skip

    by_target: dict[str, list[WorkItem]] = {}
    for item in pending:
        by_target.setdefault(item.target_label, []).append(item)

    async def run_target(batch: list[WorkItem]) -> None:
        first = batch[0]
        async with make_service(first.provider, call_model(first)) as service:
            await service.run_batch(
                [
                    {
                        "messages": item.messages,
                        "sample_index": item.sample_index,
                        "extra_metadata": {
                            "item_key": item.key,
                            "prompt_id": item.prompt_id,
                            "target": item.target_label,
                        },
                    }
                    for item in batch
                ],
                group_id=run_group_id,
                extra_metadata={"prompt_set": prompt_set.name, **(extra_metadata or {})},
                cache=prompt_set.cache,
                **first.params,
            )

    if by_target:
        await asyncio.gather(*(run_target(batch) for batch in by_target.values()))

    after = load_item_state(db, run_group_id)
    with db.session_scope() as session:
        GroupRepository(session).add_group_members(prompt_set_group_id, [c.id for c in after.calls])
    outcomes = Counter(after.outcome(hashes[i.key]) for i in items)
    unfinished = [i.key for i in items if after.outcome(hashes[i.key]) in ("unfinished", "missing")]
    return ExecutionReport(
        run_group_id=run_group_id,
        expected=len(items),
        skipped=len(items) - len(pending),
        attempted=len(pending),
        outcomes=outcomes,
        unfinished_keys=unfinished,
    )


# --- what a run looks like --------------------------------------------------------------------


@dataclass
class RunSummary:
    run_group_id: int
    calls: int  # rows in the run group, every attempt of every execution
    by_status: dict[str, int]
    failures_by_type: dict[str, int]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd: float | None  # None when any successful call has no known price
    unpriced_calls: int
    per_target: list[dict[str, Any]]
    preview: list[dict[str, Any]]


def summarize_run(db: DatabaseConnection, run_group_id: int, preview_limit: int = 10) -> RunSummary:
    state = load_item_state(db, run_group_id)
    calls = state.calls
    by_status = Counter(c.status for c in calls)
    failures = Counter(
        (c.error_json or {}).get("type") or c.status for c in calls if c.status != "success"
    )
    successes = [c for c in calls if c.status == "success"]
    tokens = Counter()
    cost, unpriced = 0.0, 0
    for call in successes:
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            tokens[key] += int((call.tokens_json or {}).get(key) or 0)
        price = (call.metadata_json or {}).get("cost_usd")
        if price is None:
            unpriced += 1
        else:
            cost += float(price)
    where = CallFilter(group_id=run_group_id, modality="text")
    with db.session_scope() as session:
        stats = StatisticsRepository(session)
        p50, p95 = stats.latency_percentiles(where)
        per_target = stats.get_provider_stats(where)
    preview = [
        {
            "prompt": (c.metadata_json or {}).get("prompt_id"),
            "target": (c.metadata_json or {}).get("target"),
            "sample": (c.metadata_json or {}).get("sample_index"),
            "answer": (c.response_json or {}).get("text", ""),
        }
        for c in successes[:preview_limit]
    ]
    return RunSummary(
        run_group_id=run_group_id,
        calls=len(calls),
        by_status=dict(by_status),
        failures_by_type=dict(failures),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        prompt_tokens=tokens["prompt_tokens"],
        completion_tokens=tokens["completion_tokens"],
        total_tokens=tokens["total_tokens"],
        cost_usd=None if unpriced else round(cost, 6),
        unpriced_calls=unpriced,
        per_target=per_target,
        preview=preview,
    )


def missing_items(db: DatabaseConnection, prompt_set: PromptSet, run_group_id: int) -> list[str]:
    """Keys of items without any captured call in the run group."""
    state = load_item_state(db, run_group_id)
    return [i.key for i in prompt_set.work_items() if item_request_hash(i) not in state.latest]


# --- embeddings of a run's answers -----------------------------------------------------------


@dataclass
class EmbeddingReport:
    answers: int
    embedded: int
    cache_hits: int
    api_calls: int
    dimensions: list[int]
    errors: list[dict[str, Any]]
    model: str
    provider: str


def successful_answers(db: DatabaseConnection, run_group_id: int) -> list[tuple[int, str]]:
    """(call id, answer text) for the run's successful calls with a non-empty answer."""
    state = load_item_state(db, run_group_id)
    out = []
    for call in state.calls:
        text = (call.response_json or {}).get("text")
        if call.status == "success" and isinstance(text, str) and text.strip():
            out.append((call.id, text))
    return out


async def embed_run_answers(
    db: DatabaseConnection, run_group_id: int, service: EmbeddingService, group_id: int
) -> EmbeddingReport:
    answers = successful_answers(db, run_group_id)
    calls_before = service.stats["api_calls"]
    responses = await service.get_embeddings_batch(
        [text for _, text in answers],
        group_id=group_id,
        metadata={"run_group_id": run_group_id},
    ) if answers else []  # fmt: skip
    errors = [
        {"call_id": call_id, "error": r.error.to_dict()}
        for (call_id, _), r in zip(answers, responses, strict=True)
        if r.error is not None
    ]
    return EmbeddingReport(
        answers=len(answers),
        embedded=sum(1 for r in responses if r.error is None),
        cache_hits=sum(1 for r in responses if r.error is None and r.cached),
        api_calls=service.stats["api_calls"] - calls_before,
        dimensions=sorted({r.dimension for r in responses if r.error is None}),
        errors=errors,
        model=service.model,
        provider=service.provider_name,
    )


def _float(value) -> float | None:
    return None if value is None else float(value)


def answer_embeddings(
    db: DatabaseConnection, run_group_id: int, service: EmbeddingService
) -> tuple[list[int], dict]:
    """(call ids of successful answers without a stored embedding, the stored embeddings by
    request hash), matched by the request hash the service gives each answer."""
    answers = successful_answers(db, run_group_id)
    hashes = service.request_hashes([text for _, text in answers])
    with db.session_scope() as session:
        stored = VectorStore(session).embeddings_by_hash([h for h in hashes if h])
    missing = [call_id for (call_id, _), h in zip(answers, hashes, strict=True) if h not in stored]
    return missing, stored
