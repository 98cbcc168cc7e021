"""OpenTelemetry spans of a call, read back from the SDK's in-memory exporter: the tree of an escalated call
(student → teacher through the real Anthropic SDK and the fake provider, with a tool), its GenAI attributes,
content off by default, and redaction when content is on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from triage_support import Ticket, Triage

from protege.agents.cascade import Cascade, StudentPick, TaskRuntime
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.models.base import ModelRequest, ModelResponse, Usage
from protege.agents.tools import ToolBox
from protege.errors import AllTiersFailed
from protege.store import Store
from protege.tasks import Policy, TaskSpec
from protege.telemetry import Telemetry
from protege.testing import FakeProvider

GOOD = {"queue": "billing", "priority": 2}
SECRET = "sk-ant-api03-" + "Zq7" * 12  # an Anthropic-shaped key planted in the input
CONTENT_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    "gen_ai.system_instructions",
)


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


def lookup_account(email: str) -> dict:
    """Find the customer's plan."""
    return {"plan": "pro", "note": f"api_key={SECRET}"}  # a tool result holding a secret too


class BadStudent:
    """A student whose answer never parses, so the call escalates."""

    name, price_as = "local:stu-1", None

    async def request(self, req: ModelRequest) -> ModelResponse:
        return ModelResponse(text="not json", usage=Usage(input_tokens=40, output_tokens=3), stop_reason="end_turn")


class Tiers:
    def __init__(self, teacher, student=None):
        self.t, self.s = teacher, student

    def teacher(self, task):
        return self.t

    def replay(self, task):
        return self.t

    def student(self, task, *, forced):
        return StudentPick(self.s, "stu-1") if self.s else None

    def skill(self, task, *, forced):
        return None

    def prior_art(self, task):
        return []

    def cost(self, model, usage):
        return usage.input_tokens * 1e-6 + usage.output_tokens * 5e-6


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter):
    p = TracerProvider()
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/t.db")
    yield s
    s.close()


def escalated_call(store, provider, *, content=False, subject="refund please"):
    """student (invalid) → teacher, which calls `lookup_account` once and then answers; returns the RunResult."""
    spec = TaskSpec(triage, policy=Policy(shadow_rate=0), tools=[lookup_account])
    task = TaskRuntime(spec=spec, version=1, tools=ToolBox([lookup_account]))
    with FakeProvider() as fake:
        fake.add_tool_calls(
            [("lookup_account", {"email": "a@example.com"})],
            ids=["toolu_1"],
            usage={"input_tokens": 300, "output_tokens": 20},
        )
        fake.add_final(GOOD, usage={"input_tokens": 100, "output_tokens": 15, "cache_read_tokens": 200})
        teacher = AnthropicModel("claude-opus-4-5", api_key="test-key", base_url=fake.anthropic_base_url)
        cascade = Cascade(store, Tiers(teacher, BadStudent()), telemetry=Telemetry(provider, capture_content=content))
        inp = spec.parse_input((), {"ticket": {"subject": subject, "body": "my card was charged twice"}})
        return asyncio.run(cascade.run(task, inp))


def tree(exporter):
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    parent = {s.name: (by_id[s.parent.span_id].name if s.parent else None) for s in spans}
    return spans, parent


def test_escalated_call_span_tree_has_the_right_parents_names_and_genai_attributes(store, provider, exporter):
    res = escalated_call(store, provider)
    spans, parent = tree(exporter)
    names = sorted(s.name for s in spans)
    assert names == sorted(
        [
            "protege.run",
            "protege.attempt student",
            "protege.attempt teacher",
            "chat stu-1",
            "chat claude-opus-4-5",
            "chat claude-opus-4-5",
            "execute_tool lookup_account",
        ]
    )
    assert parent["protege.run"] is None
    assert parent["protege.attempt student"] == parent["protege.attempt teacher"] == "protege.run"
    assert parent["chat stu-1"] == "protege.attempt student"
    assert parent["chat claude-opus-4-5"] == parent["execute_tool lookup_account"] == "protege.attempt teacher"
    assert len({s.context.trace_id for s in spans}) == 1

    by_name = {s.name: s for s in spans}
    run = by_name["protege.run"].attributes
    assert run["protege.task"] == "triage" and run["protege.run_id"] == res.run_id
    assert run["protege.tier"] == "teacher" and run["protege.escalations"] == 1
    assert run["protege.cost_usd"] == pytest.approx(res.cost_usd)

    student, teacher = by_name["protege.attempt student"], by_name["protege.attempt teacher"]
    assert student.attributes["protege.trace_id"] == res.trace_ids[0]  # leads to `protege trace ID` / the TUI
    assert teacher.attributes["protege.trace_id"] == res.trace_ids[1]
    assert store.trace(teacher.attributes["protege.trace_id"]).tier == "teacher"
    assert student.status.status_code == StatusCode.ERROR and student.attributes["error.type"] == "invalid_answer"
    assert teacher.attributes["protege.valid"] is True

    chats = sorted((s for s in spans if s.name == "chat claude-opus-4-5"), key=lambda s: s.start_time)
    first, last = chats[0].attributes, chats[1].attributes
    assert chats[0].kind == SpanKind.CLIENT
    assert first["gen_ai.operation.name"] == "chat" and first["gen_ai.provider.name"] == "anthropic"
    assert first["gen_ai.request.model"] == "claude-opus-4-5" and first["gen_ai.response.id"].startswith("msg_")
    assert first["gen_ai.response.finish_reasons"] == ("tool_use",)
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (300, 20)
    assert (last["gen_ai.usage.input_tokens"], last["gen_ai.usage.cache_read.input_tokens"]) == (300, 200)
    student_chat = by_name["chat stu-1"].attributes
    assert student_chat["gen_ai.provider.name"] == "local" and by_name["chat stu-1"].kind == SpanKind.INTERNAL

    tool = by_name["execute_tool lookup_account"].attributes
    assert tool["gen_ai.operation.name"] == "execute_tool" and tool["gen_ai.tool.call.id"] == "toolu_1"
    assert tool["gen_ai.tool.name"] == "lookup_account"
    assert tool["gen_ai.tool.description"] == "Find the customer's plan."


def test_message_content_is_off_by_default(store, provider, exporter, monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    assert Telemetry(provider).capture_content is False
    escalated_call(store, provider, content=None, subject=f"refund please, my key is {SECRET}")
    for span in exporter.get_finished_spans():
        assert not set(CONTENT_KEYS) & set(span.attributes), span.name
        assert not any("refund please" in str(v) for v in span.attributes.values())


def test_content_switch_turns_capture_on(provider, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    assert Telemetry(provider).capture_content is True
    assert Telemetry(provider, capture_content=False).capture_content is False


def test_a_planted_secret_never_reaches_a_span_attribute(store, provider, exporter):
    """With content on, the input, the tool's arguments and result, and the answers are on the spans — redacted."""
    escalated_call(store, provider, content=True, subject=f"refund please, my key is {SECRET}")
    spans = exporter.get_finished_spans()
    values = [str(v) for s in spans for v in s.attributes.values()]
    assert not any(SECRET in v or SECRET[:20] in v for v in values)
    chat = next(s for s in spans if s.name == "chat claude-opus-4-5")
    messages = json.loads(chat.attributes["gen_ai.input.messages"])
    assert "refund please" in json.dumps(messages) and "[REDACTED:api_key]" in json.dumps(messages)
    tool = next(s for s in spans if s.name.startswith("execute_tool")).attributes
    assert json.loads(tool["gen_ai.tool.call.arguments"]) == {"email": "a@example.com"}  # PII stays: policy 'secrets'
    assert "[REDACTED" in tool["gen_ai.tool.call.result"]


def test_a_failed_call_is_an_error_span_with_no_message(store, provider, exporter):
    spec = TaskSpec(triage, policy=Policy(shadow_rate=0))
    task = TaskRuntime(spec=spec, version=1, tools=ToolBox([]))
    cascade = Cascade(store, Tiers(BadStudent()), telemetry=Telemetry(provider))
    with pytest.raises(AllTiersFailed):
        asyncio.run(cascade.run(task, spec.parse_input((), {"ticket": {"subject": "x"}})))
    run = next(s for s in exporter.get_finished_spans() if s.name == "protege.run")
    assert run.status.status_code == StatusCode.ERROR and run.status.description == "AllTiersFailed"
    assert run.attributes["protege.status"] == "failed" and run.attributes["protege.attempts"] == 1


class Raising:
    """A teacher whose request raises (a dropped connection)."""

    name, price_as = "function:down", None

    async def request(self, req: ModelRequest) -> ModelResponse:
        raise ConnectionError("connection reset by peer")


def test_an_attempt_whose_model_raised_names_the_exception_as_its_error_type(store, provider, exporter):
    """error.type is the class the model raised, as the chat span has it, not invalid_answer (it never answered)."""
    spec = TaskSpec(triage, policy=Policy(shadow_rate=0))
    task = TaskRuntime(spec=spec, version=1, tools=ToolBox([]))
    cascade = Cascade(store, Tiers(Raising()), telemetry=Telemetry(provider))
    with pytest.raises(AllTiersFailed):
        asyncio.run(cascade.run(task, spec.parse_input((), {"ticket": {"subject": "x"}})))
    attempt = next(s for s in exporter.get_finished_spans() if s.name == "protege.attempt teacher")
    assert attempt.attributes["error.type"] == "ConnectionError"


def test_global_provider_is_used_and_nothing_loads_without_one(tmp_path):
    """Through the real app in a fresh process: with no provider set, nothing is traced; once the app sets the
    global provider, the next call's spans reach it, under the app's own span."""
    script = textwrap.dedent(f"""
        import json, sys
        from protege import Protege
        from protege.agents import FunctionModel
        from triage_support import Ticket, Triage

        app = Protege(db="sqlite:///{tmp_path}/g.db", project_dir="{tmp_path}",
                      teacher=FunctionModel(lambda r: json.dumps({GOOD!r}), name="function:t"))

        @app.task
        def triage(ticket: Ticket) -> Triage:
            \"\"\"Route a support ticket.\"\"\"

        triage(Ticket(subject="a"))
        print("tracer", app.telemetry.tracer())
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        with trace.get_tracer("app").start_as_current_span("handler"):
            res = app.run("triage", {{"ticket": {{"subject": "b"}}}})
        spans = exporter.get_finished_spans()
        print("spans", sorted(s.name for s in spans))
        names = {{s.context.span_id: s.name for s in spans}}
        print("run parent", next(names[s.parent.span_id] for s in spans if s.name == "protege.run"))
        app.close()
    """)
    tests = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": f"{tests.parent / 'src'}:{tests}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert "tracer None" in lines  # no provider: every span helper is the shared no-op
    assert "spans ['chat t', 'handler', 'protege.attempt teacher', 'protege.run']" in lines
    assert "run parent handler" in lines  # the call nests under the app's current span (across the portal thread)


def test_a_provider_error_marks_the_request_span_with_its_type_and_status(store, provider, exporter):
    spec = TaskSpec(triage, policy=Policy(shadow_rate=0))
    task = TaskRuntime(spec=spec, version=1, tools=ToolBox([]))
    with FakeProvider() as fake:
        fake.add_fault(400, message=f"bad request for key {SECRET}")
        teacher = AnthropicModel("claude-opus-4-5", api_key="test-key", base_url=fake.anthropic_base_url)
        cascade = Cascade(store, Tiers(teacher), telemetry=Telemetry(provider, capture_content=True))
        with pytest.raises(AllTiersFailed):
            asyncio.run(cascade.run(task, spec.parse_input((), {"ticket": {"subject": "x"}})))
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat claude-opus-4-5")
    assert chat.status.status_code == StatusCode.ERROR
    assert chat.attributes["http.response.status_code"] == 400 and chat.attributes["error.type"].endswith("Error")
    assert not any(SECRET in str(v) for s in exporter.get_finished_spans() for v in s.attributes.values())
    assert all(
        not e.attributes or SECRET not in str(dict(e.attributes))
        for s in exporter.get_finished_spans()
        for e in s.events
    )


def test_a_broken_span_processor_never_fails_a_call(store, monkeypatch):
    """A processor that raises when spans start and end: the call is served and recorded all the same, with a
    warning that says what broke."""
    from opentelemetry.sdk.trace import SpanProcessor

    class Broken(SpanProcessor):
        def on_start(self, span, parent_context=None):
            raise RuntimeError("processor bug")

        def on_end(self, span):
            raise RuntimeError("processor bug")

    broken = TracerProvider()
    broken.add_span_processor(Broken())
    from protege.telemetry import spans

    monkeypatch.setattr(spans, "_WARNED", False)
    with pytest.warns(UserWarning, match="OpenTelemetry failed .*processor bug.* calls go on"):
        res = escalated_call(store, broken)
    assert res.tier == "teacher" and store.trace(res.trace_ids[1]).valid
