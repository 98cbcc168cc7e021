"""The answer grammar on its own (no model): learned bounds, unique list items, copied fields under the input's
substrings, fixed fields, and the schema keywords — each enforced character by character or named as left to
validation."""

from __future__ import annotations

import json
import logging
import re
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from protege.agents.models.copy_index import SEPARATOR, SpanIndex, SubstringIndex, edge_class, input_text
from protege.agents.models.decoding import Grammar
from protege.errors import UserError


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def accepts(grammar: Grammar, value) -> bool:
    state = grammar.start().feed(compact(value) if not isinstance(value, str) else value)
    return state is not None and state.done


class Changes(BaseModel):
    numbers: list[int]
    names: list[str]
    who: str | None
    changes: int


SCHEMA = Changes.model_json_schema()
GOOD = {"numbers": [932474, 931954], "names": ["Ana", "Bo"], "who": "Ana Lima", "changes": 2}


# -- unique items and learned bounds ------------------------------------------------------------------------------


def test_a_unique_list_refuses_a_repeated_item_at_the_character_that_would_complete_it():
    """Numbers are refused at the delimiter after the repeat (a longer number may still follow), strings at the
    closing quote; a list the traces did not show unique may repeat."""
    unique = Grammar(SCHEMA, bounds={"numbers": {"unique_items": True}, "names": {"unique_items": True}})
    assert accepts(unique, GOOD)
    assert not accepts(unique, {**GOOD, "numbers": [932474, 931954, 932474]})
    assert not accepts(unique, {**GOOD, "names": ["Ana", "Bo", "Ana"]})
    state = unique.start().feed('{"numbers":[900000,900000')
    assert state.feed(",") is None and state.feed("]") is None and state.feed("1") is not None
    assert unique.start().feed('{"numbers":[],"names":["Ana","Ana"') is None  # refused at its closing quote
    assert accepts(Grammar(SCHEMA), {**GOOD, "numbers": [900000, 900000, 900000]})


def test_a_learned_item_bound_closes_the_list_and_is_reported_as_reached():
    """At the learned maxItems only `]` may follow; an answer that reached it is flagged, one below it is not,
    and a bound the schema itself sets is no sign of a runaway answer."""
    grammar = Grammar(SCHEMA, bounds={"numbers": {"max_items": 3}})
    state = grammar.start().feed('{"numbers":[1,2,3')
    assert state.feed(",") is None and state.feed("]") is not None
    assert grammar.bound_hits(compact({**GOOD, "numbers": [1, 2, 3]})) == [
        "numbers: 3 items, the most the training traces allow"
    ]
    assert grammar.bound_hits(compact(GOOD)) == []

    class Tagged(BaseModel):
        tags: list[str] = Field(max_length=2)

    assert Grammar(Tagged.model_json_schema()).bound_hits('{"tags":["a","b"]}') == []


def test_a_learned_string_bound_and_the_runaway_guards_are_reported():
    grammar = Grammar(SCHEMA, bounds={"who": {"max_length": 4}})
    assert grammar.start().feed('{"numbers":[],"names":[],"who":"Ana L') is None
    assert grammar.bound_hits(compact({**GOOD, "who": "Ana "})) == [
        "who: a string of 4 characters, the longest allowed"
    ]
    runaway = compact({**GOOD, "changes": 10**17})
    assert Grammar(SCHEMA).bound_hits(runaway) == ["changes: a number of 18 digits, the most allowed"]


def test_a_learned_digit_bound_stops_a_runaway_number_and_is_reported():
    """A count the traces never wrote with more than one digit may have three (the learned bound), not four; an
    answer that reached the bound is flagged, one below it is not."""
    grammar = Grammar(SCHEMA, bounds={"changes": {"max_digits": 3}})
    state = grammar.start().feed('{"numbers":[],"names":[],"who":null,"changes":698')
    assert state.feed("1") is None and state.feed("}") is not None and state.at_soft_bound
    assert grammar.bound_hits(compact({**GOOD, "changes": 698})) == [
        "changes: a number of 3 digits, the most the training traces allow"
    ]
    assert grammar.bound_hits(compact({**GOOD, "changes": 69})) == []


def test_a_state_knows_when_it_reached_a_soft_bound():
    """What the decoder's look-ahead must not step around: a learned maxLength or maxItems, 18 integer digits;
    a bound the schema sets is no such place, and below a bound is none either."""
    grammar = Grammar(SCHEMA, bounds={"who": {"max_length": 4}, "names": {"max_items": 2}})
    start = grammar.start()
    assert start.feed('{"numbers":[],"names":[],"who":"Ana ').at_soft_bound
    assert not start.feed('{"numbers":[],"names":[],"who":"Ana').at_soft_bound
    names = '{"numbers":[],"names":["a"'
    assert start.feed(names + ',"b"').at_soft_bound and not start.feed(names).at_soft_bound
    assert start.feed('{"numbers":[],"names":[],"who":null,"changes":' + "9" * 18).at_soft_bound
    assert not start.feed('{"numbers":[],"names":[],"who":null,"changes":' + "9" * 17).at_soft_bound

    class Tagged(BaseModel):
        tags: list[str] = Field(max_length=2)

    assert not Grammar(Tagged.model_json_schema()).start().feed('{"tags":["a","b"').at_soft_bound


# -- copied fields ----------------------------------------------------------------------------------------------

EMAIL = {"sender": "Zhang Wěi <wei@shop.example>", "body": "Hi,\nplease send 3 lamps to Köln.\tThanks — 张伟"}
COPIED = Grammar(SCHEMA, bounds={"who": {"copy": True}, "names[]": {"copy": True}}, source=input_text(EMAIL))


def copied_who(value) -> bool:
    return accepts(COPIED, {**GOOD, "names": [], "who": value})


@pytest.mark.parametrize(
    "value",
    ["Zhang Wěi", "Köln", "张伟", "wei@shop.example", "please send 3 lamps", "Hi,\nplease", "Köln.\tThanks — 张"],
)
def test_a_copied_field_can_write_any_span_of_the_input(value):
    """Multi-character and unicode spans, and spans across escaped characters (newline, tab), of any input value."""
    assert copied_who(value)


@pytest.mark.parametrize("value", ["Zhang Wei", "Cologne", "ORD-123456", "Köln, Germany", "Wěi <wei@shop.example>Hi"])
def test_a_value_absent_from_the_input_cannot_be_written(value):
    """An invented value, a near miss, and a value joining two input fields (across the separator) are refused
    at their first character that leaves the input."""
    assert not copied_who(value)


def test_an_escape_writes_only_what_json_escapes_and_never_walks_into_a_dead_end():
    """`\\u` writes the control characters only (the answers learned are written unescaped), so a letter cannot be
    spelled as an escape (`\\u0049tems`); and where no character an escape could write fits (a date's pattern, a
    copy whose input has no such character), the backslash itself is refused: the decoder was stuck at `\\u002`."""

    class Dated(BaseModel):
        eta: str = Field(pattern=r"^\d{4}-[01]\d-[0-3]\d$")
        note: str

    dated = Grammar(Dated.model_json_schema())
    assert dated.start().feed('{"eta":"04') is not None
    assert dated.start().feed('{"eta":"04\\') is None
    assert dated.start().feed('{"eta":"2024-01-01","note":"a\\u0049') is None  # a letter, escaped
    assert accepts(dated, '{"eta":"2024-01-01","note":"tab\\u0009bell\\u0007\\n\\"q\\""}')
    assert COPIED.start().feed('{"numbers":[],"names":["\\u0049') is None
    assert copied_who("Hi,\nplease")  # a newline of the input, written as JSON writes it


def test_null_stays_possible_and_an_empty_copy_is_not():
    assert copied_who(None)
    assert not copied_who("")


def test_copied_list_items_are_each_a_span():
    assert accepts(COPIED, {**GOOD, "names": ["Zhang", "lamps"], "who": None})
    assert not accepts(COPIED, {**GOOD, "names": ["Zhang", "Li"], "who": None})


def test_an_input_with_no_span_leaves_null_or_nothing():
    """With nothing to copy, a nullable copied field can only be null — the string is not even opened, so the
    decoder cannot walk into a dead end; a required one has no way on (the engine then refuses the answer with a
    ModelError and the cascade escalates)."""
    empty = Grammar(SCHEMA, bounds={"who": {"copy": True}}, source="")
    state = empty.start().feed('{"numbers":[],"names":[],"who":')
    assert state.allowed() == frozenset("n") and state.forced().startswith("null,")
    assert state.feed('"') is None

    class Named(BaseModel):
        name: str

    stuck = Grammar(Named.model_json_schema(), bounds={"name": {"copy": True}}, source="").start().feed('{"name":')
    assert stuck.allowed() == frozenset() and stuck.feed('"') is None


def test_the_allowed_characters_of_a_copied_string_are_the_inputs_continuations():
    state = COPIED.start().feed('{"numbers":[],"names":[],"who":"Kö')
    assert state.allowed() == frozenset('l"')
    assert state.feed("l").forced() == ""  # 'n' or a close: still the model's choice


def test_without_the_source_copied_fields_are_free_text():
    """The switch off (no source given): the same bounds decode any string."""
    free = Grammar(SCHEMA, bounds={"who": {"copy": True}})
    assert accepts(free, {**GOOD, "who": "Cologne"})


@settings(max_examples=80, deadline=None)
@given(st.text(min_size=1, max_size=40), st.data())
def test_the_substring_index_accepts_exactly_the_substrings(text, data):
    index = SubstringIndex(text)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    assert index.contains(text[start:end])
    other = data.draw(st.text(max_size=6))
    assert index.contains(other) == (other in text and SEPARATOR not in other)


# -- copied fields with learned edges --------------------------------------------------------------------------

EDGED = Grammar(
    SCHEMA,
    bounds={"who": {"copy": True, "copy_edges": {"left": ["break"], "right": ["break", "joiner"]}}},
    source=input_text(EMAIL),
)


@pytest.mark.parametrize("value", ["Zhang Wěi", "Zhang", "wei@shop.example", "Köln", "please send 3 lamps", "张伟"])
def test_a_copy_with_learned_edges_takes_whole_words(value):
    """Spans that start after a break and end before a break or a joiner ('Köln' before '.')."""
    assert accepts(EDGED, {**GOOD, "names": [], "who": value})


@pytest.mark.parametrize("value", ["Zha", "hang", "shop.example", "ei@shop", "lamp", "send 3 lam"])
def test_a_copy_with_learned_edges_cannot_start_or_stop_inside_a_word(value):
    """Substrings of the input all, but each starts inside a word or after a joiner ('@'), or stops mid-word."""
    assert not accepts(EDGED, {**GOOD, "names": [], "who": value})


def test_the_decoder_is_offered_only_edges_it_can_reach():
    state = EDGED.start().feed('{"numbers":[],"names":[],"who":"Zha')
    assert state.allowed() == frozenset("n")  # no close mid-word
    assert EDGED.start().feed('{"numbers":[],"names":[],"who":"Zhang').allowed() == frozenset(' "')
    short = SpanIndex("ab.cd ef", frozenset({"break"}), frozenset({"break"}), max_len=3)
    assert short.chars(short.root) == ["e"]  # 'ab.cd' is the only word from 'a' and it is too long
    assert short.contains("ef") and not short.contains("ab.cd")


def test_a_trimmed_copy_neither_begins_nor_ends_with_white_space():
    """` anna@x.io` is a substring after a break, but no trace's value began with a space: only `anna@x.io` is."""
    trimmed = Grammar(
        SCHEMA, bounds={"who": {"copy": True, "copy_trimmed": True}}, source=input_text({"text": "mail: anna@x.io ok"})
    )
    assert accepts(trimmed, {**GOOD, "names": [], "who": "anna@x.io"})
    assert accepts(trimmed, {**GOOD, "names": [], "who": "anna@x.io ok"})  # white space inside stays allowed
    assert not any(accepts(trimmed, {**GOOD, "names": [], "who": v}) for v in (" anna@x.io", "anna@x.io ", "ail: "))
    assert accepts(
        Grammar(SCHEMA, bounds={"who": {"copy": True}}, source=input_text({"text": "a b"})),
        {**GOOD, "names": [], "who": " b"},
    )


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet="ab .@\x00", min_size=1, max_size=24), st.data())
def test_the_span_index_accepts_exactly_the_spans_with_allowed_edges(text, data):
    classes = st.sets(st.sampled_from(["break", "joiner", "word"]))
    left, right = frozenset(data.draw(classes)), frozenset(data.draw(classes))
    max_len, trimmed = data.draw(st.integers(1, 10)), data.draw(st.booleans())
    index = SpanIndex(text, left, right, max_len, trimmed=trimmed)
    value = data.draw(st.text(alphabet="ab .@", min_size=1, max_size=6))

    def edged(i: int) -> bool:
        j = i + len(value)
        return (
            edge_class(text[i - 1] if i else None) in left and edge_class(text[j] if j < len(text) else None) in right
        )

    spans = [i for i in range(len(text)) if text.startswith(value, i) and edged(i)]
    in_shape = len(value) <= max_len and not (trimmed and value != value.strip())
    assert index.contains(value) == (bool(spans) and in_shape)


# -- copied fields with a shape -------------------------------------------------------------------------------


def shaped(name: str, shape: dict) -> dict:
    """An object schema with one nullable string field of this shape (`format`, `pattern`)."""
    field = {"anyOf": [{"type": "string", **shape}, {"type": "null"}]}
    return {"type": "object", "properties": {name: field}, "required": [name]}


def contact_grammar(source, bounds=None) -> Grammar:
    schema = shaped("email", {"format": "email"})
    return Grammar(schema, bounds=bounds or {"email": {"copy": True}}, source=input_text(source))


def test_a_copy_with_a_shape_offers_only_prefixes_of_spans_that_have_it():
    """`order` is a substring and could begin an address, but no address in this input begins so: offering `o`
    would corner the decoder (it could neither finish an address nor close). Only a way to a real one is offered."""
    grammar = contact_grammar({"text": "order form: see order 12 - contact anna@x.io"})
    opened = grammar.start().feed('{"email":"')
    assert opened.allowed() == frozenset("an")  # 'anna@x.io', 'nna@x.io', 'na@x.io'
    assert opened.feed("o") is None and opened.feed("anna@x") is not None
    assert accepts(grammar, {"email": "anna@x.io"}) and accepts(grammar, {"email": None})
    assert not accepts(grammar, {"email": "order"}) and not accepts(grammar, {"email": "anna@x"})


def test_a_shaped_copy_with_no_such_span_is_not_opened():
    """With no address in the input, the only answer left is null, written without asking the model."""
    state = contact_grammar({"text": "sent from the order form"}).start()
    assert state.allowed() == frozenset("{") and state.forced() == '{"email":null}'


def test_learned_edges_and_a_shape_are_checked_together():
    """The learned edges allow only whole words; 'anna@x.io' is one, 'nna@x.io' no longer."""
    edges = {"left": ["break"], "right": ["break"]}
    grammar = contact_grammar({"text": "mail anna@x.io"}, {"email": {"copy": True, "copy_edges": edges}})
    assert grammar.start().feed('{"email":"').allowed() == frozenset("a")
    assert accepts(grammar, {"email": "anna@x.io"}) and not accepts(grammar, {"email": "mail"})


def test_a_copy_with_a_length_floor_is_offered_only_long_enough_spans():
    class Code(BaseModel):
        code: str = Field(min_length=5)

    source = input_text({"a": "abc", "b": "defghi"})
    grammar = Grammar(Code.model_json_schema(), bounds={"code": {"copy": True}}, source=source)
    assert grammar.start().feed('{"code":"').allowed() == frozenset("de")  # 'abc' and 'fghi' are too short


SHAPES = ["^[ab]+@[ab]+\\.[ab]+$", "^a[ab]*b$", "^(ab|ba){2}$", "^[^ ]{3,}$"]


@settings(max_examples=120, deadline=None)
@given(st.text(alphabet="ab@. \x00", min_size=0, max_size=30), st.sampled_from(SHAPES), st.data())
def test_a_walk_through_the_offered_characters_never_corners_the_decoder(text, shape, data):
    """Whatever the input and the shape, every character offered leaves a way to a valid end: a random walk
    through them always ends in a value that is a span of the input and matches, or in null."""
    state = Grammar(shaped("v", {"pattern": shape}), bounds={"v": {"copy": True}}, source=text).start()
    state = state.feed(state.forced())
    while not state.done:
        allowed = sorted(state.allowed())
        assert allowed, f"cornered at {state.text!r}"
        state = state.feed(data.draw(st.sampled_from(allowed)))
    value = json.loads(state.text)["v"]
    assert value is None or (value in text and re.fullmatch(shape.strip("^$"), value))


# -- fixed fields ------------------------------------------------------------------------------------------------


def test_fixed_fields_are_written_as_given_and_only_so():
    grammar = Grammar(SCHEMA, fixed={"who": "Bo Li", "changes": 7})
    state = grammar.start().feed('{"numbers":[1],"names":[]')
    assert state.forced() == ',"who":"Bo Li","changes":7}'
    assert not accepts(grammar, {**GOOD, "who": "Bo Li", "changes": 8})
    assert accepts(grammar, {**GOOD, "who": "Bo Li", "changes": 7})
    with pytest.raises(UserError, match=r"\['count'\]"):
        Grammar(SCHEMA, fixed={"count": 1})


# -- schema keywords ---------------------------------------------------------------------------------------------


class Record(BaseModel):
    code: str = Field(pattern=r"^ORD-\d{6}$")
    slug: str = Field(pattern=r"[a-z]+(-[a-z]+)*")
    day: str = Field(json_schema_extra={"format": "date"})
    at: str = Field(json_schema_extra={"format": "date-time"})
    mail: str = Field(json_schema_extra={"format": "email"})
    key: str = Field(json_schema_extra={"format": "uuid"})
    name: str = Field(min_length=2, max_length=5)
    stars: int = Field(ge=1, le=5)
    mixed: Literal[1, "two", None, True]
    pairs: list[list[int]] = Field(min_length=1, max_length=2)


RECORD = {
    "code": "ORD-123456",
    "slug": "x-ab-cd!",
    "day": "2026-12-05",
    "at": "2026-12-05T01:48:35Z",
    "mail": "ana@shop.example",
    "key": "123e4567-e89b-12d3-a456-426614174000",
    "name": "Ana",
    "stars": 5,
    "mixed": "two",
    "pairs": [[1, 2], []],
}
RECORD_GRAMMAR = Grammar(Record.model_json_schema())


@pytest.mark.parametrize(
    "change",
    [
        {"code": "ORD-12345"},
        {"code": "ord-123456"},
        {"code": "ORD-1234567"},  # pattern, anchored
        {"slug": "X-Y"},  # unanchored pattern: some part must match
        {"day": "2026-12-5"},
        {"at": "2026-12-05 01:48"},
        {"mail": "ana.shop.example"},
        {"key": "123e4567"},
        {"name": "A"},
        {"name": "Ana Li"},  # min/maxLength
        {"stars": 0},
        {"stars": 6},  # minimum/maximum
        {"mixed": 2},
        {"mixed": False},  # an enum of mixed JSON types
        {"pairs": []},
        {"pairs": [[1], [2], [3]]},  # minItems/maxItems of a nested array
    ],
)
def test_every_schema_keyword_is_enforced(change):
    assert accepts(RECORD_GRAMMAR, RECORD)
    assert Record.model_validate(RECORD)
    assert not accepts(RECORD_GRAMMAR, {**RECORD, **change})


@settings(max_examples=60, deadline=None)
@given(st.from_regex(r"\AORD-[0-9]{6}\Z"), st.dates(), st.uuids(), st.sampled_from([1, "two", None, True]))
def test_valid_values_of_patterns_and_formats_are_accepted(code, day, key, mixed):
    value = {**RECORD, "code": code, "day": day.isoformat(), "key": str(key), "mixed": mixed}
    assert accepts(RECORD_GRAMMAR, value)


def test_a_keyword_the_grammar_cannot_enforce_is_named_and_logged(caplog):
    class Odd(BaseModel):
        even: int = Field(multiple_of=2)
        word: str = Field(pattern=r"^\w+\b$")
        big: float = Field(ge=10.5)
        site: str = Field(json_schema_extra={"format": "uri"})

    with caplog.at_level(logging.WARNING, logger="protege.decoding"):
        grammar = Grammar(Odd.model_json_schema())
    assert "multipleOf" in grammar.notes and "minimum" in grammar.notes and "format" in grammar.notes
    assert any(note.startswith("pattern '^\\\\w+\\\\b$'") for note in grammar.notes)
    assert "validation checks them" in caplog.text


class Tree(BaseModel):
    name: str
    children: list[Tree]


def test_runaway_guards_stop_deep_nesting_and_loops_but_not_ordinary_answers():
    """A recursive schema lets an unsure model nest forever with a new name at each level (no loop to see): past
    MAX_NESTING open objects and lists the guard stops it. A tail of one repeated block is a loop; an answer of
    varied tokens, or a short repetition, is not."""
    from protege.agents.models.local_engine import LOOP_PERIOD, LOOP_TOKENS, MAX_NESTING, runaway_guard

    grammar = Grammar(Tree.model_json_schema())
    state = grammar.start()
    for level in range(MAX_NESTING // 2):
        state = state.feed(f'{{"name":"n{level}","children":[')
        assert state is not None and state.depth == 2 * (level + 1)
        assert runaway_guard([], state) is None
    deeper = state.feed('{"name":"deep","children":[')
    assert deeper.depth == MAX_NESTING + 2
    assert runaway_guard([], deeper) == f"the answer: nested deeper than {MAX_NESTING} objects and lists"
    closed = grammar.start().feed('{"name":"a","children":[{"name":"b","children":[]}]}')
    assert closed.done and closed.depth == 0
    start = grammar.start()
    block = list(range(LOOP_PERIOD))
    assert runaway_guard(block * (LOOP_TOKENS // LOOP_PERIOD + 1), start).startswith("the answer: a loop")
    assert runaway_guard([7, 8] * (LOOP_TOKENS // 2), start).startswith("the answer: a loop, one block of 2 tokens")
    assert runaway_guard(list(range(LOOP_TOKENS * 2)), start) is None  # varied: no loop
    assert runaway_guard([7, 8] * (LOOP_TOKENS // 2 - 1), start) is None  # not yet LOOP_TOKENS long
    assert runaway_guard(list(range(LOOP_PERIOD + 1)) * 5, start) is None  # a block longer than LOOP_PERIOD


class Tagged(BaseModel):
    counts: dict[str, int]
    pair: tuple[int, str]
    empty: tuple[()] = ()


def test_a_fixed_length_tuple_is_written_position_by_position():
    """pydantic's tuple[int, str] (prefixItems, two items): the first position takes only a number, the second only
    a string, and the list closes after two; a tuple that may grow is any list (validation checks it), noted."""
    grammar = Grammar(Tagged.model_json_schema())
    assert "prefixItems" not in grammar.notes
    state = grammar.start().feed('{"counts":{"a":1},"pair":[')
    assert state.depth == 2 and state.feed('"') is None and state.feed("1,2") is None
    done = state.feed('12,"x"],"empty":[]}')
    assert done is not None and done.done
    assert state.feed('12,"x",') is None
    assert grammar.start().feed('{"counts":{},"pair":[1,"a"],"empty":[]}').done
    assert state.feed("12,").forced() == '"'  # the second position must be a string
    grown = Grammar({"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}})
    assert grown.notes == ["prefixItems"] and grown.start().feed('[1,"a","b"]').done
    either = Grammar(
        {
            "anyOf": [
                {"type": "array", "prefixItems": [{"type": "integer"}] * 2, "maxItems": 2, "items": False},
                {"type": "array", "items": {"type": "integer"}},
            ]
        }
    )
    assert either.start().feed("[1,2,3]").done  # a tuple beside another list is any list: the first would win


# -- a task with tools: the answer, or one call of a tool it has ---------------------------------------------------


class Lookup(BaseModel):
    sku: str
    limit: int = Field(ge=1)


class Plan(BaseModel):
    tier: Literal["free", "pro"]
    seats: int | None = None


TOOLS = [("lookup_stock", Lookup.model_json_schema()), ("plan", Plan.model_json_schema()), ("ping", None)]


def call(name, arguments) -> str:
    return f"<tool_call>{compact({'name': name, 'arguments': arguments})}</tool_call>"


@pytest.mark.parametrize(
    "text",
    [
        compact(GOOD),
        call("lookup_stock", {"sku": "A-1", "limit": 3}),
        call("plan", {"tier": "pro", "seats": None}),
        call("plan", {"tier": "pro"}),  # optional arguments: left out, in any order (checked by the tool)
        call("plan", {"seats": 2, "tier": "pro"}),
        call("ping", {}),
    ],
)
def test_a_tool_task_turn_is_its_answer_or_one_call_of_a_tool_it_has(text):
    assert accepts(Grammar(SCHEMA, tools=TOOLS), text)


@pytest.mark.parametrize(
    "text",
    [
        call("delete_everything", {}),  # not one of its tools
        call("lookup_stock", {"sku": 7, "limit": 3}),  # arguments of another shape
        call("lookup_stock", {"sku": "A-1", "limit": 3, "force": True}),  # no such parameter
        call("lookup_stock", {"limit": 3, "sku": "A-1"}),  # all required: in schema order
        call("lookup_stock", {"sku": "A-1", "limit": 3}) + call("ping", {}),  # one call a turn
        "I will look it up. " + call("ping", {}),
        '{"numbers":[1],"names":[],"who":null,"changes":"two"}',
    ],
)
def test_a_tool_task_turn_refuses_other_tools_other_arguments_and_free_text(text):
    assert not accepts(Grammar(SCHEMA, tools=TOOLS), text)


def test_a_tool_call_is_opened_by_choice_then_written_by_the_grammar():
    state = Grammar(SCHEMA, tools=TOOLS).start()
    assert state.allowed() == frozenset("{<") and state.forced() == ""
    state = state.feed("<")
    assert state.forced() == 'tool_call>{"name":"'  # which tool is the model's choice
    state = state.feed('tool_call>{"name":"l')
    assert state.forced() == 'ookup_stock","arguments":{"sku":"'
    assert Grammar(SCHEMA).start().allowed() == frozenset("{")  # without tools, the answer alone


def test_an_exponent_has_at_most_three_digits_every_double_needs():
    class Reading(BaseModel):
        value: float

    grammar = Grammar(Reading.model_json_schema())
    assert accepts(grammar, '{"value":1.5e-308}') and accepts(grammar, '{"value":2E+12}')
    assert grammar.start().feed('{"value":7E-7777') is None  # a runaway exponent is not writable
