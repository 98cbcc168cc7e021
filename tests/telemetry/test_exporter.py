"""The opt-in exporter: `Protege(otel=URL)` / PROTEGE_OTEL_ENDPOINT send spans over OTLP/HTTP (protobuf) to a real
receiver on loopback, which decodes them with opentelemetry-proto."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from otlp_receiver import Receiver, attributes
from triage_support import Ticket, Triage

from protege import Protege, UserError
from protege.agents import FunctionModel
from protege.telemetry.exporter import traces_url


def make_app(tmp_path, **kw) -> Protege:
    teacher = FunctionModel(
        lambda req: json.dumps({"queue": "bug", "priority": 2}),
        name="function:teacher",
        price_as="anthropic:claude-opus-4-5",
    )
    app = Protege(db=f"sqlite:///{tmp_path}/e.db", project_dir=tmp_path, teacher=teacher, **kw)

    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    app.task(triage)
    return app


def test_spans_arrive_at_a_real_otlp_http_receiver(tmp_path):
    with Receiver() as receiver:
        app = make_app(tmp_path, otel=receiver.url)
        results = [app.run("triage", {"ticket": {"subject": f"crash {i}"}}) for i in range(3)]
        app.close()  # flushes the batch
        spans = receiver.spans()
    assert receiver.content_types and all(t == "application/x-protobuf" for t in receiver.content_types)
    names = sorted(span.name for _, _, span in spans)
    assert names == sorted(["protege.run", "protege.attempt teacher", "chat teacher"] * 3)
    resource, scope, _ = spans[0]
    assert {kv.key: kv.value.string_value for kv in resource.attributes}["service.name"] == "protege"
    assert scope.name == "protege"
    attempts = [attributes(s) for _, _, s in spans if s.name == "protege.attempt teacher"]
    assert sorted(a["protege.trace_id"] for a in attempts) == sorted(r.trace_ids[0] for r in results)
    chat = next(attributes(s) for _, _, s in spans if s.name == "chat teacher")
    assert chat["gen_ai.provider.name"] == "function" and chat["gen_ai.request.model"] == "teacher"
    assert chat["gen_ai.usage.output_tokens"] > 0 and chat["protege.cost_usd"] > 0
    assert "gen_ai.input.messages" not in chat  # content stays off unless asked for


def test_an_app_used_after_close_still_exports_its_spans(tmp_path):
    """close() stops the exporter protege made; a call after it opens the app again, and its spans arrive too
    (they were dropped by the stopped provider)."""
    with Receiver() as receiver:
        app = make_app(tmp_path, otel=receiver.url)
        first = app.run("triage", {"ticket": {"subject": "before"}})
        app.close()
        second = app.run("triage", {"ticket": {"subject": "after"}})
        app.close()
        spans = receiver.spans()
    runs = [attributes(s)["protege.run_id"] for _, _, s in spans if s.name == "protege.run"]
    assert sorted(runs) == sorted([first.run_id, second.run_id])


def test_the_endpoint_comes_from_the_environment_too(tmp_path, monkeypatch):
    with Receiver() as receiver:
        monkeypatch.setenv("PROTEGE_OTEL_ENDPOINT", receiver.url + "/")
        app = make_app(tmp_path)
        app.run("triage", {"ticket": {"subject": "a"}})
        app.close()
        assert "protege.run" in {span.name for _, _, span in receiver.spans()}


@pytest.mark.parametrize("endpoint", ["localhost:4318", "ftp://collector:4318", "  "])
def test_a_bad_endpoint_is_a_user_error_naming_it(tmp_path, endpoint):
    with pytest.raises(UserError, match="otel endpoint") as err:
        make_app(tmp_path, otel=endpoint)
    assert repr(endpoint) in str(err.value) and "4318" in str(err.value)


def test_otel_must_be_a_url_or_a_provider(tmp_path):
    with pytest.raises(UserError, match="neither a collector URL nor a TracerProvider"):
        make_app(tmp_path, otel=42)


def test_traces_url():
    assert traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert traces_url("https://c.example/otlp/") == "https://c.example/otlp/v1/traces"
    assert traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_closing_with_the_collector_down_does_not_hang(tmp_path):
    """Nothing listens at the endpoint: the call is served, and closing stops waiting for the exporter's retries
    with a warning that names the endpoint (the spans are lost, and said so)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    app = make_app(tmp_path, otel=f"http://127.0.0.1:{port}")
    assert app.run("triage", {"ticket": {"subject": "a"}}).tier == "teacher"
    with pytest.warns(UserWarning, match=f"not delivered within 0.2 s .*127.0.0.1:{port}/v1/traces"):
        app.telemetry.shutdown(timeout_s=0.2)
    app.close()  # the provider is already stopped: nothing more to wait for


def test_a_provider_with_its_own_processor_says_it_cannot_be_made_again(caplog):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from protege.telemetry.exporter import otlp_provider
    from protege.telemetry.spans import Telemetry

    provider = otlp_provider("http://127.0.0.1:9", processor=SimpleSpanProcessor(InMemorySpanExporter()))
    telemetry = Telemetry(provider)
    telemetry.reopen()  # not closed: nothing to do
    telemetry.shutdown()
    telemetry.reopen()
    assert telemetry.provider is provider and "not exported from now on" in caplog.text
