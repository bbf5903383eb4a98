"""Start or resume a run of a prompt set: the use case behind the `prompt_set` and
`inference_run` assets and their checks, free of Dagster so it can be tested on its own
(`run_embeddings.py` embeds a run's answers, `run_shards.py` sends its items).

- Storing a prompt set makes (or updates) its `prompt_set` group: the validated content, its
  hash and every version seen.
- A *run* is a `run` group named `<prompt set>/<root run id>` holding a copy of the prompt set
  it started with. Re-executing a failed Dagster run keeps its root run id, so it finds the
  same group and resumes: an item counts as done when a member call with the item's request
  hash succeeded. Items are matched to calls by request hash (not by metadata), so cache hits,
  deduplicated calls and re-executions all line up.
- A run is planned (`plan_run`: its group, its shards and their positions), its shards run
  (`run_planned_shard`, one Dagster step each, or all at once in `start_or_resume_run`), and
  it is finished (`finish_run`: the prompt set's group, the summary). Every step reads the
  run's calls a chunk or an aggregate at a time, so a run of any size takes flat memory.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..db import DatabaseConnection, Group, GroupRepository, RunCallsRepository
from ..db.run_calls import CallTotals
from ..log import get_logger
from .inference import InferenceService, ProviderLimits, SharedProviderLimits
from .prompt_sets import PromptSet

# Re-exported: the assets and tests reach every part of a run through this module.
from .run_embeddings import EMBEDDING_GROUP as EMBEDDING_GROUP
from .run_embeddings import Embedders as Embedders
from .run_embeddings import EmbeddingCoverage as EmbeddingCoverage
from .run_embeddings import EmbeddingReport as EmbeddingReport
from .run_embeddings import embed_run as embed_run
from .run_embeddings import embedding_coverage as embedding_coverage
from .run_groups import PROMPT_SET_GROUP as PROMPT_SET_GROUP
from .run_groups import (
    RUN_GROUP,
    find_run_group,
    prompt_set_of_run,
    run_group_name,
    stored_prompt_set,
)
from .run_groups import StoredPromptSet as StoredPromptSet
from .run_groups import store_prompt_set as store_prompt_set
from .run_shards import FINAL_ERROR_TYPES as FINAL_ERROR_TYPES
from .run_shards import (
    KEY_SAMPLE,
    ItemOutcomes,
    ServiceFactory,
    ShardPlan,
    ShardReport,
    copy_members,
    item_outcomes,
    plan_shards,
    run_shard,
)
from .run_shards import call_model as call_model
from .run_shards import item_request_hash as item_request_hash
from .run_summary import RunSummary, summarize_run

logger = get_logger(__name__)


class RunRefused(ValueError):
    """The run cannot start here (e.g. a target's credentials are missing); nothing was sent
    or written."""


class ChatServices(Protocol):
    """What a run needs to call its targets (LLMProvidersResource is one)."""

    def provider_limits(
        self, provider: str, db: DatabaseConnection | None = None
    ) -> ProviderLimits | SharedProviderLimits: ...

    def create_service(
        self, provider: str, model: str, db: DatabaseConnection | None, limits=None
    ) -> InferenceService: ...


# --- a run as its checks see it ----------------------------------------------------------------


@dataclass
class RunView:
    """A run's group, the prompt set it ran and what its calls add up to (read from the
    database as aggregates; `item_outcomes()` goes through the items a chunk at a time)."""

    db: DatabaseConnection
    group: Group
    prompt_set: PromptSet
    totals: CallTotals

    @property
    def calls(self) -> int:
        return self.totals.calls

    @property
    def failed_calls(self) -> int:
        return self.totals.calls - self.totals.by_status.get("success", 0)

    def item_outcomes(self, sample: int = KEY_SAMPLE) -> ItemOutcomes:
        return item_outcomes(self.db, self.prompt_set, self.group.id, sample=sample)


def open_run(db: DatabaseConnection, prompt_set_name: str, root_run_id: str | None) -> RunView:
    """The run of this root run (else the prompt set's newest run), for its checks."""
    group = find_run_group(db, prompt_set_name, root_run_id)
    with db.read_session() as session:
        totals = RunCallsRepository(session).totals(group.id)
    return RunView(db, group, prompt_set_of_run(group), totals)


# --- starting or resuming a run ---------------------------------------------------------------


@dataclass
class ExecutionReport:
    run_group_id: int
    expected: int
    skipped: int  # already succeeded in an earlier execution of this run
    attempted: int
    outcomes: Counter  # per item: success / final / unfinished / missing
    unfinished_keys: list[str]  # the first KEY_SAMPLE, in item order

    @property
    def unfinished(self) -> int:
        return self.outcomes.get("unfinished", 0) + self.outcomes.get("missing", 0)

    @classmethod
    def merge(cls, run_group_id: int, shards: list[ShardReport]) -> ExecutionReport:
        shards = sorted(shards, key=lambda r: r.shard)
        keys = [key for r in shards for key in r.unfinished_keys][:KEY_SAMPLE]
        return cls(
            run_group_id=run_group_id,
            expected=sum(r.expected for r in shards),
            skipped=sum(r.skipped for r in shards),
            attempted=sum(r.attempted for r in shards),
            outcomes=sum((r.outcomes for r in shards), Counter()),
            unfinished_keys=keys,
        )


@dataclass
class RunResult:
    report: ExecutionReport
    summary: RunSummary


@dataclass(frozen=True)
class RunPlan:
    """A run ready to send: its prompt set (as the run started) and its shards."""

    prompt_set: PromptSet
    run_group_id: int
    shards: list[ShardPlan]


def plan_run(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str,
    *,
    preflight: Callable[[PromptSet], list[str]] | None = None,
) -> RunPlan:
    """Start the run of the prompt set as last stored, or pick up the run of `root_run_id`
    with the version it started with (a file edited mid-run cannot split a run), and plan its
    shards.

    `preflight(prompt_set)` names what stops the run here (e.g. missing credentials): any
    problem raises `RunRefused` before anything is sent or written."""
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
    return RunPlan(ps, run_group_id, plan_shards(db, ps, run_group_id, stored.group_id))


def run_services(db: DatabaseConnection, services: ChatServices) -> ServiceFactory:
    """(provider, model) -> service: targets calling one provider share its limits (held for
    every process using `db`, when quotas are shared)."""
    limits: dict[str, Any] = {}

    def make_service(provider: str, model: str) -> InferenceService:
        shared = limits.setdefault(provider, services.provider_limits(provider, db))
        return services.create_service(provider, model, db, limits=shared)

    return make_service


async def run_planned_shard(
    db: DatabaseConnection,
    plan: ShardPlan,
    services: ChatServices,
    *,
    extra_metadata: Mapping[str, Any] | None = None,
) -> ShardReport:
    """One shard of a planned run (a Dagster step of its own), with the run's prompt set."""
    with db.session_scope() as session:
        group = GroupRepository(session).get_group(plan.run_group_id)
    if group is None:
        raise LookupError(f"run group {plan.run_group_id} does not exist")
    report = await run_shard(
        db,
        prompt_set_of_run(group),
        plan,
        run_services(db, services),
        dict(extra_metadata or {}),
    )
    logger.info(
        "run group %s shard %d: %d sent, %d already done; outcomes %s",
        plan.run_group_id,
        plan.shard,
        report.attempted,
        report.skipped,
        dict(report.outcomes),
    )
    return report


def finish_run(db: DatabaseConnection, shards: list[ShardReport]) -> RunResult:
    """After every shard: the run's calls join its prompt set's group; the report and summary."""
    run_group_id = shards[0].run_group_id
    copy_members(db, run_group_id, shards[0].prompt_set_group_id)
    return RunResult(ExecutionReport.merge(run_group_id, shards), summarize_run(db, run_group_id))


async def start_or_resume_run(
    db: DatabaseConnection,
    prompt_set_name: str,
    root_run_id: str,
    services: ChatServices,
    *,
    preflight: Callable[[PromptSet], list[str]] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> RunResult:
    """`plan_run`, every shard at once in this process, then `finish_run`. Targets calling
    the same provider share its concurrency and RPM/TPM limits."""
    plan = plan_run(db, prompt_set_name, root_run_id, preflight=preflight)
    make_service = run_services(db, services)
    extra = dict(extra_metadata or {})
    shards = [run_shard(db, plan.prompt_set, s, make_service, extra) for s in plan.shards]
    reports = await asyncio.gather(*shards)
    result = finish_run(db, list(reports))
    logger.info(
        "run group %s: %d sent, %d already done; outcomes %s",
        plan.run_group_id,
        result.report.attempted,
        result.report.skipped,
        dict(result.report.outcomes),
    )
    return result


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
    plans = plan_shards(db, prompt_set, run_group_id, prompt_set_group_id)
    reports = await asyncio.gather(
        *(run_shard(db, prompt_set, p, make_service, extra_metadata) for p in plans)
    )
    copy_members(db, run_group_id, prompt_set_group_id)
    return ExecutionReport.merge(run_group_id, list(reports))
