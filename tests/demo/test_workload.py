"""The bundled example workload: shape, task contract, labels consistent with the emails, variety, reproducibility."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from protege.demo.workload import DATA_FILE, POOL_SIZE, Email, Order, extract_order, load_examples
from protege.errors import UserError
from protege.programs.interpret import NUMBER_WORDS
from protege.tasks import TaskSpec, input_hash

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return load_examples()


def new_message(email: dict) -> str:
    """The email's own text: subject + body up to the quoted earlier message."""
    body = re.split(r"\n\nOn [^\n]* wrote:\n|\n\n-----Original Message-----", email["body"])[0]
    return email["subject"] + "\n" + body


def test_splits_are_fixed_and_disjoint(examples):
    """1,200 examples: the first 900 are the pool, the last 300 held out; inputs are all distinct."""
    pool, heldout = load_examples("pool"), load_examples("heldout")
    assert len(examples) == 1200 and len(pool) == POOL_SIZE == 900 and len(heldout) == 300
    assert pool + heldout == examples
    hashes = {input_hash(e["input"]) for e in examples}
    assert len(hashes) == 1200


def test_load_returns_fresh_dicts_and_rejects_unknown_split():
    """Callers may mutate what they get; a bad split name is a UserError naming it."""
    first = load_examples("heldout")
    first[0]["output"]["quantity"] = -1
    assert load_examples("heldout")[0]["output"]["quantity"] != -1
    with pytest.raises(UserError, match="'test'"):
        load_examples("test")


def test_extract_order_is_a_valid_task_and_every_example_fits_it(examples):
    """The typed function registers as a task; every input and output validates and round-trips exactly."""
    spec = TaskSpec(extract_order)
    assert spec.params == ["email"] and spec.output_model is Order
    assert "deliver_by" in spec.instructions and "YYYY-MM-DD" in spec.instructions
    assert set(spec.output_schema["properties"]) == {
        "customer_name",
        "order_id",
        "product",
        "quantity",
        "deliver_by",
        "city",
        "contact_email",
        "urgency",
    }
    for ex in examples:
        parsed = spec.parse_input((), ex["input"])
        assert isinstance(parsed.email, Email)
        assert spec.parse_output(ex["output"]).model_dump() == ex["output"]


def test_labels_are_grounded_in_the_new_message(examples):
    """Every non-null field can be read off the email's own text (not only off the quoted reply)."""
    for ex in examples:
        email, out = ex["input"]["email"], ex["output"]
        text = new_message(email)
        header_and_text = email["sender"] + "\n" + text
        assert out["product"] in text
        if out["customer_name"]:
            assert out["customer_name"] in header_and_text
        if out["contact_email"]:
            assert out["contact_email"] in header_and_text
        if out["city"]:
            assert out["city"] in text
        if out["order_id"]:
            assert re.fullmatch(r"ORD-\d{6}", out["order_id"]) and out["order_id"][4:] in text
        if out["deliver_by"]:
            assert date.fromisoformat(out["deliver_by"]) > _email_date(email)
        assert _quantity_written(out["quantity"], text), (out["quantity"], text)


def _email_date(email: dict) -> date:
    from email.utils import parsedate_to_datetime

    return parsedate_to_datetime(email["date"]).date()


def _quantity_written(q: int, text: str) -> bool:
    forms = {str(q)} | ({NUMBER_WORDS[q]} if q <= 20 else set())
    forms |= {"a", "an", "a single"} if q == 1 else set()
    forms |= {{6: "half a dozen", 12: "a dozen", 24: "two dozen"}[q]} if q in (6, 12, 24) else set()
    # "3x Item" and "Item x3" count as written digits
    return any(re.search(rf"(?<![\w-])x?{re.escape(f)}x?(?![\w-])", text, re.IGNORECASE) for f in forms)


def test_reference_dates_follow_the_stated_rules(examples):
    """Dates without a year, 'tomorrow' and weekdays resolve as the instructions say, from the Date header."""
    checked = Counter()
    for ex in examples:
        email, out = ex["input"]["email"], ex["output"]
        if not out["deliver_by"]:
            continue
        sent, due = _email_date(email), date.fromisoformat(out["deliver_by"])
        text = new_message(email)
        if re.search(r"\btomorrow\b", text):
            assert (due - sent).days == 1
            checked["tomorrow"] += 1
        month, weekday = due.strftime("%b"), due.strftime("%A")
        if f"{due.day:02d}.{due.month:02d}.{due.year}" in text or due.isoformat() in text:
            checked["explicit"] += 1
        elif re.search(rf"\b{month}\w* {due.day}\b|\b{due.day}(st|nd|rd|th)? (of )?{month}", text):
            assert 0 < (due - sent).days < 366  # the next occurrence after the email's date
            checked["month name"] += 1
        if re.search(rf"\bthis {weekday}\b", text):
            assert 1 < (due - sent).days < 7  # the first such weekday after the email's date
            checked["this weekday"] += 1
    assert checked["tomorrow"] >= 5 and checked["this weekday"] >= 2
    assert checked["explicit"] >= 50 and checked["month name"] >= 200


def test_workload_has_real_variety(examples):
    """Phrasings, nulls, spelled-out numbers, quoted replies, forms, all urgency levels and distractors occur."""
    outs = [e["output"] for e in examples]
    emails = [e["input"]["email"] for e in examples]
    for field in ("customer_name", "order_id", "deliver_by", "city", "contact_email"):
        nulls = sum(o[field] is None for o in outs)
        assert 0 < nulls < len(outs), field
    assert Counter(o["urgency"] for o in outs).keys() == {"low", "normal", "high"}
    assert len({o["product"] for o in outs}) >= 30 and len({o["city"] for o in outs}) >= 30
    spelled = sum(bool(re.search(rf"\b({'|'.join(NUMBER_WORDS[2:])}|dozen)\b", new_message(e))) for e in emails)
    assert spelled >= 150
    assert sum("wrote:" in e["body"] or "Original Message" in e["body"] for e in emails) >= 200
    assert sum(e["sender"].startswith("Northwind Web Form") for e in emails) >= 80
    assert sum("Last time we ordered" in e["body"] or "Invoice INV-" in e["body"] for e in emails) >= 100
    skeletons = Counter(_request_skeleton(e, o) for e, o in zip(emails, outs))
    assert len(skeletons) >= 200 and skeletons.most_common(1)[0][1] < 0.15 * len(emails)


def _request_skeleton(email: dict, out: dict) -> str:
    """The sentence that names the product, with the product, numbers and order refs blanked: its template."""
    text = new_message(email).replace(out["product"], "<P>")
    sentence = next(s for s in re.split(r"(?<=[.?!])\s+|\n", text) if "<P>" in s)
    return re.sub(r"\d+|\b(?:" + "|".join(NUMBER_WORDS) + r")\b", "#", sentence.lower())


def test_shipped_file_is_what_the_generator_makes(tmp_path, monkeypatch):
    """bench/workloads/make_orders.py regenerates the shipped data byte for byte (the data is reproducible)."""
    spec = importlib.util.spec_from_file_location("make_orders", ROOT / "bench" / "workloads" / "make_orders.py")
    make_orders = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "make_orders", make_orders)  # its dataclass looks itself up there
    spec.loader.exec_module(make_orders)
    out = tmp_path / DATA_FILE
    make_orders.write(make_orders.generate(), out)
    assert out.read_bytes() == (ROOT / "src" / "protege" / "data" / DATA_FILE).read_bytes()
