"""`OfflineProvider`: no network, deterministic replies — dry runs, demos and failure drills.

The reply is derived from the whole request (messages, params, sample index; at temperature 0
not the sample index or seed, like greedy decoding) and starts with "[offline]", so nobody
mistakes it for a model's answer — unless the request scripts it: `offline_answers` gives exact
answer quotas by sample index (known-answer tests of the variation metrics), and
`offline_judge` makes it a deterministic entailment judge (`offline_judge.py`). Token counts
are whitespace words. Log-probabilities, when asked for, are derived from the request; a
scripted answer's are known: SCRIPTED_LOGPROB per token. Optional simulated latency and
failures are deterministic too: each is drawn from a generator seeded by the request and by how
many times this provider has seen that request, so a drill replays identically and a retried
request can succeed where its first attempt failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from typing import Any

from .base import (
    BaseLLMProvider,
    Message,
    ProviderError,
    ProviderResponse,
)
from .offline_judge import JUDGE_PARAM, judge_reply

DEFAULT_MODEL = "offline-echo"
FAILURE_KINDS = ("rate_limit", "server_error", "timeout")
_FAILURES = {
    "rate_limit": dict(
        status_code=429, error_type="rate_limit", message="HTTP 429: simulated rate limit"
    ),
    "server_error": dict(
        status_code=503, error_type="server_error", message="HTTP 503: simulated outage"
    ),
    "timeout": dict(
        status_code=None, error_type="timeout", message="request timed out (simulated)"
    ),
    "bad_request": dict(
        status_code=400, error_type="bad_request", message="HTTP 400: simulated bad request"
    ),
}


def words(text: str) -> int:
    return len(text.split())


# Scripted mode: params["offline_answers"] = {answer: count, ...} (one prompt's quota, see
# services/prompt_sets/scripting.py) makes the reply the scripted answer of the sample.
SCRIPT_PARAM = "offline_answers"
# Each token of a scripted answer has this log-probability, so an answer's likelihood is known
# (words x SCRIPTED_LOGPROB) and likelihood-based semantic entropy has a known value.
SCRIPTED_LOGPROB = -0.25


def scripted_answer(quota: Any, sample_index: int | None) -> str:
    """Sample i's answer: position i (0 when None) in the quota's answers repeated by their
    counts, most frequent first (ties in code-point order of the answers), cycling past the
    end: ten samples of {Canberra: 7, Sydney: 3} are exactly seven "Canberra" then three
    "Sydney". Not the order written: a prompt set stored as PostgreSQL JSONB loses its key
    order, and a run must send the same answers on either backend."""
    if (
        not isinstance(quota, dict)
        or not quota
        or not all(isinstance(a, str) and isinstance(c, int) and c > 0 for a, c in quota.items())
    ):
        raise ValueError(
            f"offline: {SCRIPT_PARAM} must map answers to positive counts (got {quota!r})"
        )
    position = (sample_index or 0) % sum(quota.values())
    for answer, count in sorted(quota.items(), key=lambda item: (-item[1], item[0])):
        if position < count:
            return answer
        position -= count
    raise AssertionError("unreachable: position < total")


class OfflineProvider(BaseLLMProvider):
    provider_name = "offline"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        latency_s: float = 0.0,
        latency_jitter_s: float = 0.0,
        failure_rate: float = 0.0,
        failure_kinds: tuple[str, ...] = FAILURE_KINDS,
        retry_after_s: float | None = None,
        seed: int = 0,
    ):
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"offline: failure_rate must be between 0 and 1 (got {failure_rate})")
        unknown = [k for k in failure_kinds if k not in _FAILURES]
        if unknown or not failure_kinds:
            raise ValueError(
                f"offline: failure_kinds must be a non-empty subset of {sorted(_FAILURES)}"
                f" (got {list(failure_kinds)})"
            )
        if latency_s < 0 or latency_jitter_s < 0:
            raise ValueError("offline: latency_s and latency_jitter_s must be >= 0")
        self._model = model or DEFAULT_MODEL
        self.latency_s = latency_s
        self.latency_jitter_s = latency_jitter_s
        self.failure_rate = failure_rate
        self.failure_kinds = tuple(failure_kinds)
        self.retry_after_s = retry_after_s
        self.seed = seed
        self._seen: Counter[str] = Counter()

    async def _complete(
        self, chat: list[Message], model: str, params: dict[str, Any], sample_index: int | None
    ) -> ProviderResponse:
        canonical = json.dumps(
            {"model": model, "messages": chat, "params": params, "sample_index": sample_index},
            sort_keys=True,
            ensure_ascii=False,
            separators=(",", ":"),
            default=str,
        )
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        occurrence = self._seen[digest]
        self._seen[digest] += 1
        rng = random.Random(f"{self.seed}:{digest}:{occurrence}")

        started = time.perf_counter()
        delay = self.latency_s + self.latency_jitter_s * rng.random()
        if delay:
            await asyncio.sleep(delay)
        if self.failure_rate and rng.random() < self.failure_rate:
            kind = rng.choice(self.failure_kinds)
            spec = _FAILURES[kind]
            raise ProviderError(
                f"offline: {spec['message']}",
                self.provider_name,
                status_code=spec["status_code"],
                retryable=kind != "bad_request",
                retry_after=self.retry_after_s if kind == "rate_limit" else None,
                error_type=spec["error_type"],
                request_id=f"offline-{digest[:12]}-{occurrence}",
            )

        answer = _answer_digest(model, chat, params, digest)
        message, finish = _reply(chat, params, answer, sample_index)
        text = message.get("content") or ""
        prompt_tokens = sum(words(str(m.get("content") or "")) for m in chat)
        completion_tokens = words(text) if text else words(json.dumps(message.get("tool_calls")))
        response_id = f"offline-{digest[:24]}"
        logprobs = _logprobs(text, answer, params) if params.get("logprobs") else None
        return ProviderResponse(
            text=text,
            provider=self.provider_name,
            model=model,
            tokens=prompt_tokens + completion_tokens,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            finish_reason=finish,
            metadata={
                "offline": True,
                "response_id": response_id,
                "response_model": model,
                "request_id": f"{response_id}-{occurrence}",
            },
            raw_response={
                "id": response_id,
                "model": model,
                "text": text,
                "finish_reason": finish,
                "offline": True,
            },
            message=message,
            logprobs=logprobs,
        )

    def __repr__(self) -> str:
        return f"OfflineProvider(model={self._model!r}, failure_rate={self.failure_rate})"


def _greedy(params: dict[str, Any]) -> bool:
    """Temperature 0 without a script: the reply, like greedy decoding's, is the same for every
    sample and seed (so a deterministic target's samples agree, as a real model's mostly do)."""
    return params.get("temperature") == 0 and SCRIPT_PARAM not in params


def _answer_digest(model: str, chat: list[Message], params: dict[str, Any], digest: str) -> str:
    if not _greedy(params):
        return digest
    kept = {k: v for k, v in params.items() if k != "seed"}
    canonical = json.dumps(
        {"model": model, "messages": chat, "params": kept}, sort_keys=True, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _reply(
    chat: list[Message], params: dict[str, Any], digest: str, sample_index: int | None
) -> tuple[dict[str, Any], str]:
    """(assistant message, finish reason): a tool call when the tools and tool_choice ask for
    one and the user spoke last, else text naming the last user message (or tool result)."""
    last = chat[-1] if chat else {}
    tool = _chosen_tool(params)
    if tool is not None and last.get("role") == "user":
        call = {
            "id": f"call_{digest[:12]}",
            "type": "function",
            "function": {"name": tool["name"], "arguments": _arguments(tool, _text(last))},
        }
        return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    quota = params.get(SCRIPT_PARAM)
    if params.get(JUDGE_PARAM) is not None:  # a scripted entailment judge
        text = judge_reply(params[JUDGE_PARAM], _text(last))
    elif quota is not None:  # scripted answers: exact shares across a cell's samples
        text = scripted_answer(quota, sample_index)
    elif last.get("role") == "tool":
        text = f"[offline] reply {digest[:8]} to tool result: {_text(last)[:500]}"
    else:
        last_user = next((_text(m) for m in reversed(chat) if m.get("role") == "user"), "")
        text = f"[offline] reply {digest[:8]} to: {last_user[:500]}"
    if (
        sample_index is not None
        and quota is None
        and params.get(JUDGE_PARAM) is None
        and not _greedy(params)
    ):
        text += f" (sample {sample_index})"
    finish = "stop"
    max_tokens = params.get("max_tokens") or params.get("max_completion_tokens")
    if isinstance(max_tokens, int) and max_tokens > 0 and words(text) > max_tokens:
        text, finish = " ".join(text.split()[:max_tokens]), "length"
    return {"role": "assistant", "content": text}, finish


def _text(message: Message) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _chosen_tool(params: dict[str, Any]) -> dict[str, Any] | None:
    """The function the offline model calls: the one `tool_choice` names, else the first tool
    when tool_choice is "auto" (the default) or "required"; none for "none"."""
    functions = [t.get("function") for t in params.get("tools") or [] if isinstance(t, dict)]
    functions = [f for f in functions if isinstance(f, dict) and f.get("name")]
    choice = params.get("tool_choice", "auto")
    if not functions or choice == "none":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((f for f in functions if f["name"] == name), None)
    return functions[0]


def _arguments(function: dict[str, Any], text: str) -> str:
    """JSON arguments for `function`: each declared property gets a value of its type."""
    properties = ((function.get("parameters") or {}).get("properties")) or {}
    values: dict[str, Any] = {}
    for name in sorted(properties):
        kind = (properties[name] or {}).get("type")
        if kind in ("number", "integer"):
            values[name] = words(text)
        elif kind == "boolean":
            values[name] = True
        else:
            values[name] = text[:100]
    return json.dumps(values, ensure_ascii=False, sort_keys=True)


def _logprobs(text: str, digest: str, params: dict[str, Any]) -> dict[str, Any]:
    """OpenAI-shaped log-probabilities for `text`, one entry per token (a word and the space
    before it), derived from the request so that they repeat exactly."""
    rng = random.Random(f"logprobs:{digest}")
    top = params.get("top_logprobs") or 0
    scripted = params.get(SCRIPT_PARAM) is not None
    tokens = [t if i == 0 else f" {t}" for i, t in enumerate(text.split(" "))] if text else []
    content = []
    for token in tokens:
        logprob = SCRIPTED_LOGPROB if scripted else -round(rng.random() * 2.0, 6)
        alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        for k in range(1, top):
            alt = f"{token.strip()}~{k}"
            alternatives.append(
                {
                    "token": alt,
                    "logprob": round(logprob - k - rng.random(), 6),
                    "bytes": list(alt.encode()),
                }
            )
        entry = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        entry["top_logprobs"] = alternatives[:top]
        content.append(entry)
    return {"content": content, "refusal": None}
