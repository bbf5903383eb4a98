"""ConversationService: history in memory or in the database, resumable by another process."""

import subprocess
import sys
import textwrap
import threading

import pytest

from study_query_dagster.db import GroupRepository
from study_query_dagster.providers import OfflineProvider, OpenAIProvider, ProviderError
from study_query_dagster.services import ConversationService, InferenceService
from tests.support.fake_llm_server import Fault

KEY = "sk-conversation-test-0123456789"


@pytest.fixture
async def provider(llm_server):
    async with OpenAIProvider(KEY, "gpt-4o-mini", base_url=llm_server.openai_base_url) as p:
        yield p


async def test_in_memory_conversation_sends_full_history(provider, llm_server):
    chat = ConversationService(provider)
    cid = await chat.start("You are terse.")
    assert await chat.send(cid, "Hi") == "echo: Hi"
    assert await chat.send(cid, "And again?") == "echo: And again?"
    assert llm_server.requests[-1].body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "echo: Hi"},
        {"role": "user", "content": "And again?"},
    ]
    assert (await chat.history(cid))[-1] == {"role": "assistant", "content": "echo: And again?"}
    with pytest.raises(KeyError, match="unknown conversation"):
        await chat.history("nope")


async def test_conversation_is_a_group_of_turns_and_survives_failures(db, provider, llm_server):
    chat = ConversationService(InferenceService(provider, db, max_retries=0))
    cid = await chat.start("System rules.", metadata={"topic": "maths"})
    await chat.send(cid, "one", temperature=0)
    llm_server.script(Fault(status=400))
    with pytest.raises(ProviderError):
        await chat.send(cid, "this turn fails")
    await chat.send(cid, "two")
    assert [m["content"] for m in await chat.history(cid)] == [
        "System rules.",
        "one",
        "echo: one",
        "two",
        "echo: two",
    ]
    with db.session_scope() as session:
        repo = GroupRepository(session)
        group = repo.find_group("conversation", cid)
        assert group.metadata_json == {"topic": "maths", "system_prompt": "System rules."}
        turns = repo.get_group_members(group.id)
        assert [(m.position, m.role, m.call.status) for m in turns] == [
            (1, "turn", "success"),
            (2, "turn", "failed"),
            (3, "turn", "success"),
        ]
        assert [m.call.metadata_json["turn"] for m in turns] == [1, 2, 2]
        assert {m.call.metadata_json["conversation_id"] for m in turns} == {cid}
    with pytest.raises(ValueError, match="already exists"):
        await ConversationService(InferenceService(provider, db)).start(conversation_id=cid)


async def test_a_conversation_resumes_from_the_database_in_a_fresh_service(db):
    chat = ConversationService(InferenceService(OfflineProvider(), db))
    cid = await chat.start()
    assert await chat.history(cid) == []
    first = await chat.send(cid, "remember 42")
    fresh = ConversationService(InferenceService(OfflineProvider(), db))
    assert await fresh.history(cid) == [
        {"role": "user", "content": "remember 42"},
        {"role": "assistant", "content": first},
    ]
    await fresh.send(cid, "what did I say?")
    assert len(await fresh.history(cid)) == 4


RESUME_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from study_query_dagster.db import DatabaseConnection
    from study_query_dagster.providers import OpenAIProvider
    from study_query_dagster.services import ConversationService, InferenceService

    db_url, base_url, cid = sys.argv[1:4]

    async def main():
        provider = OpenAIProvider("sk-other-process-123456", base_url=base_url)
        chat = ConversationService(InferenceService(provider, DatabaseConnection(db_url)))
        reply = await chat.send(cid, "third question")
        print(json.dumps({"reply": reply, "history": await chat.history(cid)}))
        await provider.aclose()

    asyncio.run(main())
    """
)


async def test_a_conversation_resumed_in_a_new_process_continues_with_full_history(
    db, db_url, provider, llm_server, tmp_path
):
    import json

    chat = ConversationService(InferenceService(provider, db))
    cid = await chat.start("Be helpful.")
    await chat.send(cid, "first question")
    await chat.send(cid, "second question")
    db.dispose()

    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), db_url, llm_server.openai_base_url, cid],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    output = json.loads(done.stdout.strip().splitlines()[-1])
    expected = [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "echo: first question"},
        {"role": "user", "content": "second question"},
        {"role": "assistant", "content": "echo: second question"},
        {"role": "user", "content": "third question"},
    ]
    # the other process sent the whole history it rebuilt from the database alone
    assert llm_server.requests[-1].body["messages"] == expected
    assert llm_server.requests[-1].headers["authorization"] == "Bearer sk-other-process-123456"
    assert output["reply"] == "echo: third question"
    assert output["history"] == [*expected, {"role": "assistant", "content": output["reply"]}]
    with db.session_scope() as session:
        repo = GroupRepository(session)
        assert len(repo.get_group_members(repo.find_group("conversation", cid).id)) == 3


async def test_closing_closes_the_service_it_built_but_not_the_callers(db):
    def capture_threads() -> int:
        return sum(t.name.startswith("capture") for t in threading.enumerate())

    before = capture_threads()
    provider = OfflineProvider()
    async with ConversationService(provider, db) as chat:
        cid = await chat.start("Be brief.")
        await chat.send(cid, "hello")
        assert capture_threads() == before + 1
    assert capture_threads() == before  # its own InferenceService was closed

    given = InferenceService(provider, db)
    async with ConversationService(given) as chat:
        await chat.send(await chat.start(), "hello")
    assert capture_threads() == before + 1  # the caller's service is the caller's to close
    await given.aclose()
    assert capture_threads() == before
