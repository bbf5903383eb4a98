"""Chat requests ready to send: everything a caller gives is validated here, before any call
(bad input raises `ValueError`, nothing is sent or written), optional preprocessing is applied,
and each request gets its identity (`compute_request_hash`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...providers.base import Message, check_params, to_messages
from ..preprocessing import PromptPreprocessor
from ..request_identity import canonical_json, chat_request_hash

# Keys the service writes into metadata_json; caller-supplied extra_metadata may not use them.
RESERVED_METADATA_KEYS = frozenset(
    {
        "request_hash",
        "attempts",
        "attempt_errors",
        "sample_index",
        "preprocessing",
        "cost_usd",
        "provider_request_id",
        "response_model",
        "elapsed_ms",
    }
)
# What a dict item of `run_batch` may hold.
BATCH_ITEM_KEYS = frozenset({"prompt", "messages", "sample_index", "extra_metadata", "params"})


def compute_request_hash(
    provider: str,
    model: str | None,
    messages: list[Message],
    params: Mapping[str, Any],
    sample_index: int | None = None,
) -> str:
    """The identity used for dedup, the response cache and resuming runs: sha256 hex of the
    canonical JSON of the whole request (see `request_identity.chat_request_hash`)."""
    return chat_request_hash(provider, model, messages, params, sample_index)


@dataclass
class ChatRequest:
    """One validated call, ready to send."""

    messages: list[Message]
    params: dict[str, Any]
    model: str | None
    sample_index: int | None
    extra_metadata: dict[str, Any]
    prompt: str | None  # the plain prompt as sent, when the caller gave one
    preprocessing: dict[str, Any] | None
    request_hash: str
    cache: bool

    @property
    def request_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": self.messages, "params": self.params}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return out

    def estimated_tokens(self) -> int:
        """Characters / 4 plus the completion limit: what a tokens-per-minute bucket reserves."""
        chars = sum(len(str(m.get("content") or "")) for m in self.messages)
        limit = self.params.get("max_tokens") or self.params.get("max_completion_tokens") or 0
        return math.ceil(chars / 4) + (limit if isinstance(limit, int) else 0)


class RequestBuilder:
    """Turns what a caller passes (a prompt, messages, a batch item) into `ChatRequest`s for
    one provider, preprocessing message texts when given a `PromptPreprocessor`."""

    def __init__(
        self,
        provider_name: str,
        default_model: str | None,
        preprocessor: PromptPreprocessor | None = None,
    ):
        self.provider_name = provider_name
        self.default_model = default_model
        self.preprocessor = preprocessor

    def build(
        self,
        prompt: str | None,
        messages: list[Message] | None,
        sample_index: int | None,
        extra_metadata: Mapping[str, Any] | None,
        cache: bool,
        params: dict[str, Any],
    ) -> ChatRequest:
        check_params(params)
        model = params.pop("model", None) or self.default_model
        original = to_messages(prompt, messages)
        _check_sample_index(sample_index)
        extra = _extra_metadata(extra_metadata)
        sent, sent_prompt, preprocessing = original, prompt, None
        if self.preprocessor is not None:
            sent, sent_prompt, preprocessing = self._preprocess(prompt, original)
        try:  # hashing serialises the whole request: that is the params check too
            request_hash = compute_request_hash(
                self.provider_name, model, sent, params, sample_index
            )
        except ValueError as exc:
            raise ValueError(f"messages and params must be JSON-serialisable: {exc}") from exc
        return ChatRequest(
            messages=sent,
            params=params,
            model=model,
            sample_index=sample_index,
            extra_metadata=extra,
            prompt=sent_prompt,
            preprocessing=preprocessing,
            request_hash=request_hash,
            cache=bool(cache),
        )

    def build_item(
        self,
        index: int,
        item: Any,
        extra_metadata: Mapping[str, Any] | None,
        cache: bool,
        params: Mapping[str, Any],
    ) -> ChatRequest:
        """One `run_batch` item: a prompt, a message list, or a dict (see BATCH_ITEM_KEYS).
        Errors name the item (`prompts[3]: ...`)."""
        try:
            if isinstance(item, str):
                return self.build(item, None, None, extra_metadata, cache, dict(params))
            if isinstance(item, list):
                return self.build(None, item, None, extra_metadata, cache, dict(params))
            if isinstance(item, Mapping):
                unknown = set(item) - BATCH_ITEM_KEYS
                if unknown:
                    raise ValueError(f"unknown key(s) {sorted(unknown)}")
                extra = {**(extra_metadata or {}), **(item.get("extra_metadata") or {})}
                merged = {**params, **(item.get("params") or {})}
                return self.build(
                    item.get("prompt"),
                    item.get("messages"),
                    item.get("sample_index"),
                    extra,
                    cache,
                    merged,
                )
            raise ValueError(
                f"expected a prompt, a message list or a dict, got {type(item).__name__}"
            )
        except ValueError as exc:
            raise ValueError(f"prompts[{index}]: {exc}") from exc

    def _preprocess(self, prompt: str | None, original: list[Message]):
        """(messages as sent, prompt as sent, the preprocessing record for metadata)."""
        assert self.preprocessor is not None
        sent: list[Message] = []
        changed: list[str] = []
        for message in original:
            content = message.get("content")
            if isinstance(content, str):
                cleaned, steps = self.preprocessor.process(content)
                changed.extend(s for s in steps if s not in changed)
                message = {**message, "content": cleaned}
            sent.append(message)
        record: dict[str, Any] = {"steps": self.preprocessor.steps, "changed": changed}
        sent_prompt = prompt
        if prompt is not None:
            sent_prompt = sent[0]["content"]
            if sent_prompt != prompt:
                record["original_prompt"] = prompt
        elif sent != original:
            record["original_messages"] = original
        return sent, sent_prompt, record


def _check_sample_index(sample_index: Any) -> None:
    if sample_index is None:
        return
    if not isinstance(sample_index, int) or isinstance(sample_index, bool) or sample_index < 0:
        raise ValueError(f"sample_index must be an integer >= 0 (got {sample_index!r})")


def _extra_metadata(extra_metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    extra = dict(extra_metadata or {})
    clash = sorted(RESERVED_METADATA_KEYS.intersection(extra))
    if clash:
        raise ValueError(f"extra_metadata may not set {clash}: the service writes them")
    if extra:
        try:
            canonical_json(extra)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"extra_metadata must be JSON-serialisable: {exc}") from exc
    return extra


def jsonable_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The batch's params for its group's metadata (repr() for what JSON cannot hold)."""
    out = {k: v for k, v in params.items() if k != "model"}
    with contextlib.suppress(TypeError, ValueError):
        canonical_json(out)
        return out
    return {k: repr(v) for k, v in out.items()}
