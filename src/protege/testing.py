"""Public test helpers: model doubles, and a fake provider server the official SDKs talk to unmodified.

`FakeProvider` is a threaded stdlib HTTP server on 127.0.0.1 that speaks enough of Anthropic's Messages API
(POST /v1/messages) and OpenAI's Chat Completions (POST /v1/chat/completions), non-streaming, for
`anthropic.AsyncAnthropic` and `openai.AsyncOpenAI` to run their real request, retry and parsing code::

    with FakeProvider() as fake:
        fake.add_tool_call("lookup", {"id": 7})
        fake.add_final({"queue": "billing", "priority": 2}, usage={"input_tokens": 900, "cache_read_tokens": 800})
        model = AnthropicModel("claude-haiku-4-5", api_key="test", base_url=fake.anthropic_base_url)

Replies come from a queue (`add_text`, `add_tool_call`, `add_final`, `add_fault`, `add_reply`), then from
`handler(provider, body)` when one is given. Usage is given in protege's convention (`input_tokens` = uncached
input) and rendered the way each provider reports it; left out, it is estimated from the request and reply
(`Reply(..., omit_usage=True)` sends none at all); `Reply(..., stop_reason="refusal")` sends that stop reason (OpenAI's
finish_reason) instead of the usual one. Requests are recorded without their headers, so API keys never land in
`fake.requests`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any, Literal

from protege.agents.models.base import FINAL_TOOL, Usage
from protege.agents.models.function import FunctionModel, ScriptedModel
from protege.agents.models.reference import ReferenceModel
from protege.agents.tokens import count_tokens

Provider = Literal["anthropic", "openai"]
PATHS: dict[str, Provider] = {"/v1/messages": "anthropic", "/v1/chat/completions": "openai"}
UsageLike = Usage | dict | None
_CALL_IDS = count(1)

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
    503: "server_error",
}


@dataclass
class Reply:
    """One scripted answer: text, tool calls, a final structured answer, or a fault."""

    kind: Literal["text", "tool_calls", "final", "fault"]
    text: str = ""
    calls: list[tuple[str, str, Any]] = field(default_factory=list)  # (id, name, arguments)
    answer: Any = None
    usage: UsageLike = None
    delay: float = 0.0
    status: int = 200
    retry_after: float | None = 0.0
    slow: float | None = None
    malformed: bool = False
    truncated: bool = False
    message: str | None = None
    logprobs: list[float] | None = None  # per answer token; sent only to OpenAI requests that ask for logprobs
    stop_reason: str | None = None  # sent instead of the usual one (Anthropic's stop_reason, OpenAI's finish_reason)
    omit_usage: bool = False  # send no `usage` at all, as some compatible servers and proxies do

    @classmethod
    def final(
        cls, obj: Any, *, usage: UsageLike = None, delay: float = 0.0, logprobs: list[float] | None = None
    ) -> Reply:
        """A structured answer: Anthropic's FINAL_TOOL tool_use, OpenAI's JSON content (with the chosen tokens'
        log-probabilities when given and the request asks for them, as vLLM and llama.cpp's server send them)."""
        return cls("final", answer=obj, usage=usage, delay=delay, logprobs=logprobs)

    @classmethod
    def tool_calls(
        cls,
        calls: list[tuple[str, dict[str, Any] | str]],
        *,
        ids: list[str] | None = None,
        usage: UsageLike = None,
        delay: float = 0.0,
    ) -> Reply:
        """Calls of (name, arguments); arguments given as a str are sent verbatim (e.g. broken JSON)."""
        ids = ids or [f"toolu_fake_{next(_CALL_IDS)}" for _ in calls]
        triples = [(i, name, args) for i, (name, args) in zip(ids, calls, strict=True)]
        return cls("tool_calls", calls=triples, usage=usage, delay=delay)

    @classmethod
    def fault(
        cls,
        status: int = 429,
        *,
        retry_after: float | None = 0.0,
        slow: float | None = None,
        malformed: bool = False,
        truncated: bool = False,
        message: str | None = None,
    ) -> Reply:
        """A failure; see FakeProvider.add_fault."""
        return cls(
            "fault",
            status=status,
            retry_after=retry_after,
            slow=slow,
            malformed=malformed,
            truncated=truncated,
            message=message,
        )

    @classmethod
    def coerce(cls, value: Reply | str | dict) -> Reply:
        """A handler's answer as a Reply: a str is text, a dict is the final answer."""
        if isinstance(value, Reply):
            return value
        if isinstance(value, str):
            return cls("text", text=value)
        if isinstance(value, dict):
            return cls("final", answer=value)
        raise TypeError(f"a FakeProvider reply must be a Reply, str or dict, got {value!r}")


@dataclass(frozen=True)
class RecordedRequest:
    """A request the fake received: which API, the path, and the JSON body (headers are never kept)."""

    provider: Provider
    path: str
    body: dict[str, Any]


class FakeProvider:
    """A local HTTP server standing in for Anthropic and OpenAI; see the module docstring.

    `api_key`: when set, requests must carry it (Bearer or Anthropic's x-api-key) or get a 401; it is checked,
    never recorded.
    """

    def __init__(self, *, handler: Callable[[str, dict], Reply | str | dict] | None = None, api_key: str | None = None):
        self.handler = handler
        self._api_key = api_key
        self._queue: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: set[socket.socket] = set()
        self._ids = count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeProvider:
        self._stop.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="protege-fake-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, drop open keep-alive connections, and wait for the server thread."""
        if self._server is None:
            return
        self._stop.set()
        self._server.shutdown()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the client
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not running; use `with FakeProvider() as fake:` or call start()")
        return self._server.server_address[1]

    @property
    def anthropic_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- scripting -------------------------------------------------------------------------------------------
    def add_reply(self, reply: Reply | str | dict) -> None:
        with self._lock:
            self._queue.append(Reply.coerce(reply))

    def add_text(self, text: str, *, usage: UsageLike = None, delay: float = 0.0) -> None:
        self.add_reply(Reply("text", text=text, usage=usage, delay=delay))

    def add_tool_call(
        self,
        name: str,
        arguments: dict[str, Any] | str,
        *,
        id: str | None = None,
        usage: UsageLike = None,
        delay: float = 0.0,
    ) -> None:
        """A call of tool `name`; `arguments` as a str is sent verbatim (e.g. broken JSON for OpenAI)."""
        self.add_reply(Reply.tool_calls([(name, arguments)], ids=[id] if id else None, usage=usage, delay=delay))

    def add_tool_calls(
        self,
        calls: list[tuple[str, dict[str, Any] | str]],
        *,
        ids: list[str] | None = None,
        usage: UsageLike = None,
        delay: float = 0.0,
    ) -> None:
        """Several tool calls in one reply (parallel tool use)."""
        self.add_reply(Reply.tool_calls(calls, ids=ids, usage=usage, delay=delay))

    def add_final(
        self, obj: Any, *, usage: UsageLike = None, delay: float = 0.0, logprobs: list[float] | None = None
    ) -> None:
        """A structured answer: Anthropic's FINAL_TOOL tool_use, OpenAI's JSON content."""
        self.add_reply(Reply.final(obj, usage=usage, delay=delay, logprobs=logprobs))

    def add_fault(
        self,
        status: int = 429,
        *,
        retry_after: float | None = 0.0,
        slow: float | None = None,
        malformed: bool = False,
        truncated: bool = False,
        message: str | None = None,
    ) -> None:
        """A failure: an HTTP error `status` (429, 500, 529 overloaded, ...) with `message`, told to retry after
        `retry_after` seconds (None: no header; 0: at once), or `slow` seconds of silence then a 504, or a 200
        whose body is `malformed` JSON, or a `truncated` answer (stopped at max_tokens, no final answer)."""
        self.add_reply(
            Reply.fault(
                status, retry_after=retry_after, slow=slow, malformed=malformed, truncated=truncated, message=message
            )
        )

    @property
    def pending(self) -> int:
        """Queued replies not served yet."""
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    # --- serving (called from handler threads) ----------------------------------------------------------------
    def _serve(self, path: str, headers: Any, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        provider = PATHS.get(path.split("?")[0])
        if provider is None:
            return _json(404, {"error": {"type": "not_found_error", "message": f"no route {path!r} in FakeProvider"}})
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return _error(provider, 400, "request body is not JSON")
        with self._lock:
            self._requests.append(RecordedRequest(provider, path, body))
        if self._api_key is not None and not _authorized(provider, headers, self._api_key):
            return _error(provider, 401, "invalid x-api-key" if provider == "anthropic" else "Incorrect API key")
        try:
            reply = self._next_reply(provider, body)
        except Exception as exc:  # a broken handler must fail the test loudly, not hang the client
            self.errors.append(exc)
            return _error(provider, 500, f"FakeProvider handler failed: {exc!r}", retry=False)
        if reply is None:
            return _error(provider, 500, "FakeProvider has no reply queued and no handler; add replies", retry=False)
        wait = reply.slow if reply.slow is not None else reply.delay
        if wait and self._stop.wait(wait):
            return _error(provider, 503, "FakeProvider is stopping")
        if reply.slow is not None:
            return _error(provider, 504, f"FakeProvider slow fault: no answer for {reply.slow}s")
        return self._render(provider, reply, body)

    def _next_reply(self, provider: str, body: dict) -> Reply | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return Reply.coerce(self.handler(provider, body)) if self.handler else None

    def _render(self, provider: Provider, reply: Reply, body: dict) -> tuple[int, dict[str, str], bytes]:
        if reply.kind == "fault" and reply.malformed:
            return 200, {"content-type": "application/json"}, b'{"id": "broken", "content": [{"type": "te'
        if reply.kind == "fault" and not reply.truncated:
            message = reply.message or f"FakeProvider fault: HTTP {reply.status}"
            status, headers, payload = _error(provider, reply.status, message)
            if reply.retry_after is not None:
                # The SDKs treat a zero wait as "use your own backoff"; 1 ms means "at once".
                headers["retry-after-ms"] = str(max(1, round(reply.retry_after * 1000)))
                headers["retry-after"] = str(max(1, round(reply.retry_after)))
            return status, headers, payload
        usage = _usage(reply.usage, body, reply)
        n = next(self._ids)
        render = _anthropic_message if provider == "anthropic" else _openai_completion
        answer = render(reply, body, usage, n)
        if reply.omit_usage:
            del answer["usage"]
        return _json(200, answer)

    def _track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(conn)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops bursts of concurrent connects (1 s SYN retries)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without TCP_NODELAY, Nagle + delayed ACK add ~40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)  # type: ignore[attr-defined]
        try:
            super().finish()
        except OSError:
            pass  # the client went away (a timed-out request)

    def do_POST(self) -> None:  # the stdlib's name
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        status, headers, payload = self.server.fake._serve(self.path, self.headers, raw)  # type: ignore[attr-defined]
        try:
            self.send_response(status)
            for name, value in {**headers, "content-length": str(len(payload))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client gave up waiting

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


def _authorized(provider: str, headers: Any, key: str) -> bool:
    # Anthropic's SDK has sent the key as x-api-key and, in newer versions, as a bearer token: accept both.
    bearer = headers.get("authorization") == f"Bearer {key}"
    return bearer or (provider == "anthropic" and headers.get("x-api-key") == key)


def _json(status: int, obj: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(obj).encode()


def _error(provider: str, status: int, message: str, *, retry: bool | None = None) -> tuple[int, dict[str, str], bytes]:
    if provider == "anthropic":
        kind = _ANTHROPIC_ERROR_TYPES.get(status, "api_error")
        result = _json(status, {"type": "error", "error": {"type": kind, "message": message}})
    else:
        kind = _OPENAI_ERROR_TYPES.get(status, "server_error")
        result = _json(status, {"error": {"message": message, "type": kind, "param": None, "code": kind}})
    if retry is not None:
        result[1]["x-should-retry"] = "true" if retry else "false"
    return result


def _reply_text(reply: Reply) -> str:
    if reply.kind == "final":
        return json.dumps(reply.answer)
    if reply.kind == "tool_calls":
        return "".join(name + _arguments_text(args) for _, name, args in reply.calls)
    return reply.text if reply.kind == "text" else '{"answer": "cut'


def _arguments_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments)


def _usage(given: UsageLike, body: dict, reply: Reply) -> Usage:
    if isinstance(given, Usage):
        return given
    if isinstance(given, dict):
        return Usage(**given)
    return Usage(input_tokens=count_tokens(json.dumps(body)), output_tokens=count_tokens(_reply_text(reply)))


def _anthropic_message(reply: Reply, body: dict, usage: Usage, n: int) -> dict[str, Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    stop = "end_turn"
    if reply.kind == "tool_calls":
        content += [{"type": "tool_use", "id": i, "name": name, "input": args} for i, name, args in reply.calls]
        stop = "tool_use"
    elif reply.kind == "final":
        content.append({"type": "tool_use", "id": f"toolu_final_{n}", "name": FINAL_TOOL, "input": reply.answer})
        stop = "tool_use"
    elif reply.truncated:
        content, stop = [{"type": "text", "text": _reply_text(reply)}], "max_tokens"
    return {
        "id": f"msg_fake_{n}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": content,
        "stop_reason": reply.stop_reason or stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
        },
    }


def _openai_completion(reply: Reply, body: dict, usage: Usage, n: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    finish = "stop"
    if reply.kind == "tool_calls":
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": name, "arguments": _arguments_text(args)}}
            for i, name, args in reply.calls
        ]
        finish = "tool_calls"
    elif reply.kind == "final":
        message["content"] = json.dumps(reply.answer)
    elif reply.truncated:
        message["content"], finish = _reply_text(reply), "length"
    finish = reply.stop_reason or finish
    prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens  # OpenAI counts them all
    return {
        "id": f"chatcmpl-fake-{n}",
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": _logprobs(reply, body)}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": usage.output_tokens,
            "total_tokens": prompt + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        },
    }


def _logprobs(reply: Reply, body: dict) -> dict[str, Any] | None:
    """OpenAI's `choices[0].logprobs`: one entry per answer token, only when asked for and scripted."""
    if not body.get("logprobs") or reply.logprobs is None:
        return None
    return {
        "content": [
            {"token": f"t{i}", "logprob": lp, "bytes": None, "top_logprobs": []} for i, lp in enumerate(reply.logprobs)
        ],
        "refusal": None,
    }


__all__ = ["FakeProvider", "FunctionModel", "RecordedRequest", "ReferenceModel", "Reply", "ScriptedModel"]
