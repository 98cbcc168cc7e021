"""Task tools: Python callables described by JSON schema from their signatures, run with timeouts.

A tool's failure (exception, timeout, bad arguments) is contained: it becomes the tool's result text, so the
model can recover, and the attempt's transcript shows what happened.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import threading
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError, create_model

from protege.agents.models.base import ToolCall, ToolSpec
from protege.errors import UserError


class Tool:
    """One callable plus its schema and argument validator."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.name = getattr(fn, "__name__", "")
        if not self.name.isidentifier():
            raise UserError(f"tool {fn!r} needs a Python-identifier __name__ to be offered to a model")
        self.is_async = inspect.iscoroutinefunction(fn)
        self.args_model = _args_model(fn, self.name)
        self.spec = ToolSpec(
            name=self.name,
            description=(inspect.getdoc(fn) or "").strip(),
            parameters=self.args_model.model_json_schema(),
        )

    async def __call__(self, arguments: dict[str, Any], timeout: float) -> str:
        args = self.args_model.model_validate(arguments)
        kwargs = {k: getattr(args, k) for k in type(args).model_fields}
        if self.is_async:
            result = await asyncio.wait_for(self.fn(**kwargs), timeout)
        else:  # a timed-out thread keeps running, but the caller and the model move on
            result = await asyncio.wait_for(_in_daemon_thread(self.name, self.fn, kwargs), timeout)
        return _to_text(result)


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
        except StopIteration as exc:  # a future cannot carry StopIteration (as in coroutines)
            error = RuntimeError(f"tool raised StopIteration: {exc}")
        except BaseException as exc:  # handed to the caller, as to_thread would
            error = exc
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
        try:
            return await tool(call.arguments, self.timeout), True
        except ValidationError as exc:
            return f"error: bad arguments for {call.name!r}: {exc.errors(include_url=False)}", False
        except TimeoutError:
            return f"error: tool {call.name!r} timed out after {self.timeout:g}s", False
        except Exception as exc:  # a tool's bug must not take the call down
            return f"error: tool {call.name!r} raised {type(exc).__name__}: {exc}", False


def _args_model(fn: Callable[..., Any], name: str) -> Any:
    fields: dict[str, Any] = {}
    hints = _type_hints(fn)
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UserError(f"tool {name!r}: *args/**kwargs cannot be described to a model; name each parameter")
        annotation = hints.get(p.name, Any)
        fields[p.name] = (annotation, ... if p.default is p.empty else p.default)
    try:
        model = create_model(f"{name}_args", **fields)
        model.model_json_schema()
    except Exception as exc:
        raise UserError(f"tool {name!r}: parameter types must be pydantic-compatible: {exc}") from exc
    return model


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {}


def _to_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(TypeAdapter(type(result)).dump_python(result, mode="json"), ensure_ascii=False)
    except Exception:
        return str(result)
