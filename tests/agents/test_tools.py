"""Task tools and the loop around them: whatever a tool does — exits, cancels itself, blocks, returns 5 MB or an object
JSON cannot hold — it becomes the tool's result text; a model's unreadable arguments are answered, not fatal; a
signature no model could call is refused at registration; a budget refusal after paid turns keeps them."""

from __future__ import annotations

import asyncio
import datetime
import functools
import json
import sys
import time

import pytest
from triage_support import Ticket, Triage

from protege.agents import FunctionModel
from protege.agents.budget import ALL_TASKS, BudgetedModel
from protege.agents.cascade import Cascade, StudentPick, TaskRuntime
from protege.agents.loop import run_loop
from protege.agents.models.base import Message, ModelRequest, ModelResponse, ToolCall, Usage
from protege.agents.models.openai import OpenAIModel
from protege.agents.pricing import cost_of, default_table
from protege.agents.tools import ToolBox, clip_result
from protege.errors import BudgetExceeded, UserError
from protege.store import Store
from protege.tasks import Policy, TaskSpec
from protege.testing import FakeProvider

OPUS = "anthropic:claude-opus-4-5"
ANSWER = {"queue": "billing", "priority": 2}


def call(box: ToolBox, name: str, **arguments) -> tuple[str, bool]:
    return asyncio.run(box.call(ToolCall(id="c1", name=name, arguments=arguments)))


# -- what a tool raises ------------------------------------------------------------------------------------------


def quits() -> str:
    """A CLI helper that exits on error."""
    sys.exit(2)


async def aquits() -> str:
    """The same, async."""
    raise SystemExit(3)


def interrupted() -> str:
    """Raises KeyboardInterrupt."""
    raise KeyboardInterrupt


async def cancels() -> str:
    """An inner task of its own was cancelled."""
    raise asyncio.CancelledError()


def socket_timeout() -> str:
    """Its HTTP client timed out."""
    raise TimeoutError("read timed out")


async def slow() -> str:
    """Takes a while."""
    await asyncio.sleep(5)
    return "late"


@pytest.mark.parametrize(
    "tool, shown",
    [
        (quits, "error: tool 'quits' raised SystemExit: 2"),
        (aquits, "error: tool 'aquits' raised SystemExit: 3"),
        (interrupted, "error: tool 'interrupted' raised KeyboardInterrupt"),
        (cancels, "error: tool 'cancels' raised CancelledError"),
        (socket_timeout, "error: tool 'socket_timeout' raised TimeoutError: read timed out"),
    ],
)
def test_whatever_a_tool_raises_is_its_result_not_the_loops_end(tool, shown):
    """SystemExit from a sync tool reached the portal loop and stopped it (every call hung); an async tool's
    CancelledError failed the attempt; a tool's own TimeoutError read as protege's timeout."""
    assert call(ToolBox([tool], timeout=2), tool.__name__) == (shown, False)


def test_the_timeout_is_named_only_when_it_is_protege_s_and_a_cancelled_call_stays_cancelled():
    box = ToolBox([slow], timeout=0.05)
    assert call(box, "slow") == ("error: tool 'slow' timed out after 0.05s", False)

    async def cancel_the_call() -> None:
        running = asyncio.ensure_future(ToolBox([slow], timeout=5).call(ToolCall(id="c1", name="slow")))
        await asyncio.sleep(0.05)
        running.cancel()
        await running

    with pytest.raises(asyncio.CancelledError):  # the call's own cancellation is not the tool's error
        asyncio.run(cancel_the_call())


def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)

    return wrapper


@logged
async def lookup_plan(email: str) -> dict:
    """Look a customer's plan up."""
    await asyncio.sleep(0)
    return {"email": email, "plan": "pro"}


@logged
async def slow_plan(email: str) -> dict:
    """Look it up, slowly."""
    await asyncio.sleep(5)
    return {"plan": "pro"}


def test_an_async_tool_behind_a_sync_decorator_is_awaited_within_its_timeout():
    """The model got '<coroutine object lookup_plan ...>' as a successful result."""
    assert call(ToolBox([lookup_plan]), "lookup_plan", email="a@x.io") == ('{"email": "a@x.io", "plan": "pro"}', True)
    assert call(ToolBox([slow_plan], timeout=0.1), "slow_plan", email="a") == (
        "error: tool 'slow_plan' timed out after 0.1s",
        False,
    )


async def blocks(url: str) -> str:
    """Fetches with a blocking client inside async def."""
    time.sleep(0.3)
    return "page"


def test_an_async_tool_that_blocks_the_loop_past_its_timeout_is_an_error():
    """Its late result was accepted as a success: the loop could not fire the timeout while it blocked."""
    text, ok = call(ToolBox([blocks], timeout=0.1), "blocks", url="http://x")
    assert not ok and "past its 0.1s timeout" in text and "must not block" in text and "page" not in text


class Blob:
    def __repr__(self) -> str:
        return "Blob(7)"


def odd() -> dict:
    """Returns what JSON cannot hold as is."""
    return {"when": datetime.datetime(2024, 1, 2, 3, 4, 5), "raw": b"\x00\xff", "text": b"hi", "obj": Blob()}


def test_a_result_json_cannot_hold_is_converted_field_by_field():
    """It fell back to the Python repr of the whole dict ({'when': datetime.datetime(...)})."""
    text, ok = call(ToolBox([odd]), "odd")
    assert ok and json.loads(text) == {"when": "2024-01-02T03:04:05", "raw": "AP8=", "text": "aGk=", "obj": "Blob(7)"}


# -- signatures and arguments ------------------------------------------------------------------------------------


def final_answer(answer: str) -> str:
    """Send a draft to the review queue."""
    return "queued"


def positional(a: int, /, b: int = 1) -> int:
    """Positional-only."""
    return a + b


def hidden(_token: str, q: str) -> str:
    """A required parameter pydantic hides."""
    return q


def with_cache(q: str, _cache: dict | None = None) -> str:
    """An underscore parameter with a default is fine: it keeps its default."""
    return q


def search(q: str, verbose: bool = False) -> str:
    """Search."""
    return f"{q} verbose={verbose}"


@pytest.mark.parametrize(
    "tool, said",
    [(final_answer, "reserved"), (positional, "positional-only"), (hidden, "'_token' starts with '_'")],
)
def test_tools_no_model_could_call_are_refused_at_registration(tool, said):
    """A tool named final_answer was taken for the answer on Anthropic (the wrong answer served, the tool never
    run); positional-only and hidden required parameters failed on every call."""
    with pytest.raises(UserError, match=said):
        ToolBox([tool])


def test_an_unknown_argument_is_an_error_result_not_dropped():
    box = ToolBox([search, with_cache])
    text, ok = call(box, "search", q="x", verbse=True)
    assert not ok and "'verbse' is not a parameter of 'search'" in text and "q, verbose" in text
    assert call(box, "search", q="x", verbose=True) == ("x verbose=True", True)
    assert list(box.tools["with_cache"].spec.parameters["properties"]) == ["q"]
    assert call(box, "with_cache", q="y") == ("y", True)


def test_arguments_that_could_not_be_read_are_answered_without_running_the_tool():
    ran: list[str] = []

    def note(text: str) -> str:
        """Note it."""
        ran.append(text)
        return "noted"

    bad = ToolCall(id="c1", name="note", arguments_error="arguments are not valid JSON: Expecting value")
    assert asyncio.run(ToolBox([note]).call(bad)) == ("error: arguments are not valid JSON: Expecting value", False)
    assert ran == []


def test_malformed_openai_arguments_go_back_to_the_model_and_every_turn_is_billed():
    """Through the real SDK: arguments that are not JSON failed the whole attempt (a BadResponse)."""
    ran: list[str] = []

    def lookup(email: str) -> dict:
        """Look a customer up."""
        ran.append(email)
        return {"plan": "pro"}

    with FakeProvider() as fake:
        fake.add_tool_call("lookup", '{"email": "b@x.io"', usage={"input_tokens": 1200, "output_tokens": 20})
        fake.add_tool_call("lookup", {"email": "b@x.io"}, usage={"input_tokens": 1300, "output_tokens": 20})
        fake.add_final(ANSWER, usage={"input_tokens": 1400, "output_tokens": 10})
        model = OpenAIModel("gpt-4o", api_key="k", base_url=fake.openai_base_url, max_retries=0)
        req = ModelRequest(messages=[Message(role="user", content="x")], output_schema={"type": "object"})
        result = asyncio.run(run_loop(model, req, tools=ToolBox([lookup])))
        sent = [m for m in fake.requests[1].body["messages"] if m["role"] == "tool"]
    assert result.error is None and json.loads(result.text) == ANSWER and ran == ["b@x.io"]
    assert sent[0]["content"].startswith("error: arguments are not valid JSON: ")
    assert result.usage == Usage(input_tokens=3900, output_tokens=50)


# -- the loop: result size, budget -------------------------------------------------------------------------------


def test_a_long_result_is_cut_with_a_marker_before_anything_carries_it():
    assert clip_result("abcdef", 4) == "abcd…[truncated 2 chars]" and clip_result("abc", 4) == "abc"
    assert clip_result("abcdef", None) == "abcdef"

    def big() -> str:
        """5 MB."""
        return "x" * 5_000_000

    def agent(req: ModelRequest) -> ModelResponse | dict:
        if req.messages[-1].role != "tool":
            return ModelResponse(tool_calls=[ToolCall(id="c1", name="big")])
        return {"queue": "billing", "priority": len(req.messages[-1].content)}

    req = ModelRequest(messages=[Message(role="user", content="x")])
    limit = Policy().max_tool_result_chars
    result = asyncio.run(run_loop(FunctionModel(agent), req, tools=ToolBox([big]), max_tool_result_chars=limit))
    assert limit == 20_000 and result.messages[-2].content.endswith(f"…[truncated {5_000_000 - limit} chars]")
    assert len(result.messages[-2].content) < limit + 40


def test_a_failing_call_repeated_with_the_same_arguments_ends_the_loop_after_one_retry():
    """A student called a tool that raised 8 times with the same arguments, to max_steps (and its teacher then ran
    it a ninth time): the third identical call after two errors ends the loop instead. Other arguments go on."""
    ran = []

    def lookup(order_id: str) -> str:
        """Look an order up."""
        ran.append(order_id)
        if order_id == "A1":
            raise RuntimeError("backend down")
        return "shipped"

    def agent(req: ModelRequest) -> ModelResponse:
        return ModelResponse(
            tool_calls=[ToolCall(id=f"c{len(req.messages)}", name="lookup", arguments={"order_id": "A1"})]
        )

    req = ModelRequest(messages=[Message(role="user", content="x")])
    result = asyncio.run(run_loop(FunctionModel(agent), req, tools=ToolBox([lookup]), max_steps=8))
    assert ran == ["A1", "A1"] and "again after it failed 2 times" in result.error
    calls = iter(["A1", "A2", "A1", "A2", "A1"])
    ran.clear()

    def varied(req: ModelRequest) -> ModelResponse | dict:
        order = next(calls, None)
        if order is None:
            return {"queue": "billing", "priority": 1}
        return ModelResponse(
            tool_calls=[ToolCall(id=f"c{len(req.messages)}", name="lookup", arguments={"order_id": order})]
        )

    result = asyncio.run(run_loop(FunctionModel(varied), req, tools=ToolBox([lookup]), max_steps=8))
    assert ran == ["A1", "A2", "A1", "A2"] and "again after it failed" in result.error


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


class Tiers:
    def __init__(self, teacher):
        self._teacher = teacher

    def teacher(self, task):
        return self._teacher

    def replay(self, task):
        return None

    def student(self, task, *, forced) -> StudentPick | None:
        return None

    def skill(self, task, *, forced):
        return None

    def prior_art(self, task):
        return []

    def cost(self, model, usage):
        return cost_of(model, usage)


def test_a_budget_refusal_after_a_paid_turn_records_the_attempt_with_its_cost(tmp_path):
    """Turn 1 was paid and its tool ran; the budget refused turn 2 (the tool's long result): BudgetExceeded escaped
    the loop, no attempt was recorded, and the ledger said $0 while the budget counted the spend."""
    ran: list[str] = []

    def fetch_report(q: str) -> str:
        """The full report."""
        ran.append(q)
        return "row data " * 5_000  # ~11k tokens: turn 2 could cost more than the cap leaves

    def agent(req: ModelRequest) -> ModelResponse | dict:
        if req.messages[-1].role != "tool":
            call = ToolCall(id="c1", name="fetch_report", arguments={"q": "x"})
            return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=500, output_tokens=20))
        return ANSWER

    store = Store(f"sqlite:///{tmp_path}/b.db")
    teacher = FunctionModel(agent, price_as=OPUS)
    budgeted = BudgetedModel(teacher, store, "triage", {"triage": 0.02, ALL_TASKS: None}, default_table())
    policy = Policy(shadow_rate=0, program=False, max_tokens=100, max_tool_result_chars=100_000)
    spec = TaskSpec(triage, policy=policy, tools=[fetch_report])
    task = TaskRuntime(spec=spec, version=1, tools=ToolBox([fetch_report]))
    with pytest.raises(BudgetExceeded):
        asyncio.run(Cascade(store, Tiers(budgeted)).run(task, spec.parse_input((), {"ticket": {"subject": "x"}})))
    paid = cost_of(teacher, Usage(input_tokens=500, output_tokens=20))
    (trace,) = store.traces("triage")
    assert ran == ["x"] and not trace.valid and "BudgetExceeded" in trace.errors[0]
    assert trace.cost_usd == pytest.approx(paid) and [m["role"] for m in trace.messages][-2:] == ["assistant", "tool"]
    run = store.run(trace.run_id)
    assert run is not None and run.status == "failed" and run.cost_usd == pytest.approx(paid)
    assert store.spent("triage") == pytest.approx(paid)
    store.close()
