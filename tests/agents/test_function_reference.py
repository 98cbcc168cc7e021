"""FunctionModel, ScriptedModel and ReferenceModel: the in-process models users test and demo with."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from protege.agents import (
    FunctionModel,
    Message,
    Model,
    ModelRequest,
    ModelResponse,
    ReferenceModel,
    ScriptedModel,
    Usage,
)
from protege.agents.pricing import cost_of, load_prices
from protege.agents.tokens import count_tokens, prompt_tokens
from protege.errors import ModelError, UserError


class Ticket(BaseModel):
    subject: str
    body: str


def ask(task_input=None, content="Route this ticket.") -> ModelRequest:
    return ModelRequest(
        messages=[Message(role="system", content="You triage tickets."), Message(role="user", content=content)],
        output_schema={"type": "object", "properties": {"queue": {"type": "string"}}},
        task_name="triage",
        task_input=task_input,
    )


async def test_function_model_wraps_sync_and_async_functions():
    """Sync and async functions both answer; a dict comes back as its JSON text, and requests are recorded."""
    sync = FunctionModel(lambda req: {"queue": req.task_input["ticket"]["subject"]})

    async def answer(req: ModelRequest) -> str:
        return "plain text"

    asynchronous = FunctionModel(answer)
    req = ask({"ticket": {"subject": "billing", "body": ""}})
    assert json.loads((await sync.request(req)).text) == {"queue": "billing"}
    assert (await asynchronous.request(req)).text == "plain text"
    assert sync.requests == [req] and asynchronous.name == "function:answer"
    assert isinstance(sync, Model) and sync.writes_prose is False


async def test_function_model_estimates_usage_unless_the_function_reports_it():
    """Plain answers get estimated token counts; a ModelResponse's own usage is kept as given."""
    req = ask()
    estimated = await FunctionModel(lambda r: "ok").request(req)
    assert estimated.usage == Usage(input_tokens=prompt_tokens(req), output_tokens=count_tokens("ok"))
    given = ModelResponse(text="x", usage=Usage(input_tokens=7, output_tokens=3))
    answered = await FunctionModel(lambda r: given, name="function:exact").request(req)
    assert answered.usage == Usage(input_tokens=7, output_tokens=3) and answered.model == "function:exact"


async def test_function_model_rejects_answers_of_the_wrong_type():
    """Returning something that is not a response, str or dict is a UserError naming the value."""
    with pytest.raises(UserError, match="answered 42"):
        await FunctionModel(lambda r: 42).request(ask())


async def test_scripted_model_answers_in_order_then_refuses_clearly():
    """Scripted responses come back in order (exceptions are raised); one call too many is a clear UserError."""
    model = ScriptedModel(["first", {"queue": "bug"}, ModelError("provider down")])
    assert (await model.request(ask())).text == "first"
    assert json.loads((await model.request(ask())).text) == {"queue": "bug"}
    with pytest.raises(ModelError, match="provider down"):
        await model.request(ask())
    with pytest.raises(UserError, match="asked 4 times but has only 3"):
        await model.request(ask())
    assert len(model.requests) == 4 and model.remaining == -1


EXAMPLES = [
    ({"ticket": {"subject": "Refund", "body": "I was charged twice"}}, {"queue": "billing", "priority": 2}),
    ({"ticket": {"subject": "Crash", "body": "The app crashes on start"}}, {"queue": "bug", "priority": 1}),
]


async def test_reference_answers_known_inputs_with_their_output():
    """A known input (any key order) gets its labelled output as JSON text."""
    model = ReferenceModel(EXAMPLES, price_as="")
    reordered = {"ticket": {"body": "I was charged twice", "subject": "Refund"}}
    response = await model.request(ask(reordered))
    assert json.loads(response.text) == {"queue": "billing", "priority": 2}
    assert model.requests[0].task_input == reordered and len(model) == 2


async def test_reference_refuses_unknown_inputs():
    """An input it has no label for, or a request without task_input, is a ModelError saying so."""
    model = ReferenceModel(EXAMPLES)
    with pytest.raises(ModelError, match="has no answer for the input"):
        await model.request(ask({"ticket": {"subject": "Other", "body": "?"}}))
    with pytest.raises(ModelError, match="carries no task_input"):
        await model.request(ask(None))


async def test_reference_accepts_models_dicts_and_single_field_inputs():
    """Examples may be pydantic models, {"input","output"} dicts, and leave out a one-parameter task's field name."""
    model = ReferenceModel(
        [
            {"input": {"ticket": Ticket(subject="A", body="a")}, "output": {"queue": "other", "priority": 3}},
            (Ticket(subject="B", body="b"), {"queue": "account", "priority": 4}),
        ]
    )
    first = await model.request(ask({"ticket": {"subject": "A", "body": "a"}}))
    second = await model.request(ask({"ticket": {"subject": "B", "body": "b"}}))
    assert json.loads(first.text)["queue"] == "other" and json.loads(second.text)["queue"] == "account"


async def test_reference_usage_counts_the_prompt_given_and_answer_returned():
    """Usage is the estimated tokens of this prompt and this answer, so a longer prompt costs more."""
    model = ReferenceModel(EXAMPLES)
    short = await model.request(ask(EXAMPLES[0][0]))
    long = await model.request(ask(EXAMPLES[0][0], content="Route this ticket. " * 200))
    assert short.usage.input_tokens == prompt_tokens(ask(EXAMPLES[0][0]))
    assert short.usage.output_tokens == count_tokens(short.text)
    assert long.usage.input_tokens > short.usage.input_tokens + 600


async def test_reference_prices_as_the_configured_teacher(monkeypatch):
    """By default a reference costs what the configured teacher (PROTEGE_TEACHER) would have."""
    monkeypatch.setenv("PROTEGE_TEACHER", "anthropic:claude-sonnet-4-5")
    model = ReferenceModel(EXAMPLES)
    assert model.price_as == "anthropic:claude-sonnet-4-5"
    response = await model.request(ask(EXAMPLES[1][0]))
    expected = load_prices().cost("anthropic:claude-sonnet-4-5", response.usage)
    assert cost_of(model, response.usage) == pytest.approx(expected) and expected > 0


def test_reference_reads_jsonl_files(tmp_path):
    """from_jsonl loads labelled lines (custom keys too) and reports a bad line by number."""
    path = tmp_path / "labels.jsonl"
    rows = [{"q": inp, "a": out} for inp, out in EXAMPLES]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    model = ReferenceModel.from_jsonl(path, input_key="q", output_key="a", price_as="")
    assert model.answer_for(EXAMPLES[1][0]) == json.dumps(EXAMPLES[1][1])
    path.write_text(json.dumps(rows[0]) + "\n{broken\n")
    with pytest.raises(UserError, match="line 2"):
        ReferenceModel.from_jsonl(path, input_key="q", output_key="a")


def test_reference_rejects_malformed_examples():
    """An example that is neither a pair nor an input/output dict is a UserError naming it."""
    with pytest.raises(UserError, match="example #0"):
        ReferenceModel([{"question": 1}])


def test_a_model_keeps_only_its_recent_requests():
    """Kept whole, a FunctionModel or ReferenceModel teacher grew a serving process by ~10 KB a call."""
    import asyncio

    from protege.agents import FunctionModel
    from protege.agents.models.base import Message, ModelRequest

    model = FunctionModel(lambda req: "{}")

    async def calls(n):
        for i in range(n):
            await model.request(ModelRequest(messages=[Message(role="user", content=str(i))]))

    asyncio.run(calls(1_200))
    assert len(model.requests) == 1_000 and model.requests[-1].messages[0].content == "1199"
    assert model.requests[0].messages[0].content == "200"
