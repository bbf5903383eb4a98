"""The groups a prompt-set run lives in: the prompt set as stored (its `prompt_set` group) and
each run's `run` group (named `<prompt set>/<root run id>`, holding the prompt set it started
with)."""

from __future__ import annotations

from dataclasses import dataclass

from ..db import DatabaseConnection, Group, GroupRepository
from .prompt_sets import LoadedPromptSet, PromptSet

RUN_GROUP = "run"
PROMPT_SET_GROUP = "prompt_set"


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


def run_group_name(prompt_set_name: str, root_run_id: str) -> str:
    return f"{prompt_set_name}/{root_run_id}"


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
