"""The agent loop: model ⇄ tools until a final answer, as a LangGraph subgraph with bounded steps.

The loop does not judge the answer: it returns the final text and the whole transcript; the cascade parses and
validates it. A model that keeps calling tools past `max_steps` ends the loop with an error.
"""

from __future__ import annotations

import asyncio
import json
from functools import lru_cache
from typing import Any, TypedDict

from pydantic import BaseModel, Field

from protege.agents.models.base import UNREADABLE, Message, Model, ModelRequest, ModelResponse, ToolCall, Usage
from protege.agents.tools import ToolBox, clip_result
from protege.errors import BudgetExceeded, ModelError
from protege.telemetry.spans import current_attempt


class LoopResult(BaseModel):
    """What one attempt produced: final text (or an error), transcript, model responses and summed usage."""

    text: str = ""
    messages: list[Message] = Field(default_factory=list)
    responses: list[ModelResponse] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    exception: Any = Field(default=None, exclude=True, repr=False)  # what the model raised, for the caller's except

    @property
    def confidence(self) -> float | None:
        return self.responses[-1].confidence if self.responses else None

    @property
    def field_confidences(self) -> dict[str, float] | None:
        return self.responses[-1].field_confidences if self.responses else None


class LoopState(TypedDict, total=False):
    model: Model
    tools: ToolBox | None
    request: ModelRequest
    max_steps: int
    max_tool_result_chars: int | None
    messages: list[Message]
    responses: list[ModelResponse]
    error: str | None
    exception: BaseException | None
    failed_calls: list[str]  # each tool call whose result was an error, as `_call_key` writes it


# A call repeated with the same arguments after its result was an error this many times ends the loop: a model
# that cannot get past a failing tool only spends turns (a student repeated one 8 times, to max_steps); one retry
# is left for a tool that fails now and then.
MAX_FAILED_REPEATS = 2


async def _call_model(state: LoopState) -> dict[str, Any]:
    req = state["request"].model_copy(update={"messages": state["messages"]})
    try:
        resp = await _request(state["model"], req)
    except (ModelError, BudgetExceeded) as exc:
        if not state.get("responses"):
            raise  # the first turn: the cascade records the failure (and what it was billed), or the refusal
        # turns before this one were paid for (a budget refusal too): end the loop with the error and keep them
        responses = [*state["responses"], *(billed_responses(exc) if isinstance(exc, ModelError) else [])]
        return {"error": f"{type(exc).__name__}: {exc}", "exception": exc, "responses": responses}
    turn = Message(role="assistant", content=resp.text, tool_calls=resp.tool_calls)
    return {"messages": [*state["messages"], turn], "responses": [*state.get("responses", []), resp]}


async def _call_tools(state: LoopState) -> dict[str, Any]:
    calls = state["messages"][-1].tool_calls
    box = state["tools"]
    if box is None:
        return {"error": f"the model called {[c.name for c in calls]!r} but the task has no tools"}
    limit = state.get("max_tool_result_chars")
    results = await asyncio.gather(*(_call_tool(box, c, limit) for c in calls))
    turns = [Message(role="tool", content=text, tool_call_id=c.id, name=c.name) for c, (text, _) in zip(calls, results)]
    failed = [_call_key(c) for c, (_, ok) in zip(calls, results) if not ok]
    return {"messages": [*state["messages"], *turns], "failed_calls": [*state.get("failed_calls", []), *failed]}


def _call_key(call: ToolCall) -> str:
    return f"{call.name}({json.dumps(call.arguments, sort_keys=True, default=str)})"


def _repeats_a_failure(state: LoopState) -> str | None:
    """The latest turn's call that already failed MAX_FAILED_REPEATS times with the same arguments, if any."""
    failed = state.get("failed_calls", [])
    for call in state["messages"][-1].tool_calls:
        if failed.count(_call_key(call)) >= MAX_FAILED_REPEATS:
            return _call_key(call)
    return None


async def _request(model: Model, req: ModelRequest) -> ModelResponse:
    with current_attempt().model_request(model, req) as span:  # a `chat <model>` span when tracing is on
        resp = await model.request(req)
        span.response(resp)
        return resp


async def _call_tool(box: ToolBox, call: ToolCall, limit: int | None) -> tuple[str, bool]:
    tool = box.tools.get(call.name)
    with current_attempt().tool(call, tool.spec.description if tool else "") as span:  # `execute_tool <name>`
        text, ok = await box.call(call)
        text = clip_result(text, limit)  # before the next request, the trace and datasets all carry it
        span.result(text, ok)
        return text, ok


def billed_responses(exc: ModelError) -> list[ModelResponse]:
    """An answer the provider billed but that could not be used (`exc.usage` set), as a response holding its usage
    and body, so the attempt's cost and trace count it; none where nothing was billed."""
    if exc.usage is None:
        return []
    raw = {"error": str(exc), "body": exc.body}
    return [ModelResponse(usage=exc.usage, raw=raw, model=exc.model, stop_reason=UNREADABLE)]


def _after_model(state: LoopState) -> str:
    # an unfinished reply (cut at max_tokens, a refusal) ends the loop: its tool calls may be cut too
    if state.get("error") or not state["messages"][-1].tool_calls or state["responses"][-1].cut_short:
        return "end"
    if len(state["responses"]) >= state["max_steps"]:
        return "too_many"
    if _repeats_a_failure(state):
        return "stuck"
    return "tools"


def _stuck(state: LoopState) -> dict[str, Any]:
    call = _repeats_a_failure(state)
    return {"error": f"called {call} again after it failed {MAX_FAILED_REPEATS} times with the same arguments"}


def _too_many_steps(state: LoopState) -> dict[str, Any]:
    return {"error": f"no final answer after {state['max_steps']} model turns (max_steps); raise Policy.max_steps"}


@lru_cache(maxsize=1)
def loop_graph() -> Any:
    """The compiled loop subgraph (compiled once per process)."""
    from langgraph.graph import END, START, StateGraph

    g = StateGraph(LoopState)
    g.add_node("model", _call_model)
    g.add_node("tools", _call_tools)
    g.add_node("too_many", _too_many_steps)
    g.add_node("stuck", _stuck)
    g.add_edge(START, "model")
    g.add_conditional_edges(
        "model", _after_model, {"end": END, "tools": "tools", "too_many": "too_many", "stuck": "stuck"}
    )
    g.add_conditional_edges("tools", lambda s: END if s.get("error") else "model", ["model", END])
    g.add_edge("too_many", END)
    g.add_edge("stuck", END)
    return g.compile()


async def run_loop(
    model: Model,
    request: ModelRequest,
    *,
    tools: ToolBox | None = None,
    max_steps: int = 8,
    max_tool_result_chars: int | None = None,
) -> LoopResult:
    """Run the loop from `request.messages`; model errors propagate (the cascade records and escalates), except
    after a paid turn: then the loop ends with the error (`exception`: a ModelError, or the budget's BudgetExceeded)
    and keeps the turns. A tool result longer than `max_tool_result_chars` is cut (None: never).

    A task without tools has a one-turn loop, so it skips the graph machinery (≈1 ms a call) and asks directly.
    """
    if not tools:
        return await _one_turn(model, request)
    state: LoopState = {
        "model": model,
        "tools": tools if tools else None,
        "request": request,
        "max_steps": max_steps,
        "max_tool_result_chars": max_tool_result_chars,
        "messages": list(request.messages),
        "responses": [],
        "error": None,
    }
    out = await loop_graph().ainvoke(state, {"recursion_limit": 2 * max_steps + 4})
    responses: list[ModelResponse] = out.get("responses", [])
    usage = sum((r.usage for r in responses), Usage())
    last = out["messages"][-1]
    text = last.content if last.role == "assistant" and not last.tool_calls else ""
    return LoopResult(
        text=text,
        messages=out["messages"],
        responses=responses,
        usage=usage,
        error=out.get("error"),
        exception=out.get("exception"),
    )


async def _one_turn(model: Model, request: ModelRequest) -> LoopResult:
    resp = await _request(model, request)
    turn = Message(role="assistant", content=resp.text, tool_calls=resp.tool_calls)
    called = [c.name for c in resp.tool_calls]
    error = f"the model called {called!r} but the task has no tools" if called else None
    return LoopResult(
        text="" if resp.tool_calls else resp.text,
        messages=[*request.messages, turn],
        responses=[resp],
        usage=resp.usage,
        error=error,
    )
