"""A real HTTP server on 127.0.0.1 that speaks the OpenAI, Azure OpenAI and Hyperbolic dialects,
with configurable latency and scripted faults. Tests point the real clients at it.

Endpoints
  POST /v1/chat/completions                               OpenAI, Hyperbolic (Bearer auth)
  POST /v1/embeddings                                     OpenAI (Bearer auth)
  POST /openai/deployments/{deployment}/chat/completions  Azure (api-key header, ?api-version=)
  POST /openai/deployments/{deployment}/embeddings        Azure

Replies are deterministic: a chat reply is "echo: <last user message>" (plus the sample seed,
if any), usage counts whitespace tokens; an embedding is a unit vector derived from the text's
sha256 (`dimensions` components, default 16), returned as floats or base64 float32. A request
with `tools` (and `tool_choice` other than "none") whose last message is the user's gets a tool
call instead; after a `tool` message the reply echoes the tool's result. `logprobs: true` adds
deterministic per-word log-probabilities (`top_logprobs` alternatives each). `message_fn`
replaces the assistant message altogether (content parts, refusals...).

Quota: `quota = Quota(requests=N, window_s=W)` enforces N requests per fixed window of W
seconds (of its own `clock`, the machine's by default): every response carries OpenAI's `x-ratelimit-*` headers, and a request over the quota
gets a 429 with `retry-after-ms` (until the window ends), recorded with fault "quota".

Faults: `script(Fault(...), ..., match="embeddings")` queues faults consumed in order by the
next matching requests; `fault_fn(request) -> Fault | None` decides per request (storms);
`unknown_models` answers 404 for those models/deployments; `embedding_fn` replaces the
deterministic vectors (e.g. to make two calls for one text differ); `ignore_dimensions` answers
`default_dimensions` components whatever was asked. Every request is recorded.

Races: `hold(until, match=...)` keeps the answers to matching requests back until
`until(the matching requests received so far)` is true, e.g. until two clients have both sent,
so a test forces an interleaving instead of hoping latency produces it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np


@dataclass
class Fault:
    """What to do instead of answering normally.

    kind: "status" (HTTP `status` with an OpenAI-style error body, or `body` verbatim),
    "detail" (HTTP `status` with FastAPI's body, {"detail": `body`}), "reset" (close the
    connection with a TCP reset),
    "hang" (send nothing for `hang_s` seconds, or never with `hang_s=None`, then close; a
    client that gives up first ends the hang), "drop" (close the connection without a response),
    "malformed" (200 with a truncated JSON body), "content_filter" (Azure's 400 refusal),
    "slow" (answer normally after `hang_s` seconds, or only once the client hung up with
    `hang_s=None`: a call a test cancels, never one that a slow machine lets finish).
    """

    kind: str = "status"
    status: int = 500
    retry_after: float | None = None
    retry_after_ms: int | None = None
    body: str | None = None
    content_type: str = "application/json"
    hang_s: float | None = 30.0


@dataclass
class Quota:
    """At most `requests` requests per fixed window of `window_s` seconds (windows start at the
    first request the quota sees), in the time `clock()` tells: a test that gives the client's
    limiter the same clock (`tests.support.clock.ManualClock`) makes the windows independent of
    the machine's speed."""

    requests: int
    window_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    started: float | None = None
    window: int = -1
    used: int = 0
    refused: int = 0  # 429s sent

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """(allowed, the x-ratelimit headers to send) for one request arriving at `now`."""
        if self.started is None:
            self.started = now
        window = int((now - self.started) // self.window_s)
        if window != self.window:
            self.window, self.used = window, 0
        allowed = self.used < self.requests
        if allowed:
            self.used += 1
        else:
            self.refused += 1
        ends = self.started + (window + 1) * self.window_s
        reset_ms = max(math.ceil((ends - now) * 1000), 1)
        headers = {
            "x-ratelimit-limit-requests": str(self.requests),
            "x-ratelimit-remaining-requests": str(self.requests - self.used),
            "x-ratelimit-reset-requests": f"{reset_ms}ms",
        }
        if not allowed:
            headers["retry-after-ms"] = str(reset_ms)
        return allowed, headers


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    at: float
    fault: str | None = None

    @property
    def dialect(self) -> str:
        return "azure" if self.path.startswith("/openai/deployments/") else "openai"

    @property
    def kind(self) -> str:
        return "embeddings" if self.path.endswith("/embeddings") else "chat"


def words(text: str) -> int:
    return len(text.split())


def fake_logprobs(text: str, top: int) -> dict:
    """Per-word log-probabilities derived from the text (so they repeat exactly)."""
    content = []
    for i, word in enumerate(text.split(" ") if text else []):
        token = word if i == 0 else f" {word}"
        digest = hashlib.sha256(f"{i}:{token}".encode()).digest()
        logprob = -round(digest[0] / 64, 4)
        alternatives = [{"token": token, "logprob": logprob, "bytes": list(token.encode())}]
        alternatives += [
            {"token": f"{word}#{k}", "logprob": round(logprob - k, 4), "bytes": None}
            for k in range(1, top)
        ]
        content.append(
            {
                "token": token,
                "logprob": logprob,
                "bytes": list(token.encode()),
                "top_logprobs": alternatives[:top],
            }
        )
    return {"content": content, "refusal": None}


def fake_embedding(text: str, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).normal(size=dimensions)
    return (vector / np.linalg.norm(vector)).astype(np.float32).tolist()


@dataclass
class _Queued:
    fault: Fault
    match: str | None


class FakeLLMServer:
    def __init__(self, latency_s: float = 0.0, default_dimensions: int = 16):
        self.latency_s = latency_s
        self.default_dimensions = default_dimensions
        self.requests: list[RecordedRequest] = []
        self.unknown_models: set[str] = set()
        self.fault_fn: Callable[[RecordedRequest], Fault | None] | None = None
        self.reply_fn: Callable[[RecordedRequest], str] | None = None
        # (request, text, dimensions) -> vector, instead of the deterministic fake_embedding.
        self.embedding_fn: Callable[[RecordedRequest, str, int], list[float]] | None = None
        # request -> the assistant message to answer with (instead of the echo or a tool call)
        self.message_fn: Callable[[RecordedRequest], dict] | None = None
        self.quota: Quota | None = None
        # Answer `default_dimensions` components whatever `dimensions` asks (as some servers do).
        self.ignore_dimensions = False
        self.require_auth = True
        self.in_flight = 0  # POST requests being handled now
        self.max_in_flight = 0  # the most at once since start/reset
        self._queue: list[_Queued] = []
        self._lock = threading.Lock()
        self._gate = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)  # notified when a request has been handled
        self._hold: tuple[Callable[[list[RecordedRequest]], bool], str | None] | None = None
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        server = self

        class Handler(_Handler):
            fake = server

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self.release()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reset(self) -> None:
        self.release()
        with self._lock:
            self.requests.clear()
            self._queue.clear()
        self.latency_s = 0.0
        self.unknown_models = set()
        self.fault_fn = None
        self.reply_fn = None
        self.embedding_fn = None
        self.message_fn = None
        self.quota = None
        self.ignore_dimensions = False
        self.require_auth = True
        self.max_in_flight = self.in_flight

    # --- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    # --- faults and inspection -------------------------------------------------------------

    def script(self, *faults: Fault, match: str | None = None) -> None:
        """Queue faults for the next requests whose path contains `match` (any if None)."""
        with self._lock:
            self._queue.extend(_Queued(f, match) for f in faults)

    def hold(
        self, until: Callable[[list[RecordedRequest]], bool], match: str | None = None
    ) -> None:
        """Answer no request whose path contains `match` (any if None) until `until` is true
        of the matching requests received so far; from then on (or `release()`), answer all."""
        with self._lock:
            self._hold = (until, match)

    def release(self) -> None:
        """Open a `hold` now (e.g. when a test fails before its condition can come true)."""
        with self._gate:
            self._hold = None
            self._gate.notify_all()

    def _pass_gate(self, request: RecordedRequest) -> None:
        with self._gate:
            while self._hold is not None and not self._stopping.is_set():
                until, match = self._hold
                if match is not None and match not in request.path:
                    return
                if until([r for r in self.requests if match is None or match in r.path]):
                    self._hold = None
                    self._gate.notify_all()
                    return
                self._gate.wait()

    def count(self, path_contains: str = "", *, succeeded: bool | None = None) -> int:
        with self._lock:
            hits = [r for r in self.requests if path_contains in r.path]
        if succeeded is not None:
            hits = [r for r in hits if (r.fault is None) == succeeded]
        return len(hits)

    def _next_fault(self, request: RecordedRequest) -> Fault | None:
        with self._lock:
            for i, queued in enumerate(self._queue):
                if queued.match is None or queued.match in request.path:
                    return self._queue.pop(i).fault
        if self.fault_fn is not None:
            return self.fault_fn(request)
        return None

    def _take_quota(self, request: RecordedRequest) -> tuple[bool, dict[str, str]]:
        with self._lock:
            if self.quota is None:
                return True, {}
            return self.quota.take(self.quota.clock())

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._idle:
            self.in_flight -= 1
            self._idle.notify_all()

    def wait_until_idle(self) -> None:
        """Until no request is being handled: e.g. the calls a failed run left held have all
        been recorded (a request is recorded once its fault is decided, which may wait)."""
        with self._idle:
            self._idle.wait_for(lambda: self.in_flight == 0)

    def _record(self, request: RecordedRequest) -> None:
        with self._gate:
            self.requests.append(request)
            self._gate.notify_all()  # a hold's condition may have come true

    def wait(self, seconds: float) -> None:
        """Sleep that ends early when the server stops (so hangs never outlive a test run)."""
        self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A class attribute, because listen() runs inside __init__: a deep backlog lets many
    # clients connect at once (the default of 5 resets connections under a burst).
    request_queue_size = 512

    def handle_error(self, request, client_address) -> None:
        # A client that gave up (timeout, cancelled run, killed process) is not a server error.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.1"  # keep-alive, like real APIs

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send_json(200, {"ok": True})
        else:
            self._send_error(404, "not_found", f"no route for GET {self.path}")

    def do_POST(self) -> None:
        self.fake._enter()
        try:
            self._post()
        finally:
            self.fake._leave()

    def _post(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        request = RecordedRequest(
            method="POST",
            path=split.path,
            query=parse_qs(split.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            at=time.monotonic(),  # differences only: a clock that never steps back
        )
        fault = self.fake._next_fault(request)
        request.fault = fault.kind if fault else None
        allowed, self.rate_headers = self.fake._take_quota(request)
        if not allowed and fault is None:
            request.fault = "quota"
        self.fake._record(request)
        self.fake._pass_gate(request)
        if request.fault == "quota":
            self._send_error(429, "rate_limit_exceeded", "Rate limit reached for requests")
            return

        if self.fake.latency_s:
            self.fake.wait(self.fake.latency_s)
        if fault is not None and fault.kind != "slow":
            self._apply_fault(fault)
            return
        if fault is not None:
            self._hang(fault.hang_s)  # ends early when the client gives up

        route = self._route(split.path)
        if route is None:
            self._send_error(404, "not_found", f"no route for POST {split.path}")
            return
        dialect, kind, deployment = route
        problem = self._check_request(request, dialect, deployment)
        if problem:
            request.fault = "rejected"
            self._send_error(*problem)
            return
        if kind == "chat":
            self._send_json(200, self._chat_reply(request, deployment))
        else:
            self._send_json(200, self._embedding_reply(request, deployment))

    # --- routing and validation ------------------------------------------------------------

    @staticmethod
    def _route(path: str) -> tuple[str, str, str | None] | None:
        if path == "/v1/chat/completions":
            return "openai", "chat", None
        if path == "/v1/embeddings":
            return "openai", "embeddings", None
        parts = path.strip("/").split("/")
        if len(parts) >= 4 and parts[:2] == ["openai", "deployments"]:
            tail = "/".join(parts[3:])
            if tail == "chat/completions":
                return "azure", "chat", parts[2]
            if tail == "embeddings":
                return "azure", "embeddings", parts[2]
        return None

    def _check_request(self, request: RecordedRequest, dialect: str, deployment: str | None):
        headers = request.headers
        if self.fake.require_auth:
            if dialect == "azure" and not headers.get("api-key"):
                return 401, "invalid_api_key", "Access denied due to missing subscription key."
            if dialect == "openai" and not headers.get("authorization", "").startswith("Bearer "):
                return 401, "invalid_api_key", "You didn't provide an API key."
        if dialect == "azure" and not request.query.get("api-version"):
            return 404, "404", "Resource not found (api-version missing)"
        if not isinstance(request.body, dict):
            return 400, "invalid_request_error", "We could not parse the JSON body of your request."
        model = deployment or request.body.get("model")
        if not model:
            return 400, "invalid_request_error", "you must provide a model parameter"
        if model in self.fake.unknown_models:
            code = "DeploymentNotFound" if dialect == "azure" else "model_not_found"
            return 404, code, f"The model `{model}` does not exist or you do not have access to it."
        return None

    # --- replies ---------------------------------------------------------------------------

    def _chat_reply(self, request: RecordedRequest, deployment: str | None) -> dict:
        body = request.body
        messages = body.get("messages") or []
        number = len(self.fake.requests)
        prompt_tokens = sum(words(str(m.get("content") or "")) for m in messages)
        message, finish = self._assistant_message(request, number)
        text = message.get("content") if isinstance(message.get("content"), str) else ""
        completion_tokens = words(text) if text else 1
        if text and body.get("max_tokens") and completion_tokens > body["max_tokens"]:
            text = " ".join(text.split()[: body["max_tokens"]])
            message = {**message, "content": text}
            completion_tokens, finish = body["max_tokens"], "length"
        choice = {"index": 0, "message": message, "finish_reason": finish}
        if body.get("logprobs"):
            choice["logprobs"] = fake_logprobs(text, int(body.get("top_logprobs") or 0))
        return {
            "id": f"chatcmpl-fake-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": deployment or body.get("model"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _assistant_message(self, request: RecordedRequest, number: int) -> tuple[dict, str]:
        """(assistant message, finish reason) for a chat request."""
        body = request.body
        messages = body.get("messages") or []
        if self.fake.message_fn is not None:
            return self.fake.message_fn(request), "stop"
        last = messages[-1] if messages else {}
        tools = [t.get("function", {}) for t in body.get("tools") or []]
        choice = body.get("tool_choice", "auto")
        if tools and choice != "none" and last.get("role") == "user":
            if isinstance(choice, dict):
                name = choice.get("function", {}).get("name")
            else:
                name = tools[0].get("name")
            call = {
                "id": f"call_fake_{number}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"q": last.get("content")})},
            }
            return {
                "role": "assistant",
                "content": None,
                "tool_calls": [call],
                "refusal": None,
            }, "tool_calls"
        if self.fake.reply_fn is not None:
            text = self.fake.reply_fn(request)
        elif last.get("role") == "tool":
            text = f"tool said: {last.get('content')}"
        else:
            last_user = next(
                (m.get("content") for m in reversed(messages) if m.get("role") == "user"), ""
            )
            text = f"echo: {last_user}"
            if body.get("seed") is not None:
                text += f" [seed {body['seed']}]"
        return {"role": "assistant", "content": text, "refusal": None}, "stop"

    def _embedding_reply(self, request: RecordedRequest, deployment: str | None) -> dict:
        body = request.body
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else list(inputs or [])
        dimensions = int(body.get("dimensions") or self.fake.default_dimensions)
        if self.fake.ignore_dimensions:
            dimensions = self.fake.default_dimensions
        data = []
        for i, text in enumerate(inputs):
            if self.fake.embedding_fn is not None:
                vector = self.fake.embedding_fn(request, str(text), dimensions)
            else:
                vector = fake_embedding(str(text), dimensions)
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(words(str(t)) for t in inputs)
        return {
            "object": "list",
            "data": data,
            "model": deployment or body.get("model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # --- faults ----------------------------------------------------------------------------

    def _apply_fault(self, fault: Fault) -> None:
        if fault.kind == "hang":
            self._hang(fault.hang_s)
            self._drop()
        elif fault.kind == "drop":
            self._drop()
        elif fault.kind == "reset":
            self.close_connection = True
            with contextlib.suppress(OSError):
                linger = struct.pack("ii", 1, 0)  # close with RST, not FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()
        elif fault.kind == "detail":
            self._send_json(fault.status, {"detail": fault.body or "Not Found"})
        elif fault.kind == "malformed":
            self._send_raw(200, b'{"id": "chatcmpl-broken", "choices": [{"mess', "application/json")
        elif fault.kind == "content_filter":
            self._send_json(
                400,
                {
                    "error": {
                        "message": "The response was filtered due to the prompt triggering "
                        "content management policy.",
                        "type": None,
                        "param": "prompt",
                        "code": "content_filter",
                        "status": 400,
                        "innererror": {"code": "ResponsibleAIPolicyViolation"},
                    }
                },
            )
        else:
            headers = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
            if fault.body is not None:
                self._send_raw(fault.status, fault.body.encode(), fault.content_type, headers)
            else:
                message = f"scripted {fault.status}"
                self._send_error(fault.status, f"http_{fault.status}", message, headers)

    def _hang(self, seconds: float | None) -> None:
        """Send nothing for `seconds` (forever if None), until the client hangs up or the server
        stops: a hang never outlives the client that waits for it."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self.fake._stopping.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return
            readable, _, _ = select.select([self.connection], [], [], left)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return  # the client closed the connection
                except OSError:
                    return
                self.fake.wait(left)  # pipelined bytes, not a hang-up: keep waiting

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send_error(self, status: int, code: str, message: str, headers=None) -> None:
        body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
        self._send_json(status, body, headers)

    def _send_json(self, status: int, payload: Any, headers=None) -> None:
        self._send_raw(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(self, status: int, data: bytes, content_type: str, headers=None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req-{len(self.fake.requests)}")
            for key, value in {**getattr(self, "rate_headers", {}), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
