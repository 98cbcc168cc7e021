"""Choosing worked examples: read from traces, cover every choice value, then spread over the inputs."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from protege.skills.examples import Example, choice_fields, examples_from, select_examples
from protege.store.models import TraceRow


class Color(StrEnum):
    red = "red"
    blue = "blue"


class Out(BaseModel):
    queue: Literal["billing", "bug", "account"]
    color: Color | None = None
    urgent: bool
    note: str


def test_choice_fields_cover_literal_enum_optional_and_bool():
    """Literal, Enum ($ref), Optional[Enum] (anyOf) and bool fields are recognised; free text is not."""
    fields = choice_fields(Out.model_json_schema())
    assert fields == {"queue": ["billing", "bug", "account"], "color": ["red", "blue"], "urgent": [True, False]}


def test_examples_from_traces_skip_invalid_and_repeated_inputs():
    """Invalid traces, traces without answers and repeated inputs are left out; tool calls are kept."""
    traces = [
        TraceRow(
            id="t1",
            task_name="t",
            tier="teacher",
            input={"q": 1},
            output={"a": 1},
            valid=True,
            messages=[{"role": "assistant", "tool_calls": [{"id": "c", "name": "look", "arguments": {"k": 2}}]}],
        ),
        TraceRow(id="t2", task_name="t", tier="teacher", input={"q": 2}, output={"a": 2}, valid=False),
        TraceRow(id="t3", task_name="t", tier="teacher", input={"q": 1}, output={"a": 9}, valid=True),
        TraceRow(
            id="t4", task_name="t", tier="teacher", input={"q": 4}, output=None, output_text='{"a": 4}', valid=True
        ),
        {"id": "t5", "input": {"q": 5}, "output": None, "valid": True},
        ({"q": 6}, {"a": 6}),
    ]
    got = examples_from(traces)
    assert [(e.trace_id, e.output) for e in got] == [("t1", {"a": 1}), ("t4", {"a": 4}), (None, {"a": 6})]
    assert got[0].tool_calls == ('look({"k": 2})',)


def test_every_choice_value_is_shown_even_when_rare():
    """A queue seen once among many examples is still among the k chosen."""
    examples = [
        Example(input={"text": f"invoice {i} charged twice"}, output={"queue": "billing", "urgent": False, "note": ""})
        for i in range(30)
    ]
    examples.insert(17, Example(input={"text": "app crashes"}, output={"queue": "bug", "urgent": True, "note": ""}))
    examples.append(Example(input={"text": "reset password"}, output={"queue": "account", "urgent": False, "note": ""}))
    chosen = select_examples(examples, Out.model_json_schema(), k=4)
    assert len(chosen) == 4
    assert {e.output["queue"] for e in chosen} == {"billing", "bug", "account"}
    assert {e.output["urgent"] for e in chosen} == {True, False}


def test_farthest_first_spreads_over_inputs():
    """With no choice fields, the picks avoid near-duplicate inputs and reach the odd ones out."""
    same = [Example(input={"text": f"refund my order number {i} please"}, output={"x": i}) for i in range(10)]
    odd = [
        Example(input={"text": "the printer on floor three is on fire"}, output={"x": "a"}),
        Example(input={"text": "quarterly tax filing deadline moved"}, output={"x": "b"}),
    ]
    chosen = select_examples(same[:5] + odd[:1] + same[5:] + odd[1:], {}, k=3)
    assert odd[0] in chosen and odd[1] in chosen
    assert sum(e in same for e in chosen) == 1


def test_small_pools_are_kept_whole_and_selection_is_deterministic():
    """k at least the pool size returns the pool; the same input gives the same choice."""
    pool = [Example(input={"t": str(i)}, output={"x": i}) for i in range(5)]
    assert select_examples(pool, {}, k=5) == pool
    assert select_examples(pool, {}, k=2) == select_examples(list(pool), {}, k=2)
