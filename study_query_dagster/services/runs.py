"""Start or resume a run of a prompt set, and embed its answers: the use case behind the
`prompt_set`, `inference_run` and `response_embeddings` assets and their checks, free of
Dagster so it can be tested on its own.

- Storing a prompt set makes (or updates) its `prompt_set` group: the validated content, its
  hash and every version seen.
- A *run* is a `run` group named `<prompt set>/<root run id>` holding a copy of the prompt set
  it started with. Re-executing a failed Dagster run keeps its root run id, so it finds the
  same group and resumes: an item counts as done when a member call with the item's request
  hash succeeded. Items are matched to calls by request hash (not by metadata), so cache hits,
  deduplicated calls and re-executions all line up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..db import (
    DatabaseConnection,
    Group,
    GroupRepository,
    RawCall,
    RawCallRepository,
    StoredEmbedding,
    VectorStore,
)
from ..log import get_logger
from .embeddings import EmbeddingService
from .inference import InferenceService, ProviderLimits, compute_request_hash
from .prompt_sets import LoadedPromptSet, PromptSet, WorkItem
from .run_summary import RunSummary, summarize_run

logger = get_logger(__name__)

# Outcomes that another attempt would not change: the provider refused the content or the
# request itself. They are results to study, so they do not fail the run.
FINAL_ERROR_TYPES = frozenset({"content_filter", "bad_request", "unprocessable_entity"})
RUN_GROUP = "run"
PROMPT_SET_GROUP = "prompt_set"
EMBEDDING_GROUP = "embeddings"


class RunRefused(ValueError):
    """The run cannot start here (e.g. a target's credentials are missing); nothing was sent
    or written."""


class ChatServices(Protocol):
    """What a run needs to call its targets (LLMProvidersResource is one)."""

    def provider_limits(self, provider: str) -> ProviderLimits: ...

    def create_service(
        self, provider: str, model: str, db: DatabaseConnection | None, limits=None
    ) -> InferenceService: ...


# --- prompt sets as stored ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredPromptSet:
    group_id: int
    prompt_set: PromptSet
    content_hash: str


def store_prompt_set(db: DatabaseConnection, loaded: LoadedPromptSet, stored_by: str) -> int:
    """Record the validated prompt set in its `prompt_set` group (created if missing): the
    content runs will start from, its hash, where it came from and, per content hash, the first
    `stored_by` (a Dagster run id) that stored it. Returns the group id."""
    ps = loaded.prompt_set
    with db.session_scope() as session:
        repo = GroupRepository(session)
        group_id = repo.get_or_create_group(PROMPT_SET_GROUP, ps.name, description=ps.description)
        meta = dict(repo.get_group(group_id).metadata_json or {})
        versions = dict(meta.get("versions", {}))
        versions.setdefault(loaded.content_hash, stored_by)
        repo.update_group(
            group_id,
            description=ps.description,
            metadata_json={
                **meta,
                "content": ps.model_dump(mode="json", exclude_defaults=True),
                "content_hash": loaded.content_hash,
                "path": str(loaded.path),
                "expected_calls": ps.expected_calls,
                "versions": versions,  # content hash -> first Dagster run that stored it
            },
        )
    return group_id


def stored_prompt_set(db: DatabaseConnection, name: str) -> StoredPromptSet:
    """The prompt set as it was last stored; LookupError when it never was."""
    with db.session_scope() as session:
        group = GroupRepository(session).find_group(PROMPT_SET_GROUP, name)
        meta = dict(group.metadata_json or {}) if group is not None else {}
    if group is None or "content" not in meta:
        raise LookupError(f"prompt set {name!r} is not stored yet: materialize prompt_set first")
    return StoredPromptSet(
        group.id, PromptSet.model_validate(meta["content"]), meta["content_hash"]
    )


def prompt_set_of_run(group: Group) -> PromptSet:
    """The prompt set a run was started with (stored in its group when the run began)."""
    content = (group.metadata_json or {}).get("content")
    if content is None:
        raise ValueError(f"run group {group.name!r} does not record its prompt set")
    return PromptSet.model_validate(content)


# --- items and their outcomes -----------------------------------------------------------------


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


# --- a run as its checks see it ----------------------------------------------------------------


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


@dataclass
class RunView:
    """A run's group, the prompt set it ran and the calls it captured."""

    group: Group
    prompt_set: PromptSet
    state: ItemState

    @property
    def missing_items(self) -> list[str]:
        """Keys of items without any captured call."""
        return [
            i.key
            for i in self.prompt_set.work_items()
            if item_request_hash(i) not in self.state.latest
        ]

    @property
    def unfinished_items(self) -> list[str]:
        """Keys of items with no answer yet: never captured, or failed in a way another
        attempt could change (not a final refusal)."""
        return [
            i.key
            for i in self.prompt_set.work_items()
            if self.state.outcome(item_request_hash(i)) in ("unfinished", "missing")
        ]

    @property
    def failed_calls(self) -> int:
        return sum(1 for c in self.state.calls if c.status != "success")


def open_run(db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None) -> RunView:
    """The run of this root run (else the prompt set's newest run), for its checks."""
    group = find_run_group(db, prompt_set_name, root_run_id)
    return RunView(group, prompt_set_of_run(group), load_item_state(db, group.id))


# --- starting or resuming a run ---------------------------------------------------------------


@dataclass
class ExecutionReport:
    run_group_id: int
    expected: int
    skipped: int  # already succeeded in an earlier execution of this run
    attempted: int
    outcomes: Counter  # per item: success / final / unfinished / missing
    unfinished_keys: list[str]


@dataclass
class RunResult:
    report: ExecutionReport
    summary: RunSummary


async def start_or_resume_run(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str,
    services: ChatServices,
    *,
    preflight: Callable[[PromptSet], list[str]] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> RunResult:
    """Run the prompt set as last stored, or finish the run of `root_run_id` with the version
    it started with (a file edited mid-run cannot split a run).

    `preflight(prompt_set)` names what stops the run here (e.g. missing credentials): any
    problem raises `RunRefused` before anything is sent or written. Targets calling the same
    provider share its concurrency and RPM/TPM limits."""
    stored = stored_prompt_set(db, prompt_set_name)
    group_name = run_group_name(prompt_set_name, root_run_id)
    with db.session_scope() as session:
        existing = GroupRepository(session).find_group(RUN_GROUP, group_name)
    ps = prompt_set_of_run(existing) if existing is not None else stored.prompt_set
    problems = preflight(ps) if preflight is not None else []
    if problems:
        raise RunRefused(f"prompt set {prompt_set_name!r} cannot run here: " + "; ".join(problems))
    if existing is not None:
        run_group_id = existing.id
    else:
        with db.session_scope() as session:
            repo = GroupRepository(session)
            # The n-th run of a set sends the n-th script of scripted offline answers; the run
            # keeps the resolved copy, so resuming it and its checks see the same script.
            run_number = repo.count_groups(RUN_GROUP, f"{prompt_set_name}/") + 1
            ps = stored.prompt_set.for_run(run_number)
            run_group_id = repo.get_or_create_group(
                RUN_GROUP,
                group_name,
                description=f"Dagster run {root_run_id} of prompt set {prompt_set_name}",
                metadata_json={
                    "prompt_set": prompt_set_name,
                    "content_hash": stored.content_hash,
                    "root_run_id": root_run_id,
                    "prompt_set_group_id": stored.group_id,
                    "run_number": run_number,
                    "content": ps.model_dump(mode="json", exclude_defaults=True),
                },
            )
    limits: dict[str, ProviderLimits] = {}

    def make_service(provider: str, model: str) -> InferenceService:
        shared = limits.setdefault(provider, services.provider_limits(provider))
        return services.create_service(provider, model, db, limits=shared)

    report = await execute_prompt_set(
        db,
        ps,
        run_group_id=run_group_id,
        prompt_set_group_id=stored.group_id,
        make_service=make_service,
        extra_metadata=dict(extra_metadata or {}),
    )
    logger.info(
        "run group %s: %d sent, %d already done; outcomes %s",
        run_group_id,
        report.attempted,
        report.skipped,
        dict(report.outcomes),
    )
    return RunResult(report, summarize_run(db, run_group_id))


ServiceFactory = Callable[[str, str], InferenceService]  # (provider, model) -> service


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
        run_group_id,
        len(items),
        len(items) - len(pending),
        len(pending),
    )

    # Positions in the run group follow the items' order (prompt, target, sample), after
    # whatever earlier executions of this run added: unique whichever call finishes first.
    with db.session_scope() as session:
        base = GroupRepository(session).max_position(run_group_id)
    positions = {item.key: base + rank for rank, item in enumerate(pending, start=1)}
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
                        # Per item: samples differ in seed, scripted answers per prompt.
                        "params": item.params,
                        "position": positions[item.key],
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
            )

    if by_target:
        await asyncio.gather(*(run_target(batch) for batch in by_target.values()))

    after = load_item_state(db, run_group_id)
    with db.session_scope() as session:
        groups = GroupRepository(session)
        in_order = [m.call_id for m in groups.get_group_members(run_group_id)]
        groups.add_group_members(prompt_set_group_id, in_order)
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


# --- embedding a run's answers -----------------------------------------------------------------


class Embedders(Protocol):
    """Where the run's embedder comes from (EmbeddingResource is one): the default provider and
    model, overridden by the prompt set's `embed:`."""

    provider: str
    model: str | None

    def create_service(
        self,
        db: DatabaseConnection,
        *,
        provider: str | None = None,
        model: str | None = None,
        **options: Any,
    ) -> EmbeddingService: ...


@dataclass
class EmbeddingReport:
    run_group_id: int
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
    out = []
    for call in load_item_state(db, run_group_id).calls:
        text = (call.response_json or {}).get("text")
        if call.status == "success" and isinstance(text, str) and text.strip():
            out.append((call.id, text))
    return out


def _embedder(db: DatabaseConnection, ps: PromptSet, embedders: Embedders) -> EmbeddingService:
    # Truncated to the model's input limit: an answer longer than that is still embedded.
    return embedders.create_service(
        db,
        provider=ps.embed.provider or embedders.provider,
        model=ps.embed.model or embedders.model,
        truncate=True,
    )


async def embed_run(
    db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None, embedders: Embedders
) -> EmbeddingReport | None:
    """Embed every successful answer of the run (None when the set has `embed: off`). The
    embedding calls join an `embeddings` group named like the run."""
    run = find_run_group(db, prompt_set_name, root_run_id)
    ps = prompt_set_of_run(run)
    if not ps.embed.enabled:
        return None
    async with _embedder(db, ps, embedders) as service:
        with db.session_scope() as session:
            group_id = GroupRepository(session).get_or_create_group(
                EMBEDDING_GROUP,
                run.name,
                description=f"embedding calls for run {run.name}",
                metadata_json={"run_group_id": run.id, "root_run_id": root_run_id},
            )
        return await embed_run_answers(db, run.id, service, group_id)


async def embed_run_answers(
    db: DatabaseConnection, run_group_id: int, service: EmbeddingService, group_id: int
) -> EmbeddingReport:
    answers = successful_answers(db, run_group_id)
    calls_before = service.stats["api_calls"]
    responses = []
    if answers:
        responses = await service.get_embeddings_batch(
            [text for _, text in answers],
            group_id=group_id,
            metadata={"run_group_id": run_group_id},
        )
    errors = [
        {"call_id": call_id, "error": r.error.to_dict()}
        for (call_id, _), r in zip(answers, responses, strict=True)
        if r.error is not None
    ]
    return EmbeddingReport(
        run_group_id=run_group_id,
        answers=len(answers),
        embedded=sum(1 for r in responses if r.error is None),
        cache_hits=sum(1 for r in responses if r.error is None and r.cached),
        api_calls=service.stats["api_calls"] - calls_before,
        dimensions=sorted({r.dimension for r in responses if r.error is None}),
        errors=errors,
        model=service.model,
        provider=service.provider_name,
    )


@dataclass
class EmbeddingCoverage:
    """Which of a run's answers have a stored embedding (for the embedding checks)."""

    enabled: bool
    answers: int = 0
    missing_call_ids: list[int] = field(default_factory=list)
    stored: dict[str, StoredEmbedding] = field(default_factory=dict)  # by request hash


async def embedding_coverage(
    db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None, embedders: Embedders
) -> EmbeddingCoverage:
    """Answers matched to stored embeddings by the request hash the embedder gives each one
    (hashing needs no call; the service applies the same normalisation and truncation)."""
    run = find_run_group(db, prompt_set_name, root_run_id)
    ps = prompt_set_of_run(run)
    if not ps.embed.enabled:
        return EmbeddingCoverage(enabled=False)
    answers = successful_answers(db, run.id)
    async with _embedder(db, ps, embedders) as service:
        hashes = service.request_hashes([text for _, text in answers])
    with db.session_scope() as session:
        stored = VectorStore(session).embeddings_by_hash([h for h in hashes if h])
    missing = [call_id for (call_id, _), h in zip(answers, hashes, strict=True) if h not in stored]
    return EmbeddingCoverage(True, len(answers), missing, stored)
