"""Running a prompt set (services/runs.py) against the loopback server: group positions follow
the items' order whatever finishes first, samples are draws (distinct seeds unless the set
says `sample_seed: fixed`), and a resumed run appends its positions after the first ones."""

import itertools
import sqlite3
import textwrap
import threading

from sqlalchemy.exc import OperationalError

from study_query_dagster.db import GroupRepository, RawCallRepository
from study_query_dagster.providers import OpenAIProvider
from study_query_dagster.services import InferenceService, runs
from study_query_dagster.services.prompt_sets import parse_prompt_set
from tests.support.fake_llm_server import Fault

KEY = "sk-runs-test-0123456789"

TWO_TARGETS = """
name: order
prompts:
  - {id: p1, text: "first prompt"}
  - {id: p2, text: "second prompt"}
targets:
  - {provider: openai, model: slow-model, label: slow}
  - {provider: openai, model: fast-model, label: fast}
samples: 2
"""


def prompt_set(text: str):
    return parse_prompt_set(textwrap.dedent(text), "set.yaml").prompt_set


def groups(db, prompt_set_name: str) -> tuple[int, int]:
    with db.session_scope() as session:
        repo = GroupRepository(session)
        run = repo.get_or_create_group("run", f"{prompt_set_name}/root")
        stored = repo.get_or_create_group("prompt_set", prompt_set_name)
    return run, stored


async def execute(db, llm_server, ps, run_group_id, prompt_set_group_id):
    def make_service(provider, model):
        client = OpenAIProvider(KEY, model, base_url=llm_server.openai_base_url, timeout=60)
        return InferenceService(client, db, max_retries=0, close_provider=True)

    return await runs.execute_prompt_set(
        db,
        ps,
        run_group_id=run_group_id,
        prompt_set_group_id=prompt_set_group_id,
        make_service=make_service,
    )


def members(db, group_id) -> list[tuple[int, str]]:
    """(position, item key) of each member, in position order."""
    with db.session_scope() as session:
        return [
            (m.position, m.call.metadata_json["item_key"])
            for m in GroupRepository(session).get_group_members(group_id)
        ]


async def test_positions_are_unique_and_follow_item_order(db, llm_server):
    # The first target is answered only once the server has all four calls of the second, so
    # the second one's calls complete first (each target has a service and slots of its own).
    fast_sent, fast = threading.Event(), itertools.count(1)

    def slow_after_fast(request):
        if request.body["model"] == "slow-model":
            fast_sent.wait()
        elif next(fast) == 4:
            fast_sent.set()

    llm_server.fault_fn = slow_after_fast
    ps = prompt_set(TWO_TARGETS)
    run_id, stored_id = groups(db, ps.name)
    try:
        report = await execute(db, llm_server, ps, run_id, stored_id)
    finally:
        fast_sent.set()  # never leave the server's threads waiting
    assert report.outcomes["success"] == 8
    keys = [item.key for item in ps.work_items()]  # prompt, then target, then sample
    assert members(db, run_id) == list(enumerate(keys, start=1))
    assert [key for _, key in members(db, stored_id)] == keys


async def test_a_resumed_run_appends_after_the_first_execution(db, llm_server):
    ps = prompt_set(TWO_TARGETS)
    llm_server.fault_fn = lambda r: (
        Fault(status=503) if r.body["messages"][-1]["content"] == "second prompt" else None
    )
    run_id, stored_id = groups(db, ps.name)
    first = await execute(db, llm_server, ps, run_id, stored_id)
    assert first.unfinished_keys == [k.key for k in ps.work_items() if k.prompt_id == "p2"]
    llm_server.fault_fn = None
    await execute(db, llm_server, ps, run_id, stored_id)
    positions = [p for p, _ in members(db, run_id)]
    assert positions == list(range(1, 13))  # 8 first calls, then the 4 resent, unique
    resent = [key for position, key in members(db, run_id) if position > 8]
    assert resent == first.unfinished_keys  # in item order


SAMPLED = """
name: draws
prompts:
  - {id: q, text: "Pick a number"}
targets:
  - {provider: openai, model: gpt-4o-mini, params: {temperature: 1, seed: 40}}
samples: 3
"""


async def test_samples_are_sent_with_distinct_seeds(db, llm_server):
    ps = prompt_set(SAMPLED)
    run_id, stored_id = groups(db, ps.name)
    await execute(db, llm_server, ps, run_id, stored_id)
    assert sorted(r.body["seed"] for r in llm_server.requests) == [40, 41, 42]
    with db.session_scope() as session:
        calls = RawCallRepository(session).calls_in_group(run_id)
        sent = {c.metadata_json["sample_index"]: c.request_json["params"]["seed"] for c in calls}
        answers = {c.response_json["text"] for c in calls}
    assert sent == {0: 40, 1: 41, 2: 42}  # the seed actually sent, per sample
    assert len(answers) == 3  # a server that honours seeds gave three draws


async def test_a_fixed_sample_seed_keeps_one_seed(db, llm_server):
    ps = prompt_set(SAMPLED + "sample_seed: fixed\n")
    run_id, stored_id = groups(db, ps.name)
    report = await execute(db, llm_server, ps, run_id, stored_id)
    assert report.outcomes["success"] == 3  # three calls: the sample index tells them apart
    assert [r.body["seed"] for r in llm_server.requests] == [40, 40, 40]
    with db.session_scope() as session:
        calls = RawCallRepository(session).calls_in_group(run_id)
    assert sorted(c.metadata_json["sample_index"] for c in calls) == [0, 1, 2]


TOOLS = """
name: tooling
prompts:
  - {id: w, text: "Weather in Lima?"}
targets:
  - provider: openai
    model: gpt-4o-mini
    label: tools
    params:
      tools:
        - {type: function, function: {name: get_weather, parameters: {type: object}}}
      tool_choice: {type: function, function: {name: get_weather}}
  - {provider: openai, model: gpt-4o-mini, label: probs, params: {logprobs: true, top_logprobs: 2}}
"""


async def test_a_prompt_set_sends_tools_and_logprobs_and_keeps_what_came_back(db, llm_server):
    ps = prompt_set(TOOLS)
    run_id, stored_id = groups(db, ps.name)
    await execute(db, llm_server, ps, run_id, stored_id)
    sent = {r.body.get("tool_choice") is not None: r.body for r in llm_server.requests}
    assert sent[True]["tools"][0]["function"]["name"] == "get_weather"
    assert sent[False]["logprobs"] is True and sent[False]["top_logprobs"] == 2
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        calls = {c.metadata_json["target"]: c for c in repo.calls_in_group(run_id)}
        logprobs = repo.logprobs(calls["probs"].id)
    [tool_call] = calls["tools"].response_json["message"]["tool_calls"]
    assert tool_call["function"]["name"] == "get_weather"
    assert [t["token"] for t in logprobs["content"]] == ["echo:", " Weather", " in", " Lima?"]


async def test_a_locked_database_while_copying_members_is_retried(db, llm_server, monkeypatch):
    """The run's calls are copied to its prompt set's group page by page; a page whose write
    meets a locked database (SQLite under load) is written again, each call once."""
    ps = prompt_set(TWO_TARGETS)
    run_id, stored_id = groups(db, ps.name)
    real = GroupRepository.add_group_members
    refused = []

    def locked_once(self, group_id, calls, role=None):
        if group_id == stored_id and not refused:
            real(self, group_id, calls, role)  # written, then the transaction fails
            refused.append(group_id)
            raise OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
        return real(self, group_id, calls, role)

    monkeypatch.setattr(GroupRepository, "add_group_members", locked_once)
    report = await execute(db, llm_server, ps, run_id, stored_id)
    assert report.outcomes["success"] == 8 and refused == [stored_id]
    keys = [item.key for item in ps.work_items()]
    assert [key for _, key in members(db, stored_id)] == keys
