"""`ConversationService`: multi-turn chats on top of `InferenceService`.

With a database a conversation is a `conversation` group (name = the conversation id,
metadata = the system prompt) whose members are its turns in order; each turn's raw_calls row
holds the full message list that was sent and the reply. The history is therefore rebuilt from
the database alone — the last successful turn's messages plus its reply — and a conversation
can be resumed by any process. Without a database, history lives in memory.

A reply may be tool calls instead of text: the history keeps them, and `send_turn(...,
tool_results={call id: result})` sends the results back as `tool` messages.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from typing import Any

from ..db import DatabaseConnection, GroupRepository
from ..log import get_logger
from ..providers.base import BaseLLMProvider, Message
from .inference import InferenceService

logger = get_logger(__name__)

GROUP_TYPE = "conversation"


class ConversationService:
    def __init__(
        self,
        inference: InferenceService | BaseLLMProvider,
        db: DatabaseConnection | None = None,
    ):
        # An InferenceService built here is ours to close (aclose); the provider stays the
        # caller's.
        self._owns_inference = isinstance(inference, BaseLLMProvider)
        if isinstance(inference, BaseLLMProvider):
            inference = InferenceService(inference, db)
        self.inference = inference
        self.db = db if db is not None else inference.db
        if self.db is not None and inference.db is None:
            raise ValueError("give the database to the InferenceService so turns are captured")
        self._history: dict[str, list[Message]] = {}
        self._group_ids: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def aclose(self) -> None:
        """Close the InferenceService this service built (not one it was given)."""
        if self._owns_inference:
            await self.inference.aclose()

    async def __aenter__(self) -> ConversationService:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def start(
        self,
        system_prompt: str | None = None,
        *,
        conversation_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """A new conversation; returns its id (a string, the group's name with a database)."""
        cid = conversation_id or uuid.uuid4().hex
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError("system_prompt must be a string")
        if cid in self._history:
            raise ValueError(f"conversation {cid!r} already exists")
        history: list[Message] = (
            [{"role": "system", "content": system_prompt}] if system_prompt else []
        )
        if self.db is not None:
            group_meta = {**(metadata or {}), "system_prompt": system_prompt}

            def create() -> int:
                with self.db.session_scope() as session:
                    repo = GroupRepository(session)
                    if repo.find_group(GROUP_TYPE, cid) is not None:
                        raise ValueError(f"conversation {cid!r} already exists")
                    return repo.create_group(GROUP_TYPE, cid, metadata_json=group_meta)

            self._group_ids[cid] = await asyncio.to_thread(create)
        self._history[cid] = history
        logger.info("conversation %s started (group %s)", cid, self._group_ids.get(cid))
        return cid

    async def send(self, conversation_id: str, user_message: str, **params: Any) -> str:
        """Send the next user message with the whole history; returns the reply text.
        A failed call raises `ProviderError` (captured as a turn) and leaves the history as
        it was."""
        if not isinstance(user_message, str):
            raise ValueError("user_message must be a string")
        return (await self.send_turn(conversation_id, user_message, **params))["response"]

    async def send_turn(
        self,
        conversation_id: str,
        user_message: str | None = None,
        *,
        tool_results: Mapping[str, Any] | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """The next turn: the results of the tool calls the last reply asked for (`{tool call
        id: result}`, sent as `tool` messages), then `user_message` if given. Returns the
        result of `run_inference` (its `message` holds the reply as the API returned it, tool
        calls included)."""
        if user_message is None and not tool_results:
            raise ValueError("give a user_message, tool_results or both")
        if user_message is not None and not isinstance(user_message, str):
            raise ValueError("user_message must be a string")
        lock = self._locks.setdefault(conversation_id, asyncio.Lock())
        async with lock:
            history = await self._load(conversation_id)
            messages = [*history, *_tool_messages(history, tool_results or {})]
            if user_message is not None:
                messages.append({"role": "user", "content": user_message})
            turn = sum(1 for m in messages if m["role"] == "user")
            result = await self.inference.run_inference(
                messages=messages,
                group_id=self._group_ids.get(conversation_id),
                group_role="turn",
                extra_metadata={"conversation_id": conversation_id, "turn": turn},
                **params,
            )
            reply = _assistant_message(result.get("message"), result["response"])
            self._history[conversation_id] = [*messages, reply]
            return result

    async def history(self, conversation_id: str) -> list[Message]:
        """The messages so far (system prompt, then user/assistant turns)."""
        return [dict(m) for m in await self._load(conversation_id)]

    async def _load(self, cid: str) -> list[Message]:
        if cid in self._history:
            return self._history[cid]
        if self.db is None:
            raise KeyError(f"unknown conversation {cid!r}")
        group_id, history = await asyncio.to_thread(self._load_from_db, cid)
        self._group_ids[cid] = group_id
        self._history[cid] = history
        logger.info("conversation %s resumed from the database (%d messages)", cid, len(history))
        return history

    def _load_from_db(self, cid: str) -> tuple[int, list[Message]]:
        assert self.db is not None
        with self.db.session_scope() as session:
            repo = GroupRepository(session)
            group = repo.find_group(GROUP_TYPE, cid)
            if group is None:
                raise KeyError(f"unknown conversation {cid!r}")
            turns = [m.call for m in repo.get_group_members(group.id) if m.call.status == "success"]
            if not turns:
                system = (group.metadata_json or {}).get("system_prompt")
                return group.id, ([{"role": "system", "content": system}] if system else [])
            last = turns[-1]
            preprocessing = (last.metadata_json or {}).get("preprocessing") or {}
            sent = preprocessing.get("original_messages") or last.request_json["messages"]
            response = last.response_json or {}
            reply = _assistant_message(response.get("message"), response.get("text", ""))
            return group.id, [*sent, reply]


def _assistant_message(returned: Mapping[str, Any] | None, text: str | None) -> Message:
    """The reply as it goes back into the history: its text, or the tool calls it made
    (without the response-only fields an API would refuse in a request)."""
    message: Message = {"role": "assistant", "content": text or None}
    if returned and returned.get("tool_calls"):
        message["tool_calls"] = returned["tool_calls"]
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_messages(history: list[Message], results: Mapping[str, Any]) -> list[Message]:
    """`tool` messages answering the last reply's tool calls, in the order it made them."""
    if not results:
        return []
    last = history[-1] if history else {}
    asked = [c.get("id") for c in last.get("tool_calls") or [] if isinstance(c, Mapping)]
    unknown = sorted(set(results) - set(asked))
    if unknown:
        raise ValueError(
            f"tool_results for {unknown}: the last reply asked for {asked or 'no tool calls'}"
        )
    return [
        {"role": "tool", "tool_call_id": call_id, "content": _tool_content(results[call_id])}
        for call_id in asked
        if call_id in results
    ]


def _tool_content(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
