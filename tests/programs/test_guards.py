"""What a field's programs answer is guarded by what its training inputs looked like: a constant answers only
inputs like those the traces never varied on, one atypical trace does not turn a guard off, and numbers are
written in ASCII digits."""

from __future__ import annotations

import random
from datetime import date

import pytest

from protege.programs import REFUSED, FieldProgram, Pattern, Program, ProgramSet, build, run
from protege.programs.render import render

FIELDS = ["amount", "currency", "day", "last4", "balance"]
USD = "Your card ending 4321 was charged USD 19.99 at LIDL on 2025-05-06. Avail bal: USD 250.00"


def _sms(i: int) -> tuple[dict, dict]:
    """A bank SMS in one of two layouts, every one in EUR: the currency never varies."""
    r = random.Random(i)
    amount, balance = round(r.uniform(1, 999), 2), round(r.uniform(100, 9999), 2)
    day, last4 = date(2025, r.randint(1, 12), r.randint(1, 28)).isoformat(), f"{r.randint(0, 9999):04d}"
    shop = r.choice(["TESCO", "SHELL", "UBER", "IKEA", "LIDL"])
    if i % 2:
        text = f"Alert: EUR {amount:.2f} spent on card ending {last4} at {shop} on {day}. Avail bal: EUR {balance:.2f}"
    else:
        text = f"Your card ending {last4} was charged EUR {amount:.2f} at {shop} on {day}. Avail bal: EUR {balance:.2f}"
    out = {"amount": amount, "currency": "EUR", "day": day, "last4": last4, "balance": balance}
    return {"sms": {"text": text}}, out


def _sms_set(extra: list[tuple[dict, dict]] = ()) -> ProgramSet:
    return build("sms", [_sms(i) for i in range(300)] + list(extra), FIELDS, promote_at=0.95)


@pytest.fixture(scope="module")
def clean() -> ProgramSet:
    return _sms_set()


def _apply(programs: ProgramSet, text: str) -> dict:
    return programs.apply({"sms": {"text": text}})[0]


def test_a_constant_answers_only_inputs_like_the_traces_it_never_varied_on(clean):
    currency = clean.served["currency"]
    assert [p.op for p in currency.programs] == ["const"]
    assert "EUR" in currency.anchors["sms.text"]  # every training text wrote it
    eur = _sms(1000)[0]["sms"]["text"]
    assert _apply(clean, eur)["currency"] == "EUR"
    for text in ("", "Hi mum, call me back when you can", USD):  # the constant is no answer for any of these
        assert "currency" not in _apply(clean, text)
    assert _apply(clean, eur + " x" * currency.max_chars).get("currency") is None
    namespace: dict = {}
    exec(compile(render(clean), "fields.py", "exec"), namespace)  # the reviewer's copy guards it alike
    for text in (eur, "", USD):
        assert namespace["solve"]({"sms": {"text": text}}) == _apply(clean, text)
    unguarded = FieldProgram("currency", currency.programs, promoted=True)  # as stored before constants had guards
    assert unguarded.apply({"sms": {"text": eur}}) is REFUSED
    namespace = {}
    exec(compile(render(ProgramSet("sms", {"currency": unguarded})), "fields.py", "exec"), namespace)
    assert namespace["solve"]({"sms": {"text": eur}}) == {}


def test_one_atypical_trace_leaves_every_guard_as_the_clean_traces_set_it(clean):
    placeholders = {"amount": 0.0, "currency": "EUR", "day": "1970-01-01", "last4": "0000", "balance": None}
    empty = ({"sms": {"text": ""}}, placeholders)  # a valid trace: the teacher answered an empty SMS
    probe_in, probe_out = _sms(2000)
    huge = ({"sms": {"text": probe_in["sms"]["text"] + " x" * 90_000}}, probe_out)  # a 180 KB probe, answered
    odd = _sms_set([empty, huge])
    for name in FIELDS:
        assert odd.fields[name].anchors == clean.fields[name].anchors and odd.fields[name].anchors
        assert odd.fields[name].max_chars == clean.fields[name].max_chars < 10_000
    assert not any(p.absent_null for p in odd.served["balance"].programs)  # one null taught no rule
    assert _apply(odd, USD) == {"day": "2025-05-06", "last4": "4321"}  # balance is left to the model, not null


def test_numbers_are_read_in_ascii_digits_only(clean):
    eur = _sms(1000)[0]["sms"]["text"]
    last4 = _sms(1000)[1]["last4"]
    arabic = eur.replace(last4, last4.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")))
    assert _apply(clean, eur)["last4"] == last4 and "last4" not in _apply(clean, arabic)
    for cls, map_name in (("int", "id"), ("int", "int"), ("number", "float"), ("word", "int"), ("token", "float")):
        program = Program("span", ("t",), Pattern(left="total ", cls=cls), map=map_name)
        assert run(program, {"t": "total ١٢٣٤"}) is REFUSED
        assert run(program, {"t": "total 1234"}) in ("1234", 1234)
    assert run(Program("span", ("t",), Pattern(left="on ", cls="rest"), map="date"), {"t": "on ٢٠٢٥-٠٥-٠٦"}) is REFUSED
    words = Program("span", ("t",), Pattern(left="total ", cls="word"), map="int")
    rendered = ProgramSet("t", {"n": FieldProgram("n", [words], promoted=True)})
    namespace: dict = {}
    exec(compile(render(rendered), "fields.py", "exec"), namespace)  # the reviewer's copy reads them alike
    assert namespace["solve"]({"t": "total ١٢٣٤"}) == {} and namespace["solve"]({"t": "total 12"}) == {"n": 12}


def test_a_fields_anchors_come_from_the_texts_its_programs_answered_right():
    """A tenth of the traces are notices no amount program explains (the teacher answered 0.0): they say nothing
    of what an SMS the program reads looks like, so they do not thin its anchors, and a promotion that writes
    `EUR 500` is refused rather than read as an amount."""
    notice = ({"sms": {"text": "Your last transaction was reversed."}}, {"amount": 0.0})
    examples = [(i, {"amount": o["amount"]}) for i, o in (_sms(i) for i in range(300))]
    examples += [({"sms": {"text": f"{notice[0]['sms']['text']} Ref {k}"}}, notice[1]) for k in range(30)]
    programs = build("sms", examples, ["amount"], promote_at=0.95)
    amount = programs.served["amount"]
    assert {"ending", "card"} <= set(amount.anchors["sms.text"])
    assert _apply(programs, _sms(1000)[0]["sms"]["text"])["amount"] == _sms(1000)[1]["amount"]
    assert _apply(programs, "Win EUR 500 now at IKEA! Reply STOP") == {}
