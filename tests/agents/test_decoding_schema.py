"""The answer grammar against the schema shapes a new user's models produce: every option of a union stays
writable, dict values and keys, number floors, long minimum lengths, date/time ranges — each valid answer
writable, each keyword the grammar cannot enforce named in its notes."""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import random
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protege.agents.models.decoding import Grammar
from protege.agents.models.patterns import FORMATS, Pattern


def accepts(grammar: Grammar, text: str) -> bool:
    state = grammar.start().feed(text)
    return state is not None and state.done


def grammar(model: type[BaseModel]) -> Grammar:
    return Grammar(model.model_json_schema())


# -- unions -----------------------------------------------------------------------------------------------------


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    breed: str


class Pet(BaseModel):
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]


class Pets(BaseModel):
    pets: list[Cat | Dog]


class Circle(BaseModel):
    radius: float


class Square(BaseModel):
    side: float


class Shape(BaseModel):
    shape: Circle | Square
    size: int | float
    when: dt.date | str
    code: Literal["none"] | Annotated[str, Field(pattern=r"^\d+$")]
    pair: tuple[int, int] | list[str]


SHAPE = {"shape": {"radius": 1.5}, "size": 2, "when": "2024-01-02", "code": "none", "pair": [1, 2]}


@pytest.mark.parametrize(
    "model, answer",
    [
        (Pet, {"pet": {"kind": "cat", "lives": 9}}),
        (Pet, {"pet": {"kind": "dog", "breed": "pug"}}),
        (Pets, {"pets": [{"kind": "cat", "lives": 1}, {"kind": "dog", "breed": "pug"}]}),
        (Shape, SHAPE),
        (Shape, {**SHAPE, "shape": {"side": 2.0}}),
        (Shape, {**SHAPE, "size": 2.5}),
        (Shape, {**SHAPE, "when": "next friday"}),
        (Shape, {**SHAPE, "code": "12"}),
        (Shape, {**SHAPE, "pair": ["a"]}),
        (Shape, {**SHAPE, "pair": []}),
    ],
)
def test_every_option_of_a_union_can_be_written(model, answer):
    """Not only the first option whose first character fits: a Dog after a Cat's `{`, 2.5 after an int's `2`, a
    phrase after a date's `"`, a list of strings beside a tuple of ints — each read alongside the others."""
    text = json.dumps(answer, separators=(",", ":"))
    model.model_validate_json(text)
    g = grammar(model)
    assert accepts(g, text) and g.notes == []


@pytest.mark.parametrize(
    "model, answer",
    [
        (Pet, {"pet": {"kind": "dog", "lives": 9}}),  # a Dog with a Cat's field
        (Pet, {"pet": {"kind": "cow", "lives": 9}}),
        (Shape, {**SHAPE, "code": "nothing"}),
        (Shape, {**SHAPE, "pair": [1, "a"]}),
        (Shape, {**SHAPE, "pair": [1, 2, 3]}),
        (Shape, {**SHAPE, "shape": {"radius": 1.5, "side": 2.0}}),
    ],
)
def test_an_answer_no_option_of_a_union_allows_is_refused(model, answer):
    assert not accepts(grammar(model), json.dumps(answer, separators=(",", ":")))


def test_what_every_option_shares_is_still_forced_and_a_dead_option_drops_out():
    state = grammar(Pet).start()
    assert state.forced() == '{"pet":{"kind":"'
    dog = state.feed('{"pet":{"kind":"d')
    assert dog.forced() == 'og","breed":"' and len(dog.stacks) == 1
    number = grammar(Shape).start().feed('{"shape":{"radius":1},"size":2')
    assert {".", ",", "e", "0"} <= number.allowed()
    assert len(number.feed(",").stacks) == 1  # int and float read `2` alike: one reading again


def test_a_union_member_is_matched_by_its_fields_for_the_bounds_it_reached():
    """The Dog's learned breed bound is found though Cat comes first (both are objects)."""
    g = Grammar(Pet.model_json_schema(), bounds={"pet.breed": {"max_length": 3}})
    assert g.bound_hits('{"pet":{"kind":"dog","breed":"pug"}}') == [
        "pet.breed: a string of 3 characters, the longest allowed"
    ]


class Owner(BaseModel):
    pets: list[Cat | Dog]
    counts: dict[str, int | float]
    tag: Literal["a", "b"] | dt.date | None
    score: Annotated[float, Field(gt=0)]


@pytest.mark.parametrize("seed", range(30))
def test_a_random_walk_through_the_allowed_characters_ends_in_a_valid_answer(seed):
    """Whatever options the walk takes, it is never cornered and what it writes validates."""
    rng, g = random.Random(seed), grammar(Owner)
    state = g.start()
    while not state.done:
        state = state.feed(state.forced()) if state.forced() else state
        if state.done:
            break
        allowed = state.allowed()
        choices = sorted(allowed) if allowed is not None else list('abc 1"')
        rng.shuffle(choices)
        for preferred in '"]}':  # close soon: the walk is about the options, not long values
            if preferred in choices and rng.random() < 0.4:
                choices.insert(0, choices.pop(choices.index(preferred)))
        state = next((n for n in map(state.feed, choices) if n is not None), None)
        assert state is not None and len(state.text) < 2000, "cornered or runaway"
    Owner.model_validate_json(state.text)


# -- numbers ----------------------------------------------------------------------------------------------------


class Ratio(BaseModel):
    ratio: Annotated[float, Field(gt=0)]


@pytest.mark.parametrize(
    "value, ok",
    [("0", False), ("0.0", False), ("0.000", False), ("0e5", False)]
    + [("0.5", True), ("0.05", True), ("1e-3", True), ("0.1e2", True)],
)
def test_a_float_above_zero_is_never_zero(value, ok):
    assert accepts(grammar(Ratio), f'{{"ratio":{value}}}') is ok
    assert grammar(Ratio).notes == []


def test_a_zero_float_is_not_offered_an_end_nor_an_exponent():
    state = grammar(Ratio).start().feed('{"ratio":0')
    assert state.allowed() == frozenset(".")
    assert "}" not in state.feed(".0").allowed() and "e" not in state.feed(".0").allowed()


class Floors(BaseModel):
    score: Annotated[float, Field(ge=1.0)]


def test_a_float_floor_other_than_zero_is_named():
    """1.0 is enforced only as a sign (0.5 gets through): validation checks it, and the notes say so."""
    g = grammar(Floors)
    assert "minimum" in g.notes and accepts(g, '{"score":1.5}')


INTS = {
    "type": "object",
    "properties": {
        "low": {"type": "integer", "exclusiveMinimum": -1},
        "some": {"type": "integer", "minimum": 0.5, "maximum": 3},
        "huge": {"type": "integer", "minimum": 10**20},
    },
}


def test_integer_floors_are_enforced_as_integers():
    """gt=-1 is >= 0, exactly; a range with a fractional end takes the integers inside it; a floor longer than
    the runaway guard's 18 digits stays writable."""
    g = Grammar(INTS)
    assert g.notes == ["minimum"]  # the huge one's
    assert accepts(g, '{"low":0,"some":1,"huge":100000000000000000000}')
    assert not accepts(g, '{"low":-1,"some":1,"huge":100000000000000000000}')
    assert not accepts(g, '{"low":0,"some":0,"huge":100000000000000000000}')


def test_one_fields_enforced_keyword_keeps_another_fields_note():
    """A small integer range enforces its maximum, a date format its format; neither takes the note from a
    field whose maximum or format is not enforced."""

    class Mixed(BaseModel):
        ratio: Annotated[float, Field(ge=0, le=1)]
        stars: Annotated[int, Field(ge=1, le=5)]
        site: str = Field(json_schema_extra={"format": "uri"})
        day: dt.date

    g = grammar(Mixed)
    assert "maximum" in g.notes and "format" in g.notes


# -- objects without named properties ---------------------------------------------------------------------------


class Color(enum.StrEnum):
    red = "red"
    green = "green"


class Address(BaseModel):
    street: str
    city: str


class Maps(BaseModel):
    counts: dict[str, int]
    places: dict[str, Address]
    by_color: dict[Color, int]
    named: dict[Literal["x", "y"], str]


MAPS = {"counts": {"a": 1}, "places": {"x": {"street": "s", "city": "c"}}, "by_color": {"red": 2}, "named": {"x": "1"}}


@pytest.mark.parametrize(
    "change",
    [
        {"counts": {"a": "x"}},
        {"counts": {"a": 1.5}},
        {"places": {"x": 5}},
        {"places": {"x": {"street": "s"}}},
        {"by_color": {"purple": 1}},
        {"named": {"z": "1"}},
    ],
)
def test_a_dicts_values_and_keys_have_their_schema(change):
    g = grammar(Maps)
    assert accepts(g, json.dumps(MAPS, separators=(",", ":"))) and g.notes == []
    text = json.dumps({**MAPS, **change}, separators=(",", ":"))
    with pytest.raises(ValidationError):
        Maps.model_validate_json(text)
    assert not accepts(g, text)


def test_a_model_that_forbids_extra_fields_and_has_none_is_an_empty_object():
    class Nothing(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Holder(BaseModel):
        nothing: Nothing

    g = grammar(Holder)
    assert accepts(g, '{"nothing":{}}') and not accepts(g, '{"nothing":{"a":1}}')


# -- strings ----------------------------------------------------------------------------------------------------


class Essay(BaseModel):
    essay: Annotated[str, Field(min_length=500)]


def test_a_minimum_length_above_the_runaway_guard_stays_writable_and_unflagged():
    g = grammar(Essay)
    for length in (500, 700):
        text = '{"essay":"' + "a" * length + '"}'
        assert accepts(g, text) and g.bound_hits(text) == []
    assert not accepts(g, '{"essay":"' + "a" * 499 + '"}')


@pytest.mark.parametrize(
    "fmt, value, ok",
    [
        ("date", "2024-12-31", True),
        ("date", "2024-19-39", False),
        ("date", "2024-00-10", False),
        ("date", "2024-01-00", False),
        ("date", "2024-11-31", False),
        ("date", "2024-02-30", False),
        ("date", "2024-02-29", True),
        ("date", "2024-04-30", True),
        ("time", "23:59:60", True),
        ("time", "29:00:00", False),
        ("time", "12:69:00", False),
        ("time", "12:00:69", False),
        ("date-time", "2024-01-02T03:04:05.123+05:30", True),
        ("date-time", "2024-01-02T03:04:05+25:00", False),
        ("date-time", "2024-13-02T03:04:05Z", False),
    ],
)
def test_date_and_time_formats_refuse_impossible_fields(fmt, value, ok):
    pattern = Pattern(FORMATS[fmt])
    states = pattern.start
    for char in value:
        states = states and pattern.step(states, char)
    assert bool(states and pattern.accepts(states)) is ok


@pytest.mark.parametrize(
    "pattern, reason",
    [
        (r"(?i)^abc$", "an inline flag such as (?i)"),
        (r"^(?=a)\w+$", "a lookaround"),
        (r"^(a)\1$", "a backreference"),
        (r"^\w+\b$", "a word boundary"),
    ],
)
def test_an_unsupported_pattern_is_noted_with_its_reason(pattern, reason, caplog):
    with caplog.at_level(logging.WARNING, logger="protege.decoding"):
        g = Grammar({"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}})
    assert g.notes == [f"pattern {pattern!r} ({reason})"]


def test_a_named_group_is_only_a_group():
    g = Grammar({"type": "object", "properties": {"code": {"type": "string", "pattern": r"^(?P<n>\d{2})-x$"}}})
    assert g.notes == [] and accepts(g, '{"code":"12-x"}') and not accepts(g, '{"code":"1-x"}')


# -- recursion --------------------------------------------------------------------------------------------------


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


def test_a_recursive_schema_names_the_depth_it_leaves_to_validation():
    assert grammar(Tree).notes == ["the schema below 32 levels (recursion)"]
