"""Shared pieces of the reliability drills (tests/drills/): large prompt sets, per-request fault
scripts for the fake server, the environment `get_study_job` reads, and readers of what a run
left in the app database."""

from __future__ import annotations

import json
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from study_query_dagster.db import DatabaseConnection, Group, GroupMember, RawCall

from .fake_llm_server import Fault, RecordedRequest

AZURE_DEPLOYMENT = "drill-deployment"
OPENAI_MODEL = "gpt-4o-mini"


def drill_prompt_set(name: str, prompts: int, *, embed: bool = False, samples: int = 1) -> str:
    """`prompts` distinct questions x two targets that call the fake server (OpenAI and Azure
    dialects), so every item is a distinct request body the server can count."""
    lines = [f"name: {name}", "prompts:"]
    lines += [f'  - {{id: q{i:04d}, text: "drill question {i:04d} of {name}"}}'
              for i in range(prompts)]  # fmt: skip
    lines += [
        "targets:",
        f"  - {{provider: openai, model: {OPENAI_MODEL}, label: oa}}",
        f"  - {{provider: azure, deployment: {AZURE_DEPLOYMENT}, label: az}}",
        f"samples: {samples}",
        f"embed: {'on' if embed else 'off'}",
    ]
    return "\n".join(lines) + "\n"


def request_key(request: RecordedRequest) -> str:
    """What identifies one item at the server: the model (or Azure deployment) and the prompt."""
    if request.dialect == "azure":
        model = request.path.split("/")[3]
    else:
        model = request.body.get("model") if isinstance(request.body, dict) else None
    messages = request.body.get("messages") if isinstance(request.body, dict) else None
    return f"{model}|{messages[-1]['content'] if messages else request.body}"


def call_key(call: RawCall) -> str:
    """`request_key` of a captured call (the model column holds the Azure deployment)."""
    return f"{call.model}|{call.request_json['messages'][-1]['content']}"


@dataclass
class Seen:
    request: RecordedRequest
    fault: Fault | None


class ScriptedFaults:
    """The fake server's `fault_fn`: the n-th request for an item gets `scripts[key][n]`, and a
    normal answer once its script is used up. Keeps every request with the fault it got."""

    def __init__(self, scripts: dict[str, list[Fault]] | None = None):
        self.scripts = scripts or {}
        self.seen: dict[str, list[Seen]] = defaultdict(list)
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Fault | None:
        key = request_key(request)
        with self._lock:
            attempt = len(self.seen[key])
            script = self.scripts.get(key, [])
            fault = script[attempt] if attempt < len(script) else None
            self.seen[key].append(Seen(request, fault))
        return fault

    def successes(self) -> Counter:
        """Requests the server answered normally, per item."""
        with self._lock:
            return Counter(k for k, seen in self.seen.items() for s in seen if s.fault is None)


def study_job_env(monkeypatch, db_url: str, prompt_dir: Path, llm_url: str | None,
                  embedding_options: dict | None = None, **llm_options) -> dict[str, str]:  # fmt: skip
    """Point `tests.support.pipeline.get_study_job` at these resources (for this process and
    any child process that inherits the environment)."""
    values = {
        "SQD_TEST_DB_URL": db_url,
        "SQD_TEST_PROMPT_DIR": str(prompt_dir),
        "SQD_TEST_LLM_URL": llm_url or "",
        "SQD_TEST_LLM_OPTIONS": json.dumps(llm_options),
        "SQD_TEST_EMBEDDING_OPTIONS": json.dumps(embedding_options or {}),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def run_calls(db_url: str, group_name: str) -> list[RawCall]:
    """The text calls of the run group `group_name`, in id order (detached copies)."""
    db = DatabaseConnection(db_url)
    try:
        with db.session_scope() as session:
            group = session.scalars(
                select(Group).where(Group.group_type == "run", Group.name == group_name)
            ).one()
            calls = list(
                session.scalars(
                    select(RawCall)
                    .join(GroupMember, GroupMember.call_id == RawCall.id)
                    .where(GroupMember.group_id == group.id, RawCall.modality == "text")
                    .order_by(RawCall.id)
                )
            )
            session.expunge_all()
            return calls
    finally:
        db.dispose()


def step_failure(result, step: str) -> str:
    """The error message of `step`'s failure in an execute_job/materialize result."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_key == step:
            return str(event.event_specific_data.error)
    raise AssertionError(f"step {step} did not fail")
