"""Worked examples for skills: read them out of validated traces and pick a small, diverse set.

Diversity first covers every value seen of the output's enum/Literal/bool fields (a skill that never shows the
'refund' queue teaches nobody to pick it), then fills up farthest-first on the input's words, so the examples
span the inputs instead of repeating the most common kind.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from protege.agents.tools import call_results


@dataclass(frozen=True)
class ToolUse:
    """One tool call of a transcript, as `name({json arguments})`, and the text it returned (None: not recorded)."""

    call: str
    result: str | None = None


@dataclass(frozen=True)
class Example:
    """One solved input: what came in, the validated answer, and the tools used on the way."""

    input: dict[str, Any]
    output: Any
    trace_id: str | None = None
    tools: tuple[ToolUse, ...] = field(default=())

    @property
    def tool_calls(self) -> tuple[str, ...]:
        return tuple(use.call for use in self.tools)


def examples_from(traces: Any) -> list[Example]:
    """Examples from traces (TraceRow objects, dicts with input/output, or (input, output) pairs).

    Invalid traces and traces without an answer are skipped; repeated inputs keep their first answer.
    """
    seen: set[str] = set()
    out = []
    for trace in traces:
        example = _example_of(trace)
        if example is None:
            continue
        key = canonical(example.input)
        if key not in seen:
            seen.add(key)
            out.append(example)
    return out


def select_examples(examples: list[Example], output_schema: dict[str, Any] | None, k: int) -> list[Example]:
    """At most k examples: cover every seen value of the output's choice fields, then farthest-first on inputs."""
    if len(examples) <= k:
        return list(examples)
    chosen = _cover_choices(examples, choice_fields(output_schema or {}), k)
    return _farthest_first(examples, chosen, k)


def choice_fields(schema: dict[str, Any]) -> dict[str, list[Any]]:
    """Top-level output fields with a closed set of values (enum, Literal, const, bool) -> those values."""
    fields = {}
    for name, prop in (schema.get("properties") or {}).items():
        values = _choices(prop, schema)
        if values:
            fields[name] = values
    return fields


def canonical(value: Any) -> str:
    """Stable JSON text of a value (sorted keys), for comparing inputs and answers."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def pretty(value: Any, limit: int | None = None) -> str:
    """JSON for a prompt or a skill body, clipped to `limit` characters with a visible marker."""
    return clip(json.dumps(value, ensure_ascii=False, default=str), limit)


def clip(text: str, limit: int | None) -> str:
    """`text` cut to `limit` characters with a visible marker (a model must not take a cut text for the whole)."""
    return text if limit is None or len(text) <= limit else text[:limit] + " …(clipped)"


# -- reading traces -------------------------------------------------------------------------------------------


def _example_of(trace: Any) -> Example | None:
    if isinstance(trace, Example):
        return trace
    if isinstance(trace, tuple) and len(trace) == 2:
        return Example(input=_plain(trace[0]), output=_plain(trace[1]))
    get = _getter(trace)
    if get("valid", True) is False:
        return None
    inp, out = get("input"), get("output")
    output_text = get("output_text")
    if out is None and output_text:
        try:
            out = json.loads(output_text)
        except json.JSONDecodeError:
            return None
    if inp is None or out is None:
        return None
    return Example(input=_plain(inp), output=_plain(out), trace_id=get("id"), tools=tool_uses(get("messages")))


def tool_uses(messages: Any) -> tuple[ToolUse, ...]:
    """The tool calls of a transcript in order, each with the result its tool turn holds (matched by call id)."""
    return tuple(ToolUse(call=_call_text(call), result=result) for call, result in call_results(messages))


def _call_text(call: dict[str, Any]) -> str:
    return f"{call.get('name')}({json.dumps(call.get('arguments') or {}, ensure_ascii=False)})"


def tool_specs(traces: Any) -> list[dict[str, Any]]:
    """The task's tools (name, description, parameters) as the first trace that recorded them offered them."""
    for trace in traces:
        tools = _getter(trace)("tools")
        if tools:
            return [_plain(t) for t in tools]
    return []


def _getter(trace: Any) -> Any:
    return trace.get if isinstance(trace, dict) else (lambda key, default=None: getattr(trace, key, default))


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json", by_alias=True) if isinstance(value, BaseModel) else value


# -- choosing -------------------------------------------------------------------------------------------------


def _choices(prop: dict[str, Any], root: dict[str, Any], depth: int = 0) -> list[Any]:
    prop = _deref(prop, root)
    if depth > 4 or not isinstance(prop, dict):
        return []
    if "enum" in prop:
        return list(prop["enum"])
    if "const" in prop:
        return [prop["const"]]
    if prop.get("type") == "boolean":
        return [True, False]
    values: list[Any] = []
    for key in ("anyOf", "oneOf", "allOf"):
        for member in prop.get(key) or []:
            values += [v for v in _choices(member, root, depth + 1) if v not in values]
    return values


def _deref(prop: Any, root: dict[str, Any]) -> Any:
    ref = prop.get("$ref") if isinstance(prop, dict) else None
    if isinstance(ref, str):
        for prefix in ("#/$defs/", "#/definitions/"):
            if ref.startswith(prefix):
                return (root.get(prefix[2:-1]) or {}).get(ref[len(prefix) :], {})
    return prop


def _choice_pairs(example: Example, fields: dict[str, list[Any]]) -> set[tuple[str, str]]:
    if not isinstance(example.output, dict):
        return set()
    return {(f, canonical(example.output[f])) for f in fields if f in example.output}


def _cover_choices(examples: list[Example], fields: dict[str, list[Any]], k: int) -> list[Example]:
    """Greedy set cover: keep taking the example that shows the most not-yet-shown (field, value) pairs."""
    pairs = [_choice_pairs(e, fields) for e in examples]
    uncovered = set().union(*pairs) if pairs else set()
    chosen: list[int] = []
    while uncovered and len(chosen) < k:
        best = max(range(len(examples)), key=lambda i: (len(pairs[i] & uncovered), -i))
        if not pairs[best] & uncovered:
            break
        chosen.append(best)
        uncovered -= pairs[best]
    return [examples[i] for i in chosen]


def _farthest_first(examples: list[Example], chosen: list[Example], k: int) -> list[Example]:
    words = [_words(e.input) for e in examples]
    picked = [i for i, e in enumerate(examples) if any(e is c for c in chosen)] or [0]
    nearest = [min(_distance(words[i], words[j]) for j in picked) for i in range(len(examples))]
    while len(picked) < k:
        best = max((i for i in range(len(examples)) if i not in picked), key=lambda i: (nearest[i], -i))
        picked.append(best)
        nearest = [min(nearest[i], _distance(words[i], words[best])) for i in range(len(examples))]
    return [examples[i] for i in picked]


def _words(value: Any) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", " ".join(_leaves(value)).lower()))


def _leaves(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _leaves(v)]
    if isinstance(value, list):
        return [s for v in value for s in _leaves(v)]
    return [str(value)]


def _distance(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return 1.0 - len(a & b) / union if union else 0.0


__all__ = [
    "Example",
    "ToolUse",
    "canonical",
    "choice_fields",
    "clip",
    "examples_from",
    "pretty",
    "select_examples",
    "tool_specs",
    "tool_uses",
]
