"""OpenAIModel through the real `openai` SDK, talking HTTP to the fake provider server."""

from __future__ import annotations

import json
import warnings

import pytest

from protege.agents import Message, ModelRequest, ToolSpec, Usage, resolve_model
from protege.agents.models.openai import OpenAIModel
from protege.agents.pricing import cost_of
from protege.errors import BadResponse, MissingKeyError, ModelError, ModelTimeout, Overloaded, RateLimited
from protege.testing import FakeProvider, Reply

KEY = "sk-proj-test-0123456789abcdef"
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


def model_for(fake: FakeProvider, name: str = "gpt-4o-mini", **options) -> OpenAIModel:
    return OpenAIModel(name, api_key=KEY, base_url=fake.openai_base_url, **options)


def triage_request(tools=(LOOKUP,)) -> ModelRequest:
    return ModelRequest(
        messages=[
            Message(role="system", content="You triage support tickets.", cache=True),
            Message(role="user", content='{"subject": "Refund", "body": "charged twice, ann@example.com"}'),
        ],
        tools=list(tools),
        output_schema=SCHEMA,
        max_tokens=512,
    )


async def test_tool_using_exchange_ends_in_a_structured_answer(fake):
    """The model calls a tool, sees its result, then answers in JSON per response_format; usage and cost add up."""
    fake.add_tool_call(
        "lookup_customer", {"email": "ann@example.com"}, id="call_1", usage={"input_tokens": 300, "output_tokens": 25}
    )
    fake.add_final({"queue": "billing", "priority": 2}, usage={"input_tokens": 340, "output_tokens": 15})
    model = model_for(fake)
    req = triage_request()

    first = await model.request(req)
    assert [(c.id, c.name, c.arguments) for c in first.tool_calls] == [
        ("call_1", "lookup_customer", {"email": "ann@example.com"})
    ]
    assert first.stop_reason == "tool_calls"

    req.messages += [
        Message(role="assistant", tool_calls=first.tool_calls),
        Message(role="tool", tool_call_id="call_1", content='{"plan": "pro"}'),
    ]
    final = await model.request(req)
    assert json.loads(final.text) == {"queue": "billing", "priority": 2} and final.stop_reason == "stop"
    assert final.model == "openai:gpt-4o-mini" and final.raw["usage"]["prompt_tokens"] == 340

    total = first.usage + final.usage
    assert total == Usage(input_tokens=640, output_tokens=40)
    assert cost_of(model, total) == pytest.approx((640 * 0.15 + 40 * 0.6) / 1e6)

    sent = [r.body for r in fake.requests]
    assert sent[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "final_answer", "schema": SCHEMA, "strict": False},
    }
    assert sent[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_customer",
                "description": "Find a customer by email",
                "parameters": LOOKUP.parameters,
            },
        }
    ]
    assert sent[0]["max_tokens"] == 512 and sent[0]["temperature"] == 0.0
    assert sent[1]["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_customer", "arguments": '{"email": "ann@example.com"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"plan": "pro"}'},
    ]


async def test_cached_prompt_tokens_are_split_out_and_priced(fake):
    """prompt_tokens includes cached ones: Usage keeps them apart and gpt-4o charges them at half price."""
    fake.add_final(
        {"queue": "bug", "priority": 1}, usage={"input_tokens": 200, "output_tokens": 10, "cache_read_tokens": 1800}
    )
    model = model_for(fake, "gpt-4o")
    response = await model.request(triage_request())
    assert response.raw["usage"]["prompt_tokens"] == 2000
    assert response.usage == Usage(input_tokens=200, output_tokens=10, cache_read_tokens=1800)
    assert cost_of(model, response.usage) == pytest.approx((200 * 2.5 + 10 * 10 + 1800 * 1.25) / 1e6)


async def test_tool_arguments_that_are_not_a_json_object_are_the_calls_error(fake):
    """A model's slip in one call's arguments failed the whole answer (a BadResponse): the call now carries why, for
    the tool box to answer it (so the model can send it again), and the answer keeps its usage."""
    fake.add_tool_calls(
        [("lookup_customer", '{"email": "ann@'), ("lookup_customer", "[1]")],
        ids=["call_9", "call_10"],
        usage={"input_tokens": 300, "output_tokens": 30},
    )
    response = await model_for(fake).request(triage_request())
    broken, listed = response.tool_calls
    assert (
        broken.id == "call_9" and broken.arguments == {} and response.usage == Usage(input_tokens=300, output_tokens=30)
    )
    assert (
        broken.arguments_error.startswith("arguments are not valid JSON: ")
        and '\'{"email": "ann@\'' in broken.arguments_error
    )
    assert listed.arguments_error == "arguments are not a JSON object: '[1]'; send an object of the tool's parameters"


async def test_reasoning_models_get_max_completion_tokens_and_no_temperature(fake):
    """gpt-5 family requests use max_completion_tokens and leave temperature at the model's default."""
    fake.add_final({"queue": "bug", "priority": 1})
    await model_for(fake, "gpt-5-mini").request(triage_request())
    body = fake.requests[0].body
    assert body["max_completion_tokens"] == 512 and "max_tokens" not in body and "temperature" not in body


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
        ({"status": 503}, Overloaded, 503),
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
    assert type(caught.value) is error and caught.value.model == "openai:gpt-4o-mini"
    if status is not None:
        assert caught.value.status == status


def test_missing_key_without_a_server_is_a_missing_key_error(monkeypatch):
    """No key and no base_url is a MissingKeyError naming OPENAI_API_KEY."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        OpenAIModel("gpt-4o-mini")


async def test_compatible_servers_need_no_key(monkeypatch):
    """With OPENAI_BASE_URL set (vLLM, llama.cpp, Ollama) and no key, a placeholder key is sent and calls work."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with FakeProvider() as open_server:
        monkeypatch.setenv("OPENAI_BASE_URL", open_server.openai_base_url)
        open_server.add_text("hello from a local server")
        model = resolve_model("openai:qwen2.5-0.5b-instruct")
        response = await model.request(ModelRequest(messages=[Message(role="user", content="hi")]))
    assert response.text == "hello from a local server" and model.name == "openai:qwen2.5-0.5b-instruct"
    assert "response_format" not in open_server.requests[0].body


async def test_keys_never_appear_in_records_or_error_messages(fake):
    """The key reaches the server (it checks) but not its records; a server echoing it has it scrubbed."""
    fake.add_final({"queue": "bug", "priority": 1})
    await model_for(fake).request(triage_request())
    assert KEY not in json.dumps([r.body for r in fake.requests])
    fake.add_fault(401, message=f"Incorrect API key provided: {KEY}")
    with pytest.raises(ModelError, match="OPENAI_API_KEY") as caught:
        await model_for(fake).request(triage_request())
    assert caught.value.status == 401 and KEY not in str(caught.value) and KEY not in json.dumps(caught.value.body)


ANSWER = {"queue": "billing", "priority": 2}


@pytest.mark.parametrize("finish", ["length", "content_filter", "function_call", "a_reason_added_later"])
async def test_an_answer_that_did_not_finish_comes_back_cut_short_with_its_usage(fake, finish):
    """Only stop and tool_calls are finished answers: content_filter passed as valid, and length raised without
    its usage; now the answer comes back with its stop reason and paid usage, marked cut short (never served)."""
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason=finish, usage={"input_tokens": 400, "output_tokens": 512}))
    response = await model_for(fake).request(triage_request())
    assert response.cut_short and response.stop_reason == finish
    assert response.usage == Usage(input_tokens=400, output_tokens=512)


@pytest.mark.parametrize("finish", ["eos_token", "eos"])
async def test_servers_that_end_answers_at_the_eos_token_finish_them(fake, finish):
    """TGI before v2.3 says `eos_token` (others `eos`) where OpenAI says `stop`: a hosted student's every answer
    would have escalated to the teacher."""
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason=finish))
    response = await model_for(fake).request(triage_request())
    assert not response.cut_short and json.loads(response.text) == ANSWER


async def test_an_answer_without_usage_is_charged_an_estimate_not_nothing(fake):
    """A completion without `usage` was charged Usage() ($0, and the budget cap never saw it): its usage is now
    estimated from the request and the reply, and marked so."""
    fake.add_reply(Reply("final", answer=ANSWER, omit_usage=True))
    model = model_for(fake, "gpt-4o")
    response = await model.request(triage_request())
    assert json.loads(response.text) == ANSWER and response.raw["usage_estimated"] is True
    assert response.usage.input_tokens > 20 and response.usage.output_tokens > 5
    assert cost_of(model, response.usage) > 0


async def test_unreadable_answers_carry_what_they_cost(fake):
    """A body that cannot be parsed comes from a billed 200: the BadResponse carries an estimate of its usage, so
    the budget and the ledger charge it."""
    fake.add_fault(malformed=True)
    with pytest.raises(BadResponse) as caught:
        await model_for(fake).request(triage_request())
    assert caught.value.usage.input_tokens > 20


def test_a_malformed_completion_is_read_without_serializer_warnings():
    """Tool arguments sent as an object (some compatible servers do) made pydantic warn on every dump."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletion

    call = {"id": "c1", "type": "function", "function": {"name": "lookup_customer", "arguments": {"email": "a"}}}
    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [call]}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 70, "completion_tokens": 8, "total_tokens": 78},
    }
    completion = construct_type(type_=ChatCompletion, value=body)  # what the SDK builds from the JSON body
    model = OpenAIModel("gpt-4o-mini", api_key=KEY)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(BadResponse) as bad:
            model.parse(completion, triage_request())
    assert bad.value.usage == Usage(input_tokens=70, output_tokens=8)
    assert not [w for w in caught if "Serializ" in str(w.message)], [str(w.message)[:200] for w in caught]
