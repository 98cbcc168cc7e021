"""The OpenTelemetry import under fuzzed files: OTLP-shaped documents with junk at every level, GenAI and
OpenInference attributes with values of any type, end in an import plan (good calls and bad items, every call
counted) or a UserError — never another exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protege.cli.imports import Contract
from protege.errors import UserError
from protege.telemetry.otel_import import plan_otel_import

JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
KEYS = st.sampled_from(
    [
        "gen_ai.operation.name",
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.cache_read.input_tokens",
        "gen_ai.provider.name",
        "gen_ai.request.model",
        "protege.valid",
        "protege.cost_usd",
        "openinference.span.kind",
        "llm.input_messages.0.message.role",
        "llm.input_messages.0.message.content",
        "llm.input_messages.1.message.tool_calls.0.tool_call.function.name",
        "llm.output_messages.0.message.content",
        "llm.output_messages.0.message.tool_calls",
        "llm.token_count.prompt",
        "llm.model_name",
        "llm.cost.total",
        "input.value",
        "output.value",
        "llm.tools.0.tool.json_schema",
        "gen_ai.tool.definitions",
        "gen_ai.system_instructions",
    ]
)
TEXTS = st.sampled_from(
    [
        "chat",
        "LLM",
        "openai",
        "user",
        "assistant",
        "tool",
        '{"a": 1}',
        '[{"role": "user", "parts": [{"type": "text", "content": "{\\"a\\": 1}"}]}]',
        '[{"role": "assistant", "parts": [{"type": "text", "content": "{\\"b\\": 2}"}]}]',
        '[{"role": 3}]',
        '{"messages": [{"role": "user", "content": "hi"}]}',
        "not json",
    ]
)
VALUES = st.one_of(
    st.builds(lambda t: {"stringValue": t}, TEXTS | st.text(max_size=10)),
    st.builds(lambda i: {"intValue": str(i)}, st.integers(-5, 10**6)),
    st.builds(lambda b: {"boolValue": b}, st.booleans()),
    st.builds(lambda v: {"doubleValue": v}, st.floats(allow_nan=False) | st.text(max_size=4)),
    st.builds(lambda v: {"arrayValue": {"values": v}}, st.lists(JUNK, max_size=2)),
    st.builds(lambda v: {"kvlistValue": v}, JUNK),
    JUNK,
)
ATTRIBUTE = st.one_of(st.builds(lambda k, v: {"key": k, "value": v}, KEYS, VALUES), JUNK)
SPAN = st.one_of(
    st.fixed_dictionaries(
        {
            "traceId": st.sampled_from(["t1", "t2"]),
            "spanId": st.sampled_from(["s1", "s2", "s3"]),
            "parentSpanId": st.sampled_from(["", "s1", "p"]),
            "name": st.text(max_size=6),
            "startTimeUnixNano": st.integers(0, 10) | st.text(max_size=3),
            "endTimeUnixNano": st.integers(0, 20),
            "attributes": st.lists(ATTRIBUTE, max_size=8) | JUNK,
        }
    ),
    JUNK,
)
DOC = st.one_of(
    st.builds(lambda spans: {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}, st.lists(SPAN, max_size=4)),
    st.builds(lambda r: {"resourceSpans": r}, JUNK),
    JUNK,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(docs=st.lists(DOC, min_size=1, max_size=3), registered=st.booleans())
def test_fuzzed_otel_files_end_in_a_plan_or_a_user_error(tmp_path, docs, registered):
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    contract = (
        Contract(
            task="t",
            params=["a"],
            input_schema={"type": "object", "properties": {"a": {}}},
            output_schema={"type": "object"},
        )
        if registered
        else Contract(task="t")
    )
    try:
        plan = plan_otel_import(path, contract)
    except UserError:
        return
    assert len(plan.rows) + len([b for b in plan.bad if "span" in b[1]]) <= plan.lines
    assert all(row["tier"] == "import" and row["valid"] for row in plan.rows)
