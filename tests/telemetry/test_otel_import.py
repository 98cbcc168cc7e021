"""`protege import-traces --format otel`: spans exported by protege over OTLP/HTTP and imported back make traces
equal in task, input, output and usage; OpenInference spans (as Phoenix writes them) become traces with usage and
cost; bad files get per-line errors and import nothing unless --skip-bad."""

from __future__ import annotations

import gzip
import json

import pytest

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")

from otlp_receiver import Receiver
from triage_support import Ticket, Triage
from typer.testing import CliRunner

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, ToolCall, Usage
from protege.agents.pricing import load_prices
from protege.cli import app as cli
from protege.cli.imports import Contract
from protege.store import Store
from protege.telemetry.otel_import import plan_otel_import


def plan_of(email: str) -> str:
    """The customer's plan by email address."""
    return "enterprise" if email.startswith("vip") else "free"


def teacher(req):
    """Looks the plan up with the tool, then answers; the answer's usage has prompt-cache reads."""
    if not any(m.role == "tool" for m in req.messages):
        call = ToolCall(id="c1", name="plan_of", arguments={"email": req.task_input["ticket"]["subject"]})
        return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=400, output_tokens=20))
    priority = 1 if req.messages[-1].content == "enterprise" else 3
    return ModelResponse(
        text=json.dumps({"queue": "billing", "priority": priority}),
        usage=Usage(input_tokens=500, output_tokens=30, cache_read_tokens=200),
    )


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for var in ("PROTEGE_APP", "PROTEGE_PROJECT_DIR", "PROTEGE_OTEL_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    db = f"sqlite:///{tmp_path / 'protege.db'}"
    monkeypatch.setenv("PROTEGE_DB", db)
    return db


def cli_run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def export_calls(tmp_path) -> tuple[list, object]:
    """Three calls of an app exporting to a loopback receiver with content on (one escalates from an invalid
    replay), recorded in a store of their own; returns the teacher traces and the OTLP JSON file the receiver
    wrote."""
    with Receiver() as receiver:
        app = Protege(
            db=f"sqlite:///{tmp_path / 'source.db'}",
            project_dir=tmp_path,
            otel=receiver.url,
            otel_content=True,
            teacher=FunctionModel(teacher, name="function:teacher", price_as="anthropic:claude-opus-4-5"),
            replay=FunctionModel(lambda req: '{"queue": "sales"}', name="function:replay"),
        )

        @app.task(tools=[plan_of])
        def triage(ticket: Ticket) -> Triage:
            """Route a support ticket to a queue and set its priority; look the customer's plan up first."""

        app.run("triage", {"ticket": {"subject": "vip@x: refund"}})
        app.run("triage", {"ticket": {"subject": "ann@x: refund", "body": "charged twice"}})
        app.run("triage", {"ticket": {"subject": "bob@x: refund"}}, tier="replay")  # replay fails, teacher answers
        originals = app.store.traces("triage", tier="teacher")
        app.close()
        return originals, receiver.write_json_lines(tmp_path / "spans.jsonl")


def test_round_trip_export_then_import_gives_equal_traces(tmp_path, env):
    """The teacher's calls come back as equal traces; the replay tier's attempt is left out, counted (its answers
    are no teacher's to learn from)."""
    originals, path = export_calls(tmp_path)
    report = json.loads(cli_run("import-traces", path, "--task", "triage", "--format", "otel", "--json").stdout)
    assert (report["imported"], report["lines"], report["skipped"]) == (3, 4, [])
    assert report["left_out"] == {"answered by protege's replay tier, not its teacher": 1}
    with Store(env) as store:
        imported = store.traces("triage", tier="import")
    assert len(originals) == len(imported) == 3

    def key(t):
        return json.dumps(t.input, sort_keys=True)

    fields = (
        "task_name",
        "input",
        "output",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    )
    before = {key(t): {f: getattr(t, f) for f in fields} for t in originals}
    after = {key(t): {f: getattr(t, f) for f in fields} for t in imported}
    assert after == before
    assert before[key(originals[0])]["cache_read_tokens"] == 200  # the cache arithmetic was exercised
    for t in imported:
        original = next(o for o in originals if key(o) == key(t))
        assert t.cost_usd == pytest.approx(original.cost_usd) and t.cost_usd > 0
        assert t.model == "function:teacher"
        assert [m["role"] for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]


def _attr(key, value):
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}


TRACE_ID = "5b8efff798038103d269b633813fc60c"


def _span(span_id, name, attrs, *, parent="", start=1, trace=TRACE_ID):
    return {
        "traceId": trace,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start * 10**9),
        "endTimeUnixNano": str(start * 10**9 + 5 * 10**8),
        "attributes": [_attr(k, v) for k, v in attrs.items()],
    }


def _doc(spans):
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [_attr("service.name", "support-bot")]},
                "scopeSpans": [{"scope": {"name": "openinference.instrumentation.openai"}, "spans": spans}],
            }
        ]
    }


def phoenix_spans(subject="refund please", trace=TRACE_ID):
    """An agent chain with two OpenInference LLM spans: a tool call, then the final answer."""
    user = json.dumps({"ticket": {"subject": subject}})
    first = {
        "openinference.span.kind": "LLM",
        "llm.model_name": "gpt-4o-mini",
        "llm.provider": "openai",
        "llm.input_messages.0.message.role": "system",
        "llm.input_messages.0.message.content": "Route tickets.",
        "llm.input_messages.1.message.role": "user",
        "llm.input_messages.1.message.content": user,
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_1",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "plan_of",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"email": "a@x"}',
        "llm.token_count.prompt": 120,
        "llm.token_count.completion": 15,
    }
    second = {k: v for k, v in first.items() if not k.startswith("llm.output_messages")}
    second.update(
        {
            "llm.input_messages.2.message.role": "assistant",
            "llm.input_messages.2.message.tool_calls.0.tool_call.id": "call_1",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.name": "plan_of",
            "llm.input_messages.2.message.tool_calls.0.tool_call.function.arguments": '{"email": "a@x"}',
            "llm.input_messages.3.message.role": "tool",
            "llm.input_messages.3.message.content": "free",
            "llm.input_messages.3.message.tool_call_id": "call_1",
            "llm.output_messages.0.message.role": "assistant",
            "llm.output_messages.0.message.content": '{"queue": "billing", "priority": 3}',
            "llm.token_count.prompt": 180,
            "llm.token_count.completion": 12,
            "llm.token_count.prompt_details.cache_read": 100,
        }
    )
    return [
        _span("aaaaaaaaaaaaaaa1", "agent", {"openinference.span.kind": "AGENT"}, trace=trace),
        _span("aaaaaaaaaaaaaaa2", "ChatCompletion", first, parent="aaaaaaaaaaaaaaa1", start=2, trace=trace),
        _span("aaaaaaaaaaaaaaa3", "ChatCompletion", second, parent="aaaaaaaaaaaaaaa1", start=3, trace=trace),
    ]


def test_openinference_spans_become_one_trace_with_usage_and_cost(tmp_path, env):
    path = tmp_path / "phoenix.json"
    path.write_text(json.dumps(_doc(phoenix_spans()), indent=2))  # one pretty-printed document
    report = json.loads(cli_run("import-traces", path, "--task", "support", "--format", "otel", "--json").stdout)
    assert (report["imported"], report["lines"], report["skipped"]) == (1, 1, [])
    with Store(env) as store:
        (trace,) = store.traces("support", tier="import")
    assert trace.input == {"ticket": {"subject": "refund please"}}
    assert trace.output == {"queue": "billing", "priority": 3}
    assert trace.model == "openai:gpt-4o-mini"
    assert (trace.input_tokens, trace.output_tokens, trace.cache_read_tokens) == (120 + 80, 27, 100)
    expected = (200 * 0.15 + 27 * 0.6 + 100 * 0.075) / 1e6  # the price table's gpt-4o-mini, USD per 1M tokens
    assert trace.cost_usd == pytest.approx(expected)
    assert [m["role"] for m in trace.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert trace.messages[2]["tool_calls"][0] == {"id": "call_1", "name": "plan_of", "arguments": {"email": "a@x"}}


def test_spans_written_twice_count_once(tmp_path, env):
    """A collector retrying an export writes the same spans (trace and span id) again: the same document on two
    lines, or one request span repeated in another. Each span counts once: one call, its usage summed once."""
    spans = phoenix_spans()
    lines = [json.dumps(_doc(spans)), json.dumps(_doc(spans)), json.dumps(_doc([spans[1]]))]
    path = tmp_path / "retried.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = json.loads(cli_run("import-traces", path, "--task", "support", "--format", "otel", "--json").stdout)
    assert (report["imported"], report["lines"], report["skipped"]) == (1, 1, [])
    with Store(env) as store:
        (trace,) = store.traces("support", tier="import")
    assert (trace.input_tokens, trace.output_tokens, trace.cache_read_tokens) == (120 + 80, 27, 100)


def test_a_byte_order_mark_or_gzip_is_read(tmp_path, env):
    """An export saved with a UTF-8 byte order mark, or gzip-compressed, imports like the plain file."""
    text = json.dumps(_doc(phoenix_spans()), indent=2)
    (tmp_path / "bom.json").write_text(text, encoding="utf-8-sig")
    (tmp_path / "spans.json.gz").write_bytes(gzip.compress(text.encode()))
    for name, task in (("bom.json", "bom"), ("spans.json.gz", "gz")):
        result = cli_run("import-traces", tmp_path / name, "--task", task, "--format", "otel", "--json")
        assert result.exit_code == 0 and json.loads(result.stdout)["imported"] == 1, result.output


def test_usage_without_a_recorded_cost_is_priced_by_the_given_table(tmp_path):
    """The app's price table (given as `prices`) prices a call that carries no cost; without one, the packaged."""
    path = tmp_path / "phoenix.json"
    path.write_text(json.dumps(_doc(phoenix_spans())))
    table = load_prices({"openai:gpt-4o-mini": {"input": 1, "output": 2, "cache_read": 0.5}})
    (priced,) = plan_otel_import(path, Contract(task="support"), prices=table).rows
    (packaged,) = plan_otel_import(path, Contract(task="support")).rows
    assert priced["cost_usd"] == pytest.approx((200 * 1 + 27 * 2 + 100 * 0.5) / 1e6)
    assert packaged["cost_usd"] == pytest.approx((200 * 0.15 + 27 * 0.6 + 100 * 0.075) / 1e6)


def test_bad_lines_are_reported_and_nothing_is_imported_unless_skip_bad(tmp_path, env):
    no_content = _span(
        "bbbbbbbbbbbbbbb1",
        "chat gpt-4o",
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 10,
        },
    )
    lines = [
        json.dumps(_doc(phoenix_spans("a"))),
        "{not json",
        json.dumps(_doc([no_content])),
        json.dumps(_doc(phoenix_spans("b", trace="5b8efff798038103d269b633813fc60d"))),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    refused = cli_run("import-traces", path, "--task", "support", "--format", "otel")
    assert refused.exit_code == 2
    message = refused.stderr
    assert "2 bad line(s)" in message and "line 2: not valid JSON" in message
    assert "line 3: span bbbbbbbbbbbbbbb1 ('chat gpt-4o'): no input messages" in message
    assert "nothing was imported" in message and "--skip-bad" in message
    with Store(env) as store:
        assert store.traces("support") == []
    partial = cli_run("import-traces", path, "--task", "support", "--format", "otel", "--skip-bad")
    assert partial.exit_code == 0 and "partial import" in partial.stderr
    assert "imported 2 of 4 LLM call(s)" in partial.stdout


def test_a_file_without_llm_spans_is_a_clear_error(tmp_path, env):
    path = tmp_path / "http.json"
    path.write_text(json.dumps(_doc([_span("ccccccccccccccc1", "GET /", {"http.method": "GET"})])))
    result = cli_run("import-traces", path, "--task", "support", "--format", "otel")
    assert result.exit_code == 2 and "holds no LLM spans" in result.stderr
    missing = cli_run("import-traces", tmp_path / "nope.json", "--task", "support", "--format", "otel")
    assert missing.exit_code == 2 and "no file" in missing.stderr


def test_content_in_span_events_is_named_as_the_reason_not_a_missing_switch(tmp_path):
    """The older GenAI conventions put prompts on span events (gen_ai.user.message, gen_ai.choice): with content
    capture already on, the advice to turn it on was wrong; the error says where the content is and what to do."""
    from protege.cli.imports import Contract
    from protege.telemetry.otel_import import plan_otel_import

    attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    events = _span("ccccccccccccccc1", "chat gpt-4o", attrs)
    events["events"] = [
        {"name": "gen_ai.user.message", "attributes": [_attr("content", "hi")]},
        {"name": "gen_ai.choice", "attributes": [_attr("message", "{}")]},
    ]
    path = tmp_path / "events.json"
    path.write_text(json.dumps(_doc([events])))
    ((_, why, _),) = plan_otel_import(path, Contract(task="support")).bad
    assert "span events" in why and "gen_ai.input.messages" in why and "CAPTURE_MESSAGE_CONTENT" not in why


def test_calls_protege_recorded_for_another_task_are_left_to_it(tmp_path, env):
    """A span file of an app with two tasks: the other task's calls were tried against --task and reported bad
    (or, with the same schemas, imported into the wrong task). protege's run spans name the task: they decide."""
    with Receiver() as receiver:
        app = Protege(
            db=f"sqlite:///{tmp_path / 'source.db'}",
            project_dir=tmp_path,
            otel=receiver.url,
            otel_content=True,
            teacher=FunctionModel(lambda req: '{"queue": "billing", "priority": 2}', name="function:teacher"),
        )

        @app.task(policy=Policy(program=False))
        def triage(ticket: Ticket) -> Triage:
            """Route a support ticket to a queue and set its priority."""

        @app.task(policy=Policy(program=False))
        def triage_twin(ticket: Ticket) -> Triage:
            """Route a support ticket the other way."""

        app.run("triage", {"ticket": {"subject": "refund"}})
        for subject in ("twin a", "twin b"):
            app.run("triage_twin", {"ticket": {"subject": subject}})
        app.close()
        path = receiver.write_json_lines(tmp_path / "two.jsonl")
    report = json.loads(cli_run("import-traces", path, "--task", "triage", "--format", "otel", "--json").stdout)
    assert (report["imported"], report["lines"], report["skipped"]) == (1, 1, [])
    with Store(env) as store:
        assert [t.input["ticket"]["subject"] for t in store.traces("triage", tier="import")] == ["refund"]


def genai_span(span_id, *, parent="", attrs=None, content=True, start=2):
    """One GenAI-conventions chat span answering a ticket (content on or off)."""
    user = json.dumps({"ticket": {"subject": "refund"}})
    values = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini"}
    if content:
        values["gen_ai.input.messages"] = json.dumps([{"role": "user", "parts": [{"type": "text", "content": user}]}])
        answer = [{"type": "text", "content": '{"queue": "billing", "priority": 3}'}]
        values["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": answer}])
    return _span(span_id, "chat gpt-4o-mini", values | (attrs or {}), parent=parent, start=start)


def protege_call(prefix, *, task="support", tier="teacher", trace_id=None):
    """A call as protege records it: its run span (the task), the tier's attempt span, and the model request."""
    attempt = {"protege.tier": tier, "protege.valid": True} | ({"protege.trace_id": trace_id} if trace_id else {})
    return [
        _span(f"{prefix}01", "protege.run", {"protege.task": task}),
        _span(f"{prefix}02", f"protege.attempt {tier}", attempt, parent=f"{prefix}01"),
        genai_span(f"{prefix}03", parent=f"{prefix}02"),
    ]


def test_token_counts_are_checked_and_a_missing_time_is_an_unknown_latency(tmp_path):
    """A negative token count made a negative cost (the log import refuses it: so does this one); a span without
    its start time made a latency of 54 years (since 1970): it is unknown, 0."""
    negative = genai_span("dddddddddddddd01", attrs={"gen_ai.usage.output_tokens": -100000})
    untimed = genai_span("dddddddddddddd02", attrs={"gen_ai.usage.output_tokens": 10})
    del untimed["startTimeUnixNano"]
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(_doc([negative])) + "\n" + json.dumps(_doc([untimed])) + "\n")
    plan = plan_otel_import(path, Contract(task="support"))
    ((line, why, reason),) = plan.bad
    assert line == 1 and "gen_ai.usage.output_tokens=-100000" in why and reason.startswith("a token count is")
    (row,) = plan.rows
    assert (row["output_tokens"], row["latency_s"]) == (10, 0.0)


def test_calls_of_protege_tiers_other_than_the_teacher_are_left_out(tmp_path):
    """A replay or student answer exported by protege and imported back became a tier "import" trace: a cheap
    model's answer laundered into training data. Only the teacher's calls are imported; the others are counted."""
    spans = protege_call("eeeeeeeeeeeeee", tier="replay") + protege_call("ffffffffffffff", tier="teacher")
    spans += protege_call("cccccccccccccc", tier="student")
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(_doc(spans)))
    plan = plan_otel_import(path, Contract(task="support"))
    assert (len(plan.rows), plan.bad, plan.lines) == (1, [], 3)
    assert plan.left_out == {
        "answered by protege's replay tier, not its teacher": 1,
        "answered by protege's student tier, not its teacher": 1,
    }


def test_protege_calls_already_in_the_store_are_not_imported_again(tmp_path, env):
    """protege's own spans imported into the store that recorded them (a collector holding all of a team's spans)
    counted each call and its cost twice; the attempt span names its trace, which is found and left alone."""
    with Receiver() as receiver:
        app = Protege(
            db=env,
            project_dir=tmp_path,
            otel=receiver.url,
            otel_content=True,
            teacher=FunctionModel(lambda req: '{"queue": "billing", "priority": 2}', name="function:teacher"),
        )

        @app.task(policy=Policy(program=False))
        def triage(ticket: Ticket) -> Triage:
            """Route a support ticket to a queue and set its priority."""

        app.run("triage", {"ticket": {"subject": "refund"}})
        app.close()
        path = receiver.write_json_lines(tmp_path / "own.jsonl")
    report = json.loads(cli_run("import-traces", path, "--task", "triage", "--format", "otel", "--json").stdout)
    assert (report["imported"], report["already_recorded"]) == (0, 1)
    with Store(env) as store:
        assert (store.count_traces("triage", tier="teacher"), store.count_traces("triage", tier="import")) == (1, 0)
    text = cli_run("import-traces", path, "--task", "triage", "--format", "otel")
    assert "1 LLM call(s) are protege's own, already in this store" in " ".join(text.stderr.split())


def test_a_task_name_that_matches_no_call_names_the_tasks_there(tmp_path, env):
    """`--task tirage` on protege's spans of other tasks said the file held no LLM spans."""
    spans = protege_call("aaaaaaaaaaaa10", task="triage") + protege_call("aaaaaaaaaaaa20", task="summarize")
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(_doc(spans)))
    result = cli_run("import-traces", path, "--task", "tirage", "--format", "otel")
    assert result.exit_code == 2
    said = " ".join(result.stderr.split())
    assert "holds no LLM calls of task 'tirage': its 2 call(s) are of other tasks" in said
    assert "('triage': 1, 'summarize': 1)" in said or "('summarize': 1, 'triage': 1)" in said
    assert "did you mean --task 'triage'?" in said


def test_a_call_recorded_with_content_off_counts_once(tmp_path):
    """Requests recorded without content have no answer to cut a call at: a call of two counted as two."""
    parent = _span("bbbbbbbbbbbbbb00", "agent.run", {})
    first = genai_span("bbbbbbbbbbbbbb01", parent="bbbbbbbbbbbbbb00", content=False, start=2)
    second = genai_span("bbbbbbbbbbbbbb02", parent="bbbbbbbbbbbbbb00", content=False, start=3)
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(_doc([parent, first, second])))
    plan = plan_otel_import(path, Contract(task="support"))
    assert (plan.lines, len(plan.bad)) == (1, 1) and "no input messages" in plan.bad[0].why


def test_a_file_of_one_document_a_line_is_read_a_line_at_a_time(tmp_path, monkeypatch):
    """An 80 MB export took 600 MB: the whole file was read, then every line parsed at once. Only a file that is
    one pretty-printed document is read whole now."""
    import protege.telemetry.otel_import as otel_import

    lines = [json.dumps(_doc(phoenix_spans(f"s{i}", trace=f"{i:032x}"))) for i in range(3)]
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(lines) + "\n")

    def read_whole(path):
        raise AssertionError("read whole")

    monkeypatch.setattr(otel_import, "read_whole", read_whole)
    assert len(plan_otel_import(path, Contract(task="support")).rows) == 3
