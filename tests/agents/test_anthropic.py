"""AnthropicModel through the real `anthropic` SDK, talking HTTP to the fake provider server."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest
from pydantic import BaseModel

from protege.agents import FINAL_TOOL, Message, ModelRequest, ToolSpec, Usage, resolve_model
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.pricing import cost_of
from protege.errors import BadResponse, MissingKeyError, ModelError, ModelTimeout, Overloaded, RateLimited
from protege.testing import FakeProvider, Reply

KEY = "sk-ant-test-0123456789abcdef"
SCHEMA = {
    "type": "object",
    "properties": {"queue": {"type": "string"}, "priority": {"type": "integer"}},
    "required": ["queue", "priority"],
}
LOOKUP = ToolSpec(
    name="lookup_customer",
    description="Find a customer by email",
    parameters={"type": "object", "properties": {"email": {"type": "string"}}},
)


@pytest.fixture
def fake():
    with FakeProvider(api_key=KEY) as server:
        yield server


def model_for(fake: FakeProvider, **options) -> AnthropicModel:
    return AnthropicModel("claude-haiku-4-5", api_key=KEY, base_url=fake.anthropic_base_url, **options)


def triage_request(tools=(LOOKUP,)) -> ModelRequest:
    return ModelRequest(
        messages=[
            Message(role="system", content="You triage support tickets."),
            Message(role="system", content="SKILL: billing words mean billing.", cache=True),
            Message(role="user", content='{"subject": "Refund", "body": "charged twice, ann@example.com"}'),
        ],
        tools=list(tools),
        output_schema=SCHEMA,
        max_tokens=512,
    )


async def test_tool_using_exchange_ends_in_a_structured_answer(fake):
    """The model calls a tool, sees its result, then answers through the final tool; usage and cost add up."""
    fake.add_tool_call(
        "lookup_customer", {"email": "ann@example.com"}, id="toolu_1", usage={"input_tokens": 400, "output_tokens": 30}
    )
    fake.add_final({"queue": "billing", "priority": 2}, usage={"input_tokens": 450, "output_tokens": 20})
    model = model_for(fake)
    req = triage_request()

    first = await model.request(req)
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("toolu_1", "lookup_customer", {"email": "ann@example.com"})
    ]
    assert first.text == "" and first.stop_reason == "tool_use"

    req.messages += [
        Message(role="assistant", tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id="toolu_1", name="lookup_customer", content='{"plan": "pro"}'),
    ]
    final = await model.request(req)
    assert json.loads(final.text) == {"queue": "billing", "priority": 2} and final.tool_calls == []
    assert final.model == "anthropic:claude-haiku-4-5" and final.raw["usage"]["input_tokens"] == 450

    total = first.usage + final.usage
    assert total == Usage(input_tokens=850, output_tokens=50)
    assert cost_of(model, total) == pytest.approx((850 * 1 + 50 * 5) / 1e6)

    sent = [r.body for r in fake.requests]
    assert sent[0]["tool_choice"] == {"type": "any"}
    assert [t["name"] for t in sent[0]["tools"]] == ["lookup_customer", FINAL_TOOL]
    assert sent[0]["tools"][1]["input_schema"] == SCHEMA
    assert sent[0]["system"] == [
        {"type": "text", "text": "You triage support tickets."},
        {"type": "text", "text": "SKILL: billing words mean billing.", "cache_control": {"type": "ephemeral"}},
    ]
    assert sent[1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "lookup_customer", "input": {"email": "ann@example.com"}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"plan": "pro"}'}]},
    ]


async def test_without_tools_the_final_tool_is_forced(fake):
    """With only an output schema the request forces FINAL_TOOL by name."""
    fake.add_final({"queue": "bug", "priority": 1})
    await model_for(fake).request(triage_request(tools=()))
    assert fake.requests[0].body["tool_choice"] == {"type": "tool", "name": FINAL_TOOL}


async def test_parallel_tool_results_merge_into_one_user_turn(fake):
    """Two tool results in a row go back as one user turn with two tool_result blocks."""
    fake.add_tool_calls(
        [("lookup_customer", {"email": "a@x"}), ("lookup_customer", {"email": "b@x"})], ids=["t1", "t2"]
    )
    fake.add_final({"queue": "account", "priority": 3})
    model = model_for(fake)
    req = triage_request()
    first = await model.request(req)
    assert [c.id for c in first.tool_calls] == ["t1", "t2"]
    req.messages += [
        Message(role="assistant", content="Checking both.", tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id="t1", content="A"),
        Message(role="tool", tool_call_id="t2", content="B"),
    ]
    await model.request(req)
    turns = fake.requests[1].body["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][0] == {"type": "text", "text": "Checking both."}
    assert [b["tool_use_id"] for b in turns[2]["content"]] == ["t1", "t2"]


async def test_plain_text_answers_come_back_as_text(fake):
    """Without an output schema (e.g. writing a SKILL.md) text blocks are the answer and no tool is forced."""
    fake.add_text("# Skill\nRoute refunds to billing.")
    response = await model_for(fake).request(ModelRequest(messages=[Message(role="user", content="Write it.")]))
    assert response.text.startswith("# Skill") and response.stop_reason == "end_turn"
    assert "tool_choice" not in fake.requests[0].body and "tools" not in fake.requests[0].body


async def test_cache_tokens_are_parsed_and_priced(fake):
    """Cache reads and writes reported by the API land in Usage and are charged at 0.1x and 1.25x input."""
    fake.add_final(
        {"queue": "billing", "priority": 2},
        usage={"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 3000, "cache_write_tokens": 1000},
    )
    model = model_for(fake)
    response = await model.request(triage_request())
    assert response.usage == Usage(input_tokens=100, output_tokens=20, cache_read_tokens=3000, cache_write_tokens=1000)
    assert cost_of(model, response.usage) == pytest.approx((100 * 1 + 20 * 5 + 3000 * 0.1 + 1000 * 1.25) / 1e6)


async def test_a_rate_limit_then_success_succeeds_through_sdk_retries(fake):
    """One 429 is retried by the SDK itself and the call succeeds."""
    fake.add_fault(429)
    fake.add_final({"queue": "bug", "priority": 1})
    response = await model_for(fake, max_retries=2).request(triage_request())
    assert json.loads(response.text)["queue"] == "bug" and len(fake.requests) == 2


@pytest.mark.parametrize(
    "fault, error, status",
    [
        ({"status": 429}, RateLimited, 429),
        ({"status": 529}, Overloaded, 529),
        ({"status": 500}, ModelError, 500),
        ({"slow": 2.0}, ModelTimeout, None),
        ({"malformed": True}, BadResponse, None),
    ],
)
async def test_faults_map_to_model_errors_after_retries(fake, fault, error, status):
    """Each provider failure, once the SDK's retries are spent, is the matching ModelError subclass."""
    for _ in range(3):
        fake.add_fault(**fault)
    with pytest.raises(error) as caught:
        await model_for(fake, max_retries=1, timeout=0.3).request(triage_request())
    assert type(caught.value) is error and caught.value.model == "anthropic:claude-haiku-4-5"
    if status is not None:
        assert caught.value.status == status


async def test_a_529_body_is_recognised_as_overloaded(fake):
    """The overloaded_error body Anthropic sends with 529 reads as Overloaded, with the body kept."""
    for _ in range(2):
        fake.add_fault(529)
    with pytest.raises(Overloaded) as caught:
        await model_for(fake, max_retries=1).request(triage_request())
    assert caught.value.body["error"]["type"] == "overloaded_error"


def test_missing_key_fails_before_any_request(monkeypatch):
    """No key argument and no ANTHROPIC_API_KEY is a MissingKeyError naming the env var."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(MissingKeyError, match="ANTHROPIC_API_KEY") as caught:
        AnthropicModel("claude-haiku-4-5")
    assert caught.value.env_var == "ANTHROPIC_API_KEY"


async def test_key_from_env_reaches_the_server_but_never_its_records(fake, monkeypatch):
    """ANTHROPIC_API_KEY is sent (the fake checks it) yet appears in no recorded request."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    fake.add_final({"queue": "bug", "priority": 1})
    model = resolve_model("anthropic:claude-haiku-4-5", base_url=fake.anthropic_base_url)
    assert isinstance(model, AnthropicModel) and model.name == "anthropic:claude-haiku-4-5"
    await model.request(triage_request())
    assert KEY not in json.dumps([r.body for r in fake.requests])


async def test_keys_never_appear_in_error_messages(fake):
    """A wrong key is a 401 ModelError pointing at the env var; a server echoing the key has it scrubbed."""
    wrong = AnthropicModel("claude-haiku-4-5", api_key="sk-ant-wrong-key-42", base_url=fake.anthropic_base_url)
    with pytest.raises(ModelError, match="ANTHROPIC_API_KEY") as caught:
        await wrong.request(triage_request())
    assert caught.value.status == 401 and "sk-ant-wrong-key-42" not in str(caught.value)
    fake.add_fault(400, message=f"bad request from key {KEY}")
    with pytest.raises(ModelError) as caught:
        await model_for(fake).request(triage_request())
    assert KEY not in str(caught.value) and KEY not in json.dumps(caught.value.body)
    assert "***" in str(caught.value)


def test_one_model_serves_calls_from_successive_event_loops(fake):
    """Sync callers run each call in a fresh loop (asyncio.run); the model keeps working across them."""
    model = model_for(fake)
    for priority in (1, 2, 3):
        fake.add_final({"queue": "bug", "priority": priority})
        response = asyncio.run(model.request(triage_request()))
        assert json.loads(response.text)["priority"] == priority


def test_a_placeholder_key_is_not_scrubbed_out_of_every_word():
    """`api_key="k"` (a test's placeholder) turned `FakeProvider` into `Fa***eProvider` in every error."""
    from protege.agents.models.sdk_support import _scrub

    assert _scrub("FakeProvider handler failed", "k") == "FakeProvider handler failed"
    assert _scrub({"error": f"bad key {KEY}"}, KEY) == {"error": "bad key ***"}


def test_a_failed_call_carries_the_providers_error_and_its_retry_after(fake, tmp_path):
    """A service behind protege could not turn a provider's 429 into its own 503 with Retry-After: the failure
    was a string in `attempts[i].errors`. AllTiersFailed's cause is now the model error, with `retry_after`."""
    from protege import AllTiersFailed, Policy, Protege

    fake.add_fault(429, retry_after=7)
    app = Protege(db=f"sqlite:///{tmp_path}/r.db", teacher=model_for(fake, max_retries=0), project_dir=tmp_path)
    try:

        def route(text: str) -> Queue:
            """Route the text to a queue."""

        app.task(policy=Policy(program=False))(route)
        with pytest.raises(AllTiersFailed) as caught:
            app.run("route", {"text": "refund"})
        cause = caught.value.__cause__
        assert isinstance(cause, RateLimited) and cause.status == 429 and cause.retry_after == 7.0
    finally:
        app.close()


class Queue(BaseModel):
    queue: str


ANSWER = {"queue": "billing", "priority": 2}


@pytest.mark.parametrize(
    "stop", ["max_tokens", "model_context_window_exceeded", "refusal", "pause_turn", "a_reason_added_later"]
)
async def test_an_answer_that_did_not_finish_comes_back_cut_short_with_its_usage(fake, stop):
    """Only end_turn, tool_use and stop_sequence are finished answers: any other stop reason (one the SDK does not
    know yet included) is kept with the answer, whose paid usage is read, and marks it cut short (never served)."""
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason=stop, usage={"input_tokens": 400, "output_tokens": 512}))
    response = await model_for(fake).request(triage_request())
    assert response.cut_short and response.stop_reason == stop and response.raw["stop_reason"] == stop
    assert response.usage == Usage(input_tokens=400, output_tokens=512)


@pytest.mark.parametrize("stop", ["end_turn", "tool_use", "stop_sequence"])
async def test_finished_stop_reasons_are_not_cut_short(fake, stop):
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason=stop))
    response = await model_for(fake).request(triage_request())
    assert not response.cut_short and json.loads(response.text) == ANSWER


async def test_an_answer_without_usage_is_kept_with_an_estimated_usage(fake):
    """A message without `usage` was a paid, valid answer thrown away as unreadable; it is kept, and its usage is
    estimated from the request and the reply (and marked so in the payload the trace keeps)."""
    fake.add_reply(Reply("final", answer=ANSWER, omit_usage=True))
    response = await model_for(fake).request(triage_request())
    assert json.loads(response.text) == ANSWER and not response.cut_short
    assert response.usage.input_tokens > 20 and response.usage.output_tokens > 5
    assert response.raw["usage_estimated"] is True


async def test_differing_final_answers_are_unreadable_and_carry_what_they_cost(fake):
    """Two final_answer calls with different answers leave no answer to pick (the last used to win silently): a
    BadResponse that carries the usage the provider reported, so the reply is charged. Equal ones are one answer."""
    paid = {"input_tokens": 300, "output_tokens": 40}
    fake.add_tool_calls([(FINAL_TOOL, ANSWER), (FINAL_TOOL, {**ANSWER, "priority": 5})], usage=paid)
    with pytest.raises(BadResponse, match="2 times with different answers") as caught:
        await model_for(fake).request(triage_request())
    assert caught.value.usage == Usage(**paid)
    fake.add_tool_calls([(FINAL_TOOL, ANSWER), (FINAL_TOOL, dict(reversed(ANSWER.items())))])
    assert json.loads((await model_for(fake).request(triage_request())).text) == ANSWER


async def test_a_malformed_body_carries_an_estimated_usage(fake):
    """A 200 whose body cannot be parsed was billed all the same: its BadResponse carries an estimate."""
    fake.add_fault(malformed=True)
    with pytest.raises(BadResponse) as caught:
        await model_for(fake).request(triage_request())
    assert caught.value.usage.input_tokens > 20


async def test_a_tool_input_that_is_not_an_object_is_read_without_serializer_warnings(fake):
    """A tool input that is a string made pydantic warn PydanticSerializationUnexpectedValue on every dump."""
    fake.add_tool_call(FINAL_TOOL, "severity=sev1")
    fake.add_tool_call("lookup_customer", "ann@example.com", usage={"input_tokens": 50, "output_tokens": 9})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert (await model_for(fake).request(triage_request())).text == '"severity=sev1"'  # the cascade rejects it
        with pytest.raises(BadResponse, match="not an object") as bad:
            await model_for(fake).request(triage_request())
    assert bad.value.usage == Usage(input_tokens=50, output_tokens=9)
    assert not [w for w in caught if "Serializ" in str(w.message)], [str(w.message)[:200] for w in caught]
