"""`protege import-traces --format otel FILE`: LLM calls recorded as OpenTelemetry spans become traces of a task.

The file is an OTLP JSON export: one `{"resourceSpans": [...]}` document, or one per line (what the collector's
file exporter writes). Two attribute conventions are read:
- the OpenTelemetry GenAI conventions (`gen_ai.input.messages` / `gen_ai.output.messages`, `gen_ai.usage.*`),
  as protege itself writes them when message content is captured;
- OpenInference, as Arize Phoenix writes it (`llm.input_messages.N.message.*`, `llm.output_messages.*`,
  `llm.token_count.*`, `llm.model_name`, `llm.cost.total`).
An LLM call is the model requests under one parent span up to the first that answers in text (not tool calls):
its last request's input and answer make the trace, its requests' usage and cost are summed. A span written twice
(the same trace and span id: a collector retrying an export) counts once. Inputs and outputs are
checked like the OpenAI log import's (`cli.imports.Contract`); a call protege itself recorded as invalid is a bad
item. Bad items are reported by line and span; nothing is imported on a bad file unless `--skip-bad`.
protege's own spans say more, and are heeded: a call made for another task is that task's; one answered by a tier
other than the teacher (replay, student) is left out, counted (a cheap tier's answers are not teacher answers to
learn from); one whose protege trace is in the store already is not imported again (`ImportPlan.recorded`).
The file is read a line at a time (one document per line), or whole when it is one pretty-printed document.
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import protege.telemetry.genai as g
from protege.cli.imports import (
    Bad,
    BadLine,
    Contract,
    ImportPlan,
    Pricer,
    convert_tools,
    json_or_none,
    parse_json_line,
    read_lines,
    read_whole,
    token_count,
    trace_from_chat,
    without_gc,
)
from protege.errors import UserError
from protege.store.models import utcnow

if TYPE_CHECKING:
    from protege.agents.pricing import PriceTable


@dataclass
class Span:
    """One span of the file, its attributes decoded to plain values."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    start: int | None  # Unix nanoseconds; None when the span does not say
    end: int | None
    attrs: dict[str, Any]
    line: int
    events: tuple[str, ...] = ()  # the names of its span events (content is not read from them)

    @property
    def is_llm(self) -> bool:
        kind = str(self.attrs.get("openinference.span.kind", "")).upper()
        return kind == "LLM" or self.attrs.get(g.OPERATION) in g.INFERENCE_OPERATIONS

    @property
    def where(self) -> str:
        return f"span {self.span_id or '?'} ({self.name!r})"


@dataclass
class Call:
    """The requests of one LLM call, oldest first; the last one holds the final answer."""

    requests: list[Span] = field(default_factory=list)
    parent: Span | None = None
    task: str | None = None  # the task protege's own run span names, if protege recorded the call


def plan_otel_import(
    path: Path, contract: Contract, *, model: str | None = None, prices: PriceTable | None = None
) -> ImportPlan:
    """Read and check every LLM call in `path`; nothing is written. `lines` counts the calls found; `prices` prices
    the usage of calls that carry no cost (None: the packaged table)."""
    if not path.is_file():
        raise UserError(f'no file {str(path)!r}; give an OTLP JSON export of spans ({{"resourceSpans": [...]}})')
    with without_gc():
        spans, bad = read_spans(path)
        pricer = Pricer(prices)
        plan = ImportPlan(rows=[], bad=bad, lines=len(bad), unpriced=pricer.unpriced)
        other_tasks: Counter[str] = Counter()
        for call in llm_calls(spans):
            if call.task not in (None, contract.task):
                other_tasks[call.task] += 1  # protege recorded it as another task's call: not this task's, nor bad
                continue
            plan.lines += 1
            _plan_call(plan, call, contract, model=model, pricer=pricer)
    start = utcnow()
    for i, row in enumerate(plan.rows):
        row["created_at"] = start + timedelta(microseconds=i)  # file order survives ordering by time
    if not plan.lines:
        raise UserError(_nothing_found(path, contract.task, other_tasks))
    plan.bad.sort()
    return plan


def _plan_call(plan: ImportPlan, call: Call, contract: Contract, *, model: str | None, pricer: Pricer) -> None:
    """Adds one call to `plan`: as a row, a bad item, or a call left out (and why)."""
    tier = _recorded_tier(call)
    if tier not in (None, "teacher"):
        plan.left_out[f"answered by protege's {tier} tier, not its teacher"] += 1
        return
    final = call.requests[-1]
    try:
        row = trace_from_call(call, contract, model=model, pricer=pricer)
    except BadLine as exc:
        plan.bad.append(Bad(final.line, f"{final.where}: {exc}", exc.reason))
        return
    recorded = call.parent.attrs.get(g.TRACE_ID) if call.parent is not None else None
    if isinstance(recorded, str) and recorded:
        plan.recorded[row["id"]] = recorded
    plan.rows.append(row)


def _recorded_tier(call: Call) -> str | None:
    """The protege tier whose attempt made the call (its attempt span says), or None for others' spans."""
    tier = call.parent.attrs.get(g.TIER) if call.parent is not None else None
    return tier if isinstance(tier, str) else None


def _nothing_found(path: Path, task: str, other_tasks: Counter[str]) -> str:
    """Why a file gave no call to import for `task`, and what to do."""
    if not other_tasks:
        return (
            f"{str(path)!r} holds no LLM spans (gen_ai.operation.name 'chat' or OpenInference span kind "
            f"'LLM'); export the spans of your model calls"
        )
    counts = ", ".join(f"{name!r}: {n:,}" for name, n in other_tasks.most_common())
    close = difflib.get_close_matches(task, list(other_tasks), n=1)
    hint = f"did you mean --task {close[0]!r}?" if close else "pass one of those as --task"
    return (
        f"{str(path)!r} holds no LLM calls of task {task!r}: its {other_tasks.total():,} call(s) are of other "
        f"tasks ({counts}); {hint}"
    )


# -- reading the file ------------------------------------------------------------------------------------------------

NOT_OTLP = 'not an OTLP JSON object with a "resourceSpans" list'


def read_spans(path: Path) -> tuple[list[Span], list[Bad]]:
    """Every span in the file once, and the lines that are not OTLP JSON."""
    spans: list[Span] = []
    bad: list[Bad] = []
    for number, doc in _documents(path):
        if isinstance(doc, BadLine):
            bad.append(Bad(number, str(doc), doc.reason))
        elif not isinstance(doc, dict) or not isinstance(_get(doc, "resourceSpans", "resource_spans"), list):
            bad.append(Bad(number, NOT_OTLP, NOT_OTLP))
        else:
            spans += _spans_of(doc, number)
    return _each_once(spans), bad


def _documents(path: Path) -> Iterator[tuple[int, Any]]:
    """The file's documents with their line numbers, a line at a time (the collector's file exporter writes a
    document a line), so a big export is never all in memory at once; a line that is not JSON comes as its
    BadLine. When the first line is not JSON by itself the file may be one pretty-printed document: read whole."""
    lines = read_lines(path)
    first = next(lines, None)
    if first is None:
        return
    number, line = first
    doc = _document(line)
    if isinstance(doc, BadLine):
        whole = _document(read_whole(path))
        if isinstance(whole, dict):
            lines.close()
            yield 1, whole
            return
    yield number, doc
    for number, line in lines:
        yield number, _document(line)


def _document(text: bytes) -> Any:
    try:
        return parse_json_line(text)
    except BadLine as exc:
        return exc


def _each_once(spans: list[Span]) -> list[Span]:
    """The spans without repeats of an earlier one's (trace id, span id): a collector that retries an export writes
    the same spans again, and each copy would count as another call or add its usage again. Spans without an id
    are kept (nothing says they are the same)."""
    seen: set[tuple[str, str]] = set()
    unique = []
    for s in spans:
        key = (s.trace_id, s.span_id)
        if s.span_id and key in seen:
            continue
        seen.add(key)
        unique.append(s)
    return unique


def _spans_of(doc: dict, line: int) -> Iterator[Span]:
    for resource in _list(_get(doc, "resourceSpans", "resource_spans")):
        scopes = _get(resource, "scopeSpans", "scope_spans") or _get(resource, "instrumentationLibrarySpans")
        for scope in _list(scopes):
            for s in _list(_get(scope, "spans")):
                if isinstance(s, dict):
                    yield Span(
                        trace_id=str(_get(s, "traceId", "trace_id") or ""),
                        span_id=str(_get(s, "spanId", "span_id") or ""),
                        parent_id=str(_get(s, "parentSpanId", "parent_span_id") or ""),
                        name=str(s.get("name") or ""),
                        start=_nanos(_get(s, "startTimeUnixNano", "start_time_unix_nano")),
                        end=_nanos(_get(s, "endTimeUnixNano", "end_time_unix_nano")),
                        attrs={
                            a["key"]: _value(a.get("value"))
                            for a in _list(s.get("attributes"))
                            if isinstance(a, dict) and isinstance(a.get("key"), str)
                        },
                        line=line,
                        events=tuple(str(e.get("name") or "") for e in _list(s.get("events")) if isinstance(e, dict)),
                    )


def _value(v: Any) -> Any:
    """An OTLP AnyValue ({"stringValue": ...}, {"intValue": "3"}, arrays, key-value lists) as a plain value;
    None for anything else."""
    if not isinstance(v, dict) or not v:
        return None
    kind, inner = next(iter(v.items()))
    if kind in ("intValue", "int_value"):
        return _int(inner)
    if kind in ("doubleValue", "double_value"):
        try:
            return float(inner)
        except (TypeError, ValueError):
            return None
    values = _list(inner.get("values")) if isinstance(inner, dict) else []
    if kind in ("arrayValue", "array_value"):
        return [_value(x) for x in values]
    if kind in ("kvlistValue", "kvlist_value"):
        return {
            x["key"]: _value(x.get("value")) for x in values if isinstance(x, dict) and isinstance(x.get("key"), str)
        }
    return inner if isinstance(inner, (str, bool, int, float)) else None


def _recorded_task(span: Span | None, by_id: dict[str, Span]) -> str | None:
    """The task protege's own spans say a call under `span` was made for (its protege.run span, above its
    attempt), or None."""
    for _ in range(2):  # the attempt, then the run
        if span is None:
            return None
        task = span.attrs.get(g.TASK)
        if isinstance(task, str):
            return task
        span = by_id.get(span.parent_id)
    return None


def llm_calls(spans: list[Span]) -> list[Call]:
    """LLM spans grouped by parent, in time order, cut after each request that answers in text."""
    by_id = {s.span_id: s for s in spans}
    groups: dict[tuple[str, str], list[Span]] = defaultdict(list)
    for s in spans:
        if s.is_llm:
            groups[(s.trace_id, s.parent_id or s.span_id)].append(s)
    calls = []
    for (_, parent_id), group in groups.items():
        parent = by_id.get(parent_id)
        task = _recorded_task(parent, by_id)
        call = Call(parent=parent, task=task)
        for s in sorted(group, key=_when):
            call.requests.append(s)
            if _ends_call(s):
                calls.append(call)
                call = Call(parent=parent, task=task)
        if call.requests:
            calls.append(call)  # ends in tool calls (or says nothing): reported as having no final answer
    return sorted(calls, key=lambda c: (c.requests[-1].line, _when(c.requests[0])))


def _when(s: Span) -> int:
    """When a span started, for ordering: its end when its start is missing."""
    return s.start if s.start is not None else s.end or 0


TOOL_FINISHES = frozenset({"tool_calls", "tool_use", "function_call"})


def _ends_call(s: Span) -> bool:
    """Whether request `s` answered in text, ending its call. A request recorded with content off has no answer to
    look at: its finish reasons tell, and without them it is taken to go on, so a call of such requests counts
    once, not once a request."""
    try:
        turn = _output_turn(s)
    except BadLine:
        return True  # its answer is unreadable: the call ends there, and reports it
    if turn:
        return not turn.get("tool_calls")
    reasons = s.attrs.get(g.FINISH_REASONS)
    if isinstance(reasons, list) and reasons:
        return not TOOL_FINISHES.intersection(str(r) for r in reasons)
    return False


# -- one call as a trace ---------------------------------------------------------------------------------------------


def trace_from_call(
    call: Call, contract: Contract, *, model: str | None = None, pricer: Pricer | None = None
) -> dict[str, Any]:
    """One LLM call as a trace dict for `Store.insert_traces` (raises BadLine)."""
    parent, final = call.parent, call.requests[-1]
    if parent is not None and parent.attrs.get(g.VALID) is False:
        raise BadLine(f"protege recorded this attempt ({parent.attrs.get(g.TIER)} tier) as invalid")
    messages = _input_turns(final)
    if not messages:
        raise BadLine(_no_content(final))
    output = _output_turn(final)
    if output.get("tool_calls") or not output.get("content"):
        raise BadLine("no final answer: the call's last request asked for tools or returned no text")
    record = {"messages": [*messages, output], "tools": _tools(final)}
    row = trace_from_chat(record, contract, model=model or _model(final))
    usage = _usage(call.requests)
    row.update(usage, cost_usd=_cost(call.requests, row["model"], usage, pricer or Pricer()), latency_s=_latency(call))
    return row


def _latency(call: Call) -> float:
    """Seconds from the call's first request to its answer; 0 (unknown) when a span lacks its time, rather than the
    54 years since 1970 that a missing start would make."""
    start, end = call.requests[0].start, call.requests[-1].end
    return (end - start) / 1e9 if start is not None and end is not None and end >= start else 0.0


def _no_content(s: Span) -> str:
    """Why a request span has no input messages, and what to do about it."""
    if any(name.startswith("gen_ai.") for name in s.events):
        return (
            "no input messages in the span's attributes: its content is in span events (gen_ai.user.message, "
            "gen_ai.choice: the older GenAI conventions), which are not read; export with the current ones "
            "(gen_ai.input.messages / gen_ai.output.messages attributes) or use the OpenAI chat-log format"
        )
    return "no input messages (record content: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)"


def _input_turns(s: Span) -> list[dict[str, Any]]:
    a = s.attrs
    if g.INPUT_MESSAGES in a:
        system = _loaded(a.get(g.SYSTEM_INSTRUCTIONS)) or []
        turns = [{"role": "system", "content": p.get("content", "")} for p in system if isinstance(p, dict)]
        return turns + _genai(a[g.INPUT_MESSAGES])
    if any(k.startswith("llm.input_messages.") for k in a):
        return _openinference(a, "llm.input_messages")
    raw = _loaded(a.get("input.value"))
    return raw["messages"] if isinstance(raw, dict) and isinstance(raw.get("messages"), list) else []


def _output_turn(s: Span) -> dict[str, Any]:
    a = s.attrs
    if g.OUTPUT_MESSAGES in a:
        turns = _genai(a[g.OUTPUT_MESSAGES])
    elif any(k.startswith("llm.output_messages.") for k in a):
        turns = _openinference(a, "llm.output_messages")
    else:
        text = a.get("output.value")
        turns = [{"role": "assistant", "content": text}] if isinstance(text, str) else []
    return turns[0] if turns else {}


def _genai(value: Any) -> list[dict[str, Any]]:
    messages = _loaded(value)
    if not isinstance(messages, list):
        raise BadLine(f"{g.INPUT_MESSAGES} / {g.OUTPUT_MESSAGES} is not a JSON list of messages")
    try:
        return g.from_genai(messages)
    except ValueError as exc:
        raise BadLine(str(exc)) from None


def _openinference(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Flattened `llm.input_messages.0.message.role` keys as OpenAI chat messages."""
    tree = _unflatten({k[len(prefix) + 1 :]: v for k, v in attrs.items() if k.startswith(prefix + ".")})
    turns = []
    for _, item in _indexed(tree):
        m = _dict(_dict(item).get("message"))
        content = m.get("content")
        if content is None and isinstance(m.get("contents"), dict):  # content parts
            content = "".join(
                str(_dict(_dict(p).get("message_content")).get("text") or "") for _, p in _indexed(m["contents"])
            )
        turn: dict[str, Any] = {"role": m.get("role", "user"), "content": content or ""}
        calls = [_dict(_dict(c).get("tool_call")) for _, c in _indexed(_dict(m.get("tool_calls")))]
        if calls:
            turn["tool_calls"] = [
                {"id": c.get("id"), "type": "function", "function": _dict(c.get("function"))} for c in calls
            ]
        if m.get("tool_call_id"):
            turn.update(tool_call_id=m["tool_call_id"], name=m.get("name"))
        turns.append(turn)
    return turns


def _unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"0.message.role": "user"} -> {"0": {"message": {"role": "user"}}}; OpenInference keys are dotted paths
    whose leaves are known names, so `function.name` under a tool call nests like the rest."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *path, leaf = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = value
    return tree


def _tools(s: Span) -> list[dict[str, Any]] | None:
    a = s.attrs
    raw = (
        _loaded(a.get(g.TOOL_DEFINITIONS))
        if g.TOOL_DEFINITIONS in a
        else [
            _loaded(v) for k, v in sorted(a.items()) if k.startswith("llm.tools.") and k.endswith(".tool.json_schema")
        ]
    )
    return convert_tools(raw) if raw else None


def _model(s: Span) -> str:
    a = s.attrs
    if isinstance(a.get(g.MODEL), str):
        return a[g.MODEL]
    provider = a.get(g.PROVIDER) or a.get("llm.provider") or a.get("llm.system")
    name = a.get(g.REQUEST_MODEL) or a.get(g.RESPONSE_MODEL) or a.get("llm.model_name")
    return g.join_model(str(provider) if provider else None, str(name) if name else None) or "import"


def _usage(requests: list[Span]) -> dict[str, int]:
    """Summed usage in protege's convention: input_tokens are the uncached ones (the conventions count the cache's
    reads and writes inside gen_ai.usage.input_tokens, as OpenInference does inside llm.token_count.prompt)."""
    total = {"input_tokens": 0, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0}
    for s in requests:
        read = _tokens(s, g.CACHE_READ_TOKENS, "llm.token_count.prompt_details.cache_read")
        write = _tokens(s, g.CACHE_WRITE_TOKENS, "llm.token_count.prompt_details.cache_write")
        prompt = _tokens(s, g.INPUT_TOKENS, "gen_ai.usage.prompt_tokens", "llm.token_count.prompt")
        total["input_tokens"] += max(prompt - read - write, 0)
        total["output_tokens"] += _tokens(
            s, g.OUTPUT_TOKENS, "gen_ai.usage.completion_tokens", "llm.token_count.completion"
        )
        total["cache_read_tokens"] += read
        total["cache_write_tokens"] += write
    return total


def _tokens(s: Span, *keys: str) -> int:
    """A token count of the span's first attribute of `keys`, checked as the log import checks `usage` (a negative
    or fractional count is a bad item, not a negative cost)."""
    return token_count(s.attrs, *keys, holder=f"span {s.span_id or '?'}")


def _cost(requests: list[Span], model: str, usage: dict[str, int], pricer: Pricer) -> float:
    """The recorded cost when every request carries one (protege's, or OpenInference's llm.cost.total), else the
    price table's for the model (the app's when it is loaded)."""
    recorded = [_first(s.attrs, g.COST_USD, "llm.cost.total") for s in requests]
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 for c in recorded):
        return float(sum(recorded))
    return pricer.cost(model, usage)


def _indexed(tree: dict[str, Any]) -> list[tuple[str, Any]]:
    """The items of a flattened list ({"0": ..., "1": ...}) in index order."""
    return sorted(tree.items(), key=lambda kv: _int(kv[0]))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _first(attrs: dict[str, Any], *keys: str) -> Any:
    return next((attrs[k] for k in keys if attrs.get(k) is not None), None)


def _get(d: Any, *keys: str) -> Any:
    return next((d[k] for k in keys if isinstance(d, dict) and k in d), None)


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _nanos(v: Any) -> int | None:
    """A span time in Unix nanoseconds; None when missing or not a time (0 would be 1970)."""
    try:
        n = int(v)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def _loaded(value: Any) -> Any:
    return json_or_none(value) if isinstance(value, str) else value
