"""Shadow checks of tasks with tools: the teacher is answered from the served attempt's recorded tool results,
and a call the served attempt never made is refused, so a shadow never repeats a side effect (a card charged)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel, ModelRequest, ModelResponse, ToolCall, Usage
from protege.agents.models.base import Message
from protege.agents.shadow_tools import RecordedTools
from protege.agents.tools import ToolBox


class Receipt(BaseModel):
    receipt: str


def tool_user(tool: str, arguments_of):
    """A model that calls `tool` once with `arguments_of(order)`, then answers with the tool's result."""

    def fn(req: ModelRequest) -> ModelResponse:
        results = [m for m in req.messages if m.role == "tool"]
        if results:
            return ModelResponse(text=json.dumps({"receipt": results[-1].content}), usage=Usage(input_tokens=9))
        order = json.loads(req.messages[-1].content)["order"]
        call = ToolCall(id=f"c{len(req.messages)}", name=tool, arguments=arguments_of(order))
        return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=9), stop_reason="tool_use")

    return fn


def charger(amount_of: dict[str, int]):
    """A model that charges the order's amount once, then answers with the tool's receipt."""
    return tool_user("charge", lambda order: {"amount": amount_of[order]})


def shadowed_app(tmp_path, replay_amounts: dict[str, int]) -> tuple[Protege, list[int]]:
    """An app whose `pay` task charges a card, shadowed on every cheap call, with its skill approved."""
    charges: list[int] = []

    def charge(amount: int, currency: str = "EUR") -> str:
        """Charge the customer's card."""
        charges.append(amount)
        return f"receipt-{len(charges)}"

    teacher = FunctionModel(charger({"A1": 5, "B2": 5}), name="function:t", price_as="anthropic:claude-opus-4-5")
    replay = FunctionModel(charger(replay_amounts), name="function:r", price_as="anthropic:claude-haiku-4-5")
    app = Protege(db=f"sqlite:///{tmp_path}/p.db", project_dir=tmp_path / ".p", teacher=teacher, replay=replay)

    @app.task(tools=[charge], policy=Policy(shadow_rate=1.0, program=False))
    def pay(order: str) -> Receipt:
        """Charge the order once with the charge tool and return the receipt."""

    app.run("pay", {"order": "A1"})
    app.wait()
    app.approve_skill("pay")
    charges.clear()
    return app, charges


def test_a_shadow_answers_the_same_call_from_the_served_result_and_never_charges_again(tmp_path):
    """The replay charged 5 once; its shadow's teacher makes that call and gets the recorded receipt back: the
    card is charged once, and the check is scored (the shadow ran the same card charge a second time before)."""
    app, charges = shadowed_app(tmp_path, {"B2": 5})
    try:
        result = app.run("pay", {"order": "B2"})
        app.wait()
        assert result.tier == "replay" and charges == [5]
        assert app.store.shadow_agreement("pay", "replay")[1] == 1  # scored: same receipt, agreement recorded
        shadow = app.store.traces("pay", tier="teacher", shadow=True)[0]
        assert shadow.valid and [m["content"] for m in shadow.messages if m["role"] == "tool"] == ["receipt-1"]
    finally:
        app.close()


def test_a_call_the_served_answer_did_not_make_is_refused_and_the_shadow_is_not_scored(tmp_path, caplog):
    """The replay charged 7 where the teacher charges 5: the shadow's charge(5) has no recorded result, so it is
    refused, not run; the teacher's answer without it is no reference, so its trace is invalid and unscored — and
    a warning says that tier's answers go unchecked by shadows."""
    app, charges = shadowed_app(tmp_path, {"B2": 7})
    try:
        with caplog.at_level("WARNING", logger="protege"):
            app.run("pay", {"order": "B2"})
            app.wait()
        assert "was not scored" in caplog.text
        assert charges == [7]
        assert app.store.shadow_agreement("pay", "replay")[1] == 0
        shadow = app.store.traces("pay", tier="teacher", shadow=True)[0]
        assert (
            not shadow.valid and "refused tool call" in shadow.errors[0] and 'charge({"amount": 5})' in shadow.errors[0]
        )
        assert "not run" in next(m["content"] for m in shadow.messages if m["role"] == "tool")
    finally:
        app.close()


async def test_recorded_calls_match_with_defaults_filled_in_and_repeat_in_order():
    """`charge(amount=5)` and `charge(amount=5, currency="EUR")` are one call; its results come back in the order
    they were recorded, the last one for any repeat after."""

    def charge(amount: int, currency: str = "EUR") -> str:
        """Charge the card."""
        raise AssertionError("a shadow never runs a tool")

    turns = []
    for n, args in enumerate([{"amount": 5}, {"amount": 5, "currency": "EUR"}]):
        turns += [
            Message(role="assistant", tool_calls=[ToolCall(id=f"c{n}", name="charge", arguments=args)]),
            Message(role="tool", content=f"r{n}", tool_call_id=f"c{n}", name="charge"),
        ]
    tools = RecordedTools(ToolBox([charge]), [m.model_dump(exclude_defaults=True) for m in turns])
    got = [await tools.call(ToolCall(id="x", name="charge", arguments={"amount": 5})) for _ in range(3)]
    assert [text for text, _ in got] == ["r0", "r1", "r1"] and tools.errors() == []
    text, ok = await tools.call(ToolCall(id="y", name="charge", arguments={"amount": 5, "currency": "USD"}))
    assert not ok and "not run" in text and tools.errors()


def test_skill_evidence_answers_tool_calls_from_the_teachers_transcript(tmp_path):
    """Under skill_approval="evidence" the draft is replayed on inputs the teacher solved: those replays ran the
    real tools again, charging the card a second time for each input."""
    charges: list[int] = []

    def charge(amount: int, currency: str = "EUR") -> str:
        """Charge the customer's card."""
        charges.append(amount)
        return f"receipt-{len(charges)}"

    amounts = {"A1": 5, "B2": 7, "C3": 9}
    teacher = FunctionModel(charger(amounts), name="function:t", price_as="anthropic:claude-opus-4-5")
    replay = FunctionModel(charger(amounts), name="function:r", price_as="anthropic:claude-haiku-4-5")
    app = Protege(db=f"sqlite:///{tmp_path}/e.db", project_dir=tmp_path / ".p", teacher=teacher, replay=replay)
    try:
        policy = Policy(skill_approval="evidence", evidence_k=2, shadow_rate=0.0, program=False)

        @app.task(tools=[charge], policy=policy)
        def pay(order: str) -> Receipt:
            """Charge the order once with the charge tool and return the receipt."""

        for order in amounts:
            app.run("pay", {"order": order})
            app.wait()
        evidence = app.store.traces("pay", tier="evidence")
        assert evidence and all(t.valid for t in evidence)
        assert charges == [5, 7, 9]  # the teacher's own calls only
    finally:
        app.close()


async def test_a_recorded_result_cut_once_is_not_cut_again_and_unreadable_arguments_are_said_back():
    """A shadow is answered with a result the loop had already cut (its marker counting what was left out): cut
    again it read `…[truncated 24 chars]`. Arguments that could not be read get the real tools' answer."""
    from protege.agents.tools import clip_result

    cut = clip_result("x" * 50_000, 20_000)
    assert cut.endswith("…[truncated 30000 chars]") and clip_result(cut, 20_000) == cut
    box = ToolBox([charge_tool])
    tools = RecordedTools(box, [], purpose="evidence")
    text, ok = await tools.call(ToolCall(id="c", name="charge", arguments={}, arguments_error="not JSON: {"))
    assert (text, ok) == ("error: not JSON: {", False) and tools.refused == []
    text, ok = await tools.call(ToolCall(id="d", name="charge", arguments={"amount": 3}))
    assert not ok and "a check of a skill on an input the teacher already solved" in text
    assert tools.errors()[0].startswith("skill check: refused tool call(s) the teacher did not make")


def charge_tool(amount: int) -> str:
    """Charge the customer's card."""
    return "receipt"


def test_a_read_only_tool_is_run_for_a_check_so_an_answer_that_skipped_it_is_still_scored(tmp_path):
    """A replay that answers without the lookup the teacher makes left every shadow unscored (its tier unchecked);
    a tool marked @protege.read_only has no side effects to repeat, so the check runs it and is scored."""
    from protege import read_only

    looked_up: list[str] = []

    @read_only
    def lookup(order: str) -> str:
        """The order's receipt."""
        looked_up.append(order)
        return f"receipt-{order}"

    teacher_fn = tool_user("lookup", lambda order: {"order": order})

    def replay_fn(req: ModelRequest) -> ModelResponse:  # answers from the text alone, no lookup
        order = json.loads(req.messages[-1].content)["order"]
        return ModelResponse(text=json.dumps({"receipt": f"receipt-{order}"}), usage=Usage(input_tokens=9))

    teacher = FunctionModel(teacher_fn, name="function:t", price_as="anthropic:claude-opus-4-5")
    replay = FunctionModel(replay_fn, name="function:r", price_as="anthropic:claude-haiku-4-5")
    app = Protege(db=f"sqlite:///{tmp_path}/r.db", project_dir=tmp_path / ".p", teacher=teacher, replay=replay)
    try:

        @app.task(tools=[lookup], policy=Policy(shadow_rate=1.0, program=False))
        def receipt(order: str) -> Receipt:
            """Look the order's receipt up."""

        app.run("receipt", {"order": "A1"})
        app.wait()
        app.approve_skill("receipt")
        looked_up.clear()
        assert app.run("receipt", {"order": "B2"}).tier == "replay"
        app.wait()
        assert looked_up == ["B2"]  # the check ran the lookup the replay skipped
        assert app.store.shadow_agreement("receipt", "replay")[1] == 1
    finally:
        app.close()
