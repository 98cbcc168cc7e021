"""FakeProvider itself: routing, scripting, handlers, recording, faults and a clean stop."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest

from protege.agents import Message, ModelRequest
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.models.openai import OpenAIModel
from protege.errors import ModelError
from protege.testing import FakeProvider, FunctionModel, RecordedRequest, ReferenceModel, Reply, ScriptedModel

ASK = ModelRequest(messages=[Message(role="user", content="Which queue?")], output_schema={"type": "object"})


def post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_testing_module_reexports_the_model_doubles():
    """protege.testing offers the same FunctionModel/ScriptedModel/ReferenceModel as protege.agents."""
    from protege import agents

    assert (FunctionModel, ScriptedModel, ReferenceModel) == (
        agents.FunctionModel,
        agents.ScriptedModel,
        agents.ReferenceModel,
    )


def test_official_sync_clients_work_unmodified():
    """The plain sync SDK clients parse the fake's answers into their own response types."""
    with FakeProvider() as fake:
        fake.add_text("hello")
        fake.add_text("hi there")
        claude = anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
        message = claude.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        gpt = openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0)
        completion = gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == "hello" and message.usage.input_tokens > 0
    assert completion.choices[0].message.content == "hi there" and completion.usage.completion_tokens > 0
    assert [(r.provider, r.path) for r in fake.requests] == [
        ("anthropic", "/v1/messages"),
        ("openai", "/v1/chat/completions"),
    ]


async def test_handler_answers_dynamically_after_the_queue():
    """Queued replies go first; then the handler answers from the provider name and request body."""
    seen = []

    def handler(provider: str, body: dict) -> Reply | dict:
        seen.append(provider)
        return {"provider": provider, "model": body["model"]}

    with FakeProvider(handler=handler) as fake:
        fake.add_final({"queued": True})
        claude = AnthropicModel("claude-haiku-4-5", api_key="k", base_url=fake.anthropic_base_url)
        gpt = OpenAIModel("gpt-4o-mini", api_key="k", base_url=fake.openai_base_url)
        assert json.loads((await claude.request(ASK)).text) == {"queued": True}
        assert json.loads((await claude.request(ASK)).text) == {"provider": "anthropic", "model": "claude-haiku-4-5"}
        assert json.loads((await gpt.request(ASK)).text) == {"provider": "openai", "model": "gpt-4o-mini"}
    assert seen == ["anthropic", "openai"] and fake.pending == 0


def tool_then_answer(provider: str, body: dict) -> Reply:
    """A handler that calls a tool first, then answers once the request carries the tool's result."""
    last = body["messages"][-1]
    has_result = last["role"] == "tool" or (
        isinstance(last["content"], list) and last["content"][0].get("type") == "tool_result"
    )
    if has_result:
        return Reply.final({"answered_by": provider}, usage={"input_tokens": 50, "output_tokens": 5})
    return Reply.tool_calls([("lookup", {"q": 1})], ids=["t1"])


@pytest.mark.parametrize("model_class", [AnthropicModel, OpenAIModel])
async def test_a_handler_can_drive_a_whole_tool_exchange(model_class):
    """A stateless handler reading the request body plays a tool-using model for either SDK."""
    with FakeProvider(handler=tool_then_answer) as fake:
        base_url = fake.anthropic_base_url if model_class is AnthropicModel else fake.openai_base_url
        model = model_class("some-model", api_key="k", base_url=base_url)
        req = ASK.model_copy(deep=True)
        first = await model.request(req)
        req.messages += [
            Message(role="assistant", tool_calls=first.tool_calls),
            Message(role="tool", tool_call_id=first.tool_calls[0].id, content="42"),
        ]
        final = await model.request(req)
    assert first.tool_calls[0].name == "lookup" and first.tool_calls[0].arguments == {"q": 1}
    provider = "anthropic" if model_class is AnthropicModel else "openai"
    assert json.loads(final.text) == {"answered_by": provider} and final.usage.input_tokens == 50


async def test_concurrent_calls_are_each_answered():
    """Twenty concurrent calls through one model each get a reply from the threaded server."""
    with FakeProvider(handler=lambda provider, body: {"echo": body["messages"][0]["content"]}) as fake:
        model = OpenAIModel("gpt-4o-mini", api_key="k", base_url=fake.openai_base_url)
        requests = [ModelRequest(messages=[Message(role="user", content=f"n{i}")]) for i in range(20)]
        answers = await asyncio.gather(*(model.request(r) for r in requests))
    assert sorted(json.loads(a.text)["echo"] for a in answers) == sorted(f"n{i}" for i in range(20))


async def test_default_usage_is_estimated_from_request_and_reply():
    """Without scripted usage the fake reports estimated token counts that grow with the prompt."""
    with FakeProvider(handler=lambda provider, body: "ok") as fake:
        model = AnthropicModel("claude-haiku-4-5", api_key="k", base_url=fake.anthropic_base_url)
        short = await model.request(ModelRequest(messages=[Message(role="user", content="hi")]))
        long = await model.request(ModelRequest(messages=[Message(role="user", content="hello there " * 100)]))
    assert 0 < short.usage.input_tokens < long.usage.input_tokens and short.usage.output_tokens == 1


async def test_running_out_of_replies_fails_fast_and_clearly():
    """With no reply queued and no handler the call fails at once (no retries) saying what to do."""
    with FakeProvider() as fake:
        model = AnthropicModel("claude-haiku-4-5", api_key="k", base_url=fake.anthropic_base_url, max_retries=3)
        started = time.perf_counter()
        with pytest.raises(ModelError, match="no reply queued"):
            await model.request(ASK)
    assert len(fake.requests) == 1 and time.perf_counter() - started < 1.0


async def test_a_failing_handler_is_reported_not_hung():
    """A handler that raises gives the client a 500 at once and keeps the exception in fake.errors."""

    def broken(provider: str, body: dict) -> str:
        raise RuntimeError("handler bug")

    with FakeProvider(handler=broken) as fake:
        model = OpenAIModel("gpt-4o-mini", api_key="k", base_url=fake.openai_base_url)
        with pytest.raises(ModelError, match="handler bug"):
            await model.request(ASK)
    assert [str(e) for e in fake.errors] == ["handler bug"]


def test_requests_are_recorded_without_headers_and_bad_routes_are_404():
    """Bodies are recorded per provider and path; unknown paths get 404 and non-JSON bodies 400."""
    with FakeProvider(handler=lambda provider, body: "fine") as fake:
        base = f"http://127.0.0.1:{fake.port}"
        assert post(base + "/v1/messages", b'{"model": "m", "messages": []}')[0] == 200
        assert post(base + "/v2/other", b"{}")[0] == 404
        status, body = post(base + "/v1/chat/completions", b"{broken")
    assert status == 400 and body["error"]["message"] == "request body is not JSON"
    assert fake.requests == [RecordedRequest("anthropic", "/v1/messages", {"model": "m", "messages": []})]
    assert not hasattr(fake.requests[0], "headers")


def test_retry_after_is_sent_with_rate_limits():
    """A 429 fault tells the client when to retry, in the headers both SDKs read."""
    with FakeProvider() as fake:
        fake.add_fault(429, retry_after=2.5)
        request = urllib.request.Request(f"http://127.0.0.1:{fake.port}/v1/messages", data=b"{}")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 429
    assert caught.value.headers["retry-after-ms"] == "2500" and caught.value.headers["retry-after"] == "2"
    assert json.loads(caught.value.read())["error"]["type"] == "rate_limit_error"


def test_stop_is_prompt_and_clean_even_mid_request():
    """Stopping while a slow reply is pending returns quickly, frees the port and ends the server thread."""
    fake = FakeProvider().start()
    fake.add_fault(slow=30)
    port = fake.port
    worker = threading.Thread(target=post, args=(f"http://127.0.0.1:{port}/v1/messages", b"{}"), daemon=True)
    worker.start()
    while not fake.requests:
        time.sleep(0.01)
    started = time.perf_counter()
    fake.stop()
    assert time.perf_counter() - started < 2.0
    worker.join(timeout=2)
    assert not worker.is_alive()
    assert not any(t.name == "protege-fake-provider" for t in threading.enumerate())
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)
