"""Task tools: Python callables described by JSON schema from their signatures, run with timeouts.

A tool's failure — any exception it raises (SystemExit and KeyboardInterrupt included), a timeout, arguments that
are not valid JSON or do not fit its signature — is contained: it becomes the tool's result text, so the model can
recover, and the attempt's transcript shows what happened. A sync tool runs on a thread of its own; an async tool
runs on the event loop and must not block it (no time.sleep, no sync HTTP): a result it returns past its timeout
is dropped and reported as an error.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError, create_model
from pydantic_core import to_jsonable_python

from protege.agents.models.base import FINAL_TOOL, ToolCall, ToolSpec
from protege.errors import UserError
from protege.tasks import READ_ONLY

RESERVED = frozenset({FINAL_TOOL})
"""Tool names protege offers models itself: a task tool of that name would be taken for the final answer."""


class Tool:
    """One callable plus its schema and argument validator."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.name = getattr(fn, "__name__", "")
        if not self.name.isidentifier():
            raise UserError(f"tool {fn!r} needs a Python-identifier __name__ to be offered to a model")
        if self.name in RESERVED:
            raise UserError(
                f"tool {self.name!r}: the name is reserved for the tool models give their final answer with, so "
                f"their calls of yours would be taken for the answer; rename the function (e.g. submit_draft)"
            )
        self.is_async = inspect.iscoroutinefunction(fn)
        self.read_only = bool(getattr(fn, READ_ONLY, False))
        self.args_model = _args_model(fn, self.name)
        self.spec = ToolSpec(
            name=self.name,
            description=(inspect.getdoc(fn) or "").strip(),
            parameters=self.args_model.model_json_schema(),
        )

    async def __call__(self, arguments: dict[str, Any], timeout: float) -> str:
        kwargs = self.kwargs(arguments)
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self.is_async:
            result = await asyncio.wait_for(_contained(self.fn(**kwargs)), timeout)
        else:  # a timed-out thread keeps running, but the caller and the model move on
            result = await asyncio.wait_for(_in_daemon_thread(self.name, self.fn, kwargs), timeout)
        on_loop = self.is_async
        if inspect.isawaitable(result):  # an async def behind a sync decorator: awaited within the time left
            on_loop = True
            result = await _await_in_time(result, start + timeout - loop.time())
        elapsed = loop.time() - start
        # past the timeout (with slack: one done just in time measures a hair over it), it kept the loop from
        # firing the timeout: it blocked the loop
        if on_loop and elapsed > timeout * 1.05 + 0.05:
            raise _Late(
                f"tool {self.name!r} returned after {elapsed:.1f}s, past its {timeout:g}s timeout, having blocked the "
                f"event loop; its result was dropped. An async tool must not block: await its I/O, or make it a "
                f"plain def (it then runs on a thread)"
            )
        return _to_text(result)

    def kwargs(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The call's keyword arguments, validated; an unknown name is refused, not dropped (a typo'd flag)."""
        fields = self.args_model.model_fields
        unknown = sorted(set(arguments) - set(fields))
        if unknown:
            raise _BadArguments(
                f"{', '.join(map(repr, unknown))} is not a parameter of {self.name!r} (its parameters: "
                f"{', '.join(fields) or 'none'})"
            )
        args = self.args_model.model_validate(arguments)
        return {k: getattr(args, k) for k in fields}


class _Raised(Exception):
    """What a tool's own code raised, carried as an ordinary exception: a SystemExit or KeyboardInterrupt raised as
    is would stop the event loop, a CancelledError would read as the call being cancelled, and a TimeoutError or
    ValidationError as protege's own timeout or argument check."""

    def __init__(self, error: BaseException):
        super().__init__(_describe(error))
        self.error = error


class _BadArguments(Exception):
    """Arguments that do not fit the tool's signature (beside what pydantic's validation finds)."""


class _Late(Exception):
    """An async tool's result that came past its timeout."""


async def _await_in_time(awaitable: Awaitable[Any], left: float) -> Any:
    if left <= 0:
        getattr(awaitable, "close", lambda: None)()  # never started: no "was never awaited" warning
        raise TimeoutError
    return await asyncio.wait_for(_contained(awaitable), left)


async def _contained(awaitable: Awaitable[Any]) -> Any:
    """Await a tool's coroutine; whatever it raises comes out as _Raised, except a cancellation of the call."""
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the call was cancelled (its timeout, an app closing): not the tool's doing
        raise _Raised(exc) from exc
    except BaseException as exc:
        raise _Raised(exc) from exc


def _in_daemon_thread(name: str, fn: Callable[..., Any], kwargs: dict[str, Any]) -> asyncio.Future[Any]:
    """Run a sync tool on a thread of its own, not the loop's default executor: store writes share that one, so
    hung tools would starve them, and its threads are joined at exit. A daemon thread neither starves others nor
    keeps the process alive; a timed-out one is abandoned, its late result dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()  # as asyncio.to_thread does

    def settle(result: Any, error: BaseException | None) -> None:
        if future.done():  # the caller timed out (the future was cancelled)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def work() -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = context.run(fn, **kwargs)
        except BaseException as exc:  # wrapped: see _Raised (a future cannot carry StopIteration either)
            error = _Raised(exc)
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed while the tool ran: nobody waits for it
            pass

    threading.Thread(target=work, name=f"protege-tool-{name}", daemon=True).start()
    return future


class ToolBox:
    """The tools of one task, by name."""

    def __init__(self, fns: list[Callable[..., Any]], *, timeout: float = 30.0):
        self.tools = {t.name: t for t in map(Tool, fns)}
        if len(self.tools) != len(fns):
            raise UserError(f"tool names must be unique; got {[getattr(f, '__name__', f) for f in fns]!r}")
        self.timeout = timeout

    def __bool__(self) -> bool:
        return bool(self.tools)

    @property
    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self.tools.values()]

    async def call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one call; returns (result text, ok). Errors come back as text, never as exceptions."""
        tool = self.tools.get(call.name)
        if tool is None:
            return f"error: no tool named {call.name!r}; available: {sorted(self.tools)}", False
        if call.arguments_error is not None:  # the model's arguments could not be read: say so, it can retry
            return f"error: {call.arguments_error}", False
        try:
            return await tool(call.arguments, self.timeout), True
        except ValidationError as exc:  # the arguments' (the tool's own errors come as _Raised)
            return f"error: bad arguments for {call.name!r}: {exc.errors(include_url=False)}", False
        except _BadArguments as exc:
            return f"error: bad arguments: {exc}", False
        except TimeoutError:  # wait_for's (a tool's own TimeoutError comes as _Raised)
            return f"error: tool {call.name!r} timed out after {self.timeout:g}s", False
        except _Raised as exc:
            return f"error: tool {call.name!r} raised {exc}", False
        except _Late as exc:
            return f"error: {exc}", False
        except Exception as exc:  # calling it at all failed (its signature changed under us): not the call's end
            return f"error: tool {call.name!r} failed: {_describe(exc)}", False


def call_results(messages: Any) -> list[tuple[dict[str, Any], str | None]]:
    """Each tool call of a transcript (a dict: id, name, arguments), in order, with the result its tool turn holds
    (matched by call id; None where there is none)."""
    turns = [m.model_dump() if hasattr(m, "model_dump") else m for m in messages or []]
    turns = [t for t in turns if isinstance(t, dict)]
    results = {t["tool_call_id"]: t.get("content") for t in turns if t.get("role") == "tool" and t.get("tool_call_id")}
    calls = [c for t in turns for c in t.get("tool_calls") or [] if isinstance(c, dict)]
    return [(c, results.get(c["id"]) if c.get("id") else None) for c in calls]


_CUT = re.compile(r"…\[truncated \d+ chars\]\Z")


def clip_result(text: str, limit: int | None) -> str:
    """A tool's result cut to `limit` characters (Policy.max_tool_result_chars), saying how much was left out. A
    result cut already (a recorded one a shadow check is answered with) is kept as it is, its count intact."""
    if limit is None or len(text) <= limit or (len(text) <= limit + 40 and _CUT.search(text)):
        return text
    return f"{text[:limit]}…[truncated {len(text) - limit} chars]"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _args_model(fn: Callable[..., Any], name: str) -> Any:
    fields: dict[str, Any] = {}
    hints = _type_hints(fn)
    for p in inspect.signature(fn).parameters.values():
        _check_parameter(p, name)
        annotation = hints.get(p.name, Any)
        fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
    try:
        model = create_model(f"{name}_args", **fields)
        model.model_json_schema()
    except Exception as exc:
        raise UserError(f"tool {name!r}: parameter types must be pydantic-compatible: {exc}") from exc
    return model


def _check_parameter(p: inspect.Parameter, name: str) -> None:
    """Refuse a parameter no model could ever pass: models pass arguments by name, from the schema."""
    if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
        raise UserError(f"tool {name!r}: *args/**kwargs cannot be described to a model; name each parameter")
    if p.kind is p.POSITIONAL_ONLY:
        raise UserError(
            f"tool {name!r}: parameter {p.name!r} is positional-only, but models pass arguments by name; drop the '/'"
        )
    if p.name.startswith("_") and p.default is p.empty:  # pydantic leaves it out of the schema: never passed
        raise UserError(
            f"tool {name!r}: parameter {p.name!r} starts with '_', so it is hidden from models and never passed; "
            f"rename it, or give it a default"
        )


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def _to_text(result: Any) -> str:
    """A tool's result as the text the model reads: JSON where it can be (datetimes, models, dataclasses), with any
    other object as its str() in place, not the whole container's repr."""
    if isinstance(result, str):
        return result
    for bytes_mode in ("utf8", "base64"):  # bytes as text where they are UTF-8, else as base64
        try:
            data = to_jsonable_python(result, fallback=str, bytes_mode=bytes_mode)
        except UnicodeDecodeError:
            continue
        except (TypeError, ValueError):  # a circular structure
            break
        return json.dumps(data, ensure_ascii=False)
    return str(result)
