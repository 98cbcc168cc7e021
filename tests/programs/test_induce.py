"""Field programs induced from examples: found for span, list and count fields, none for free text, refused where
they do not apply, verified on held-out traces, and rendered to Python that agrees with the interpreter."""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from protege.programs import REFUSED, ProgramSet, build, run
from protege.programs.induce import Corpus, induce_field
from protege.programs.render import render
from protege.programs.verify import fits_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "workloads"))
import make_invoices


def _changelog(rng: random.Random, n_items: int | None = None) -> tuple[dict, dict]:
    """A changelog entry: version line, maintainer, bullet items with bug numbers; the count is never written."""
    n = rng.randint(0, 6) if n_items is None else n_items
    bugs = [rng.randint(1000, 999999) for _ in range(n)]
    pkg = rng.choice(["zlib", "curl", "bash", "vim", "gawk", "sed"])
    items = "\n".join(f"  * Fix crash in {rng.choice(['parser', 'io', 'ui'])} (Closes: #{b})" for b in bugs)
    who = rng.choice(["Ana Lima", "Bo Chen", "Émile Zoë", "Jürgen Groß"])
    head = f"{pkg} (1.{rng.randint(0, 9)}-{rng.randint(1, 5)}) unstable; urgency=low"
    text = f"{head}\n\n{items}\n\n -- {who}  Mon, 01 Jan 2024"
    summary = rng.choice(["a calm release", "security fixes", "routine upkeep", "big rewrite"])
    return {"entry": {"text": text}}, {
        "package": pkg,
        "maintainer": who,
        "bugs": bugs,
        "changes": n,
        "summary": summary,
    }


def _examples(n: int, seed: int = 3) -> list[tuple[dict, dict]]:
    rng = random.Random(seed)
    return [_changelog(rng) for _ in range(n)]


@pytest.fixture(scope="module")
def changelog_set() -> ProgramSet:
    return build("changelog", _examples(150), ["package", "maintainer", "bugs", "changes", "summary"], promote_at=0.95)


def test_span_list_and_count_fields_get_verified_programs(changelog_set):
    served = changelog_set.served
    assert {"package", "maintainer", "bugs", "changes"} <= set(served)
    assert served["changes"].programs[0].op == "count"
    assert served["bugs"].programs[0].op == "all"
    for name in ("package", "maintainer", "bugs", "changes"):
        assert served[name].accuracy == 1.0 and served[name].heldout >= 30


def test_free_text_field_gets_no_program(changelog_set):
    assert "summary" not in changelog_set.served
    assert changelog_set.fields["summary"].programs == []


def test_count_of_zero_and_unicode_inputs(changelog_set):
    rng = random.Random(99)
    inp, out = _changelog(rng, n_items=0)
    assert changelog_set.served["changes"].apply(inp) == 0
    assert changelog_set.served["bugs"].apply(inp) == []
    inp = {
        "entry": {
            "text": "vim (1.2-3) unstable; urgency=low\n\n  * Fix crash in ui (Closes: #42)\n\n"
            " -- Jürgen Groß  Mon, 01 Jan 2024"
        }
    }
    values, refused = changelog_set.apply(inp)
    assert values["maintainer"] == "Jürgen Groß" and values["changes"] == 1 and values["bugs"] == [42]


def test_input_without_the_delimiters_is_refused(changelog_set):
    values, refused = changelog_set.apply({"entry": {"text": "no changelog here at all"}})
    assert "maintainer" in refused and "maintainer" not in values
    assert run(changelog_set.served["maintainer"].programs[0], {"entry": {}}) is REFUSED


def test_program_that_fits_training_but_fails_heldout_is_not_promoted():
    # training traces (by input hash) all say "low"; held-out ones are mixed: a constant fits training only
    rng = random.Random(5)
    examples = []
    from protege.programs.verify import HELDOUT_EVERY
    from protege.tasks import input_hash

    while len(examples) < 120:
        inp = {"note": {"text": f"ticket {rng.randint(0, 10**9)}"}}
        held = int(input_hash(inp)[:8], 16) % HELDOUT_EVERY == 0
        examples.append((inp, {"level": rng.choice(["low", "high"]) if held else "low"}))
    programs = build("t", examples, ["level"], promote_at=0.95)
    fp = programs.fields["level"]
    assert fp.programs and fp.programs[0].op == "const"
    assert not fp.promoted and "held-out accuracy" in fp.reason


def test_mixed_formats_chain_partial_programs():
    rows = make_invoices.generate(300, seed=8)
    corpus = Corpus([r["input"] for r in rows], [r["output"] for r in rows])
    fits = induce_field(corpus, "item_count")
    assert fits, "a count program for the invoices' items"
    covered = set().union(*(f.covered for f in fits))
    assert len(covered) / corpus.n >= 0.95


def test_python_rendering_agrees_with_the_interpreter_on_every_trace(changelog_set):
    invoices = make_invoices.generate(240, seed=2)
    inv_set = build(
        "invoices", [(r["input"], r["output"]) for r in invoices], list(invoices[0]["output"]), promote_at=0.95
    )
    import make_invites

    invites = make_invites.generate(150, seed=1)
    invite_set = build(
        "invites", [(r["input"], r["output"]) for r in invites], list(invites[0]["output"]), promote_at=0.95
    )
    assert {p.op for fp in invite_set.served.values() for p in fp.programs} >= {"split", "nsplit", "span", "count"}
    debian = debian_changelogs(240)
    debian_set = build(
        "debian", [(r["input"], r["output"]) for r in debian], list(debian[0]["output"]), promote_at=0.95
    )
    assert any(p.region.run for fp in debian_set.served.values() for p in fp.programs)
    cases = (
        (changelog_set, [i for i, _ in _examples(150)]),
        (debian_set, [r["input"] for r in debian]),
        (inv_set, [r["input"] for r in invoices]),
        (invite_set, [r["input"] for r in invites]),
    )
    for programs, inputs in cases:
        namespace: dict = {}
        exec(compile(render(programs), "fields.py", "exec"), namespace)  # the reviewer's copy, run as they would
        for inp in inputs:
            assert namespace["solve"](inp) == programs.apply(inp)[0]


def test_program_set_round_trips_through_json(changelog_set):
    again = ProgramSet.from_json(changelog_set.to_json())
    inp = _examples(3, seed=11)[0][0]
    assert again.apply(inp) == changelog_set.apply(inp)


def test_delimited_list_in_prose_and_its_count():
    import make_invites

    rows = make_invites.generate(200, seed=4)
    programs = build(
        "invites", [(r["input"], r["output"]) for r in rows], ["attendees", "attendee_count"], promote_at=0.95
    )
    assert programs.served["attendees"].programs[0].op == "split"
    assert programs.served["attendee_count"].programs[0].op == "nsplit"
    inp = {
        "invite": {
            "subject": "Invitation: x",
            "body": rows[0]["input"]["invite"]["body"].replace(
                rows[0]["input"]["invite"]["body"].split("Attendees: ")[1].split(".")[0], "Zoë Ødegård, Li Na & Bo Chen"
            ),
        }
    }
    values, _ = programs.apply(inp)
    assert values == {"attendees": ["Zoë Ødegård", "Li Na", "Bo Chen"], "attendee_count": 3}


def test_numbers_in_every_closes_list_and_none_where_the_traces_say_none():
    import make_changelogs

    rows = make_changelogs.generate(240, seed=3)
    programs = build("changelogs", [(r["input"], r["output"]) for r in rows], ["closes", "changes"], promote_at=0.95)
    closes = programs.served["closes"]
    region = closes.programs[0].region
    assert closes.programs[0].op == "all" and (region.each or region.run) and closes.refusal_rate == 0
    entry = (
        "vim (9.1-2) unstable; urgency=low\n\n  * Fix it (Closes: #101, #202)\n    - a sub-item\n"
        "  * Also (LP: #99) and (Closes: #303)\n  * Polish\n\n -- Ana Lima <ana@debian.org>  Mon, 01 Jan 2024"
    )
    assert programs.apply({"entry": entry})[0] == {"closes": [101, 202, 303], "changes": 3}
    no_bugs = entry.replace("(Closes: #101, #202)", "").replace("(Closes: #303)", "")
    assert programs.apply({"entry": no_bugs})[0]["closes"] == []


def test_yes_no_field_and_a_count_off_by_a_header_row():
    rows = make_invoices.generate(240, seed=6)
    programs = build("invoices", [(r["input"], r["output"]) for r in rows], ["overdue", "item_count"], promote_at=0.95)
    assert programs.served["overdue"].programs[0].op == "has"
    table = (
        "Hello,\n\nPlease find invoice INV-1 from Acme Tools Ltd below.\nIssued: 1 Jan 2024\nBill to: a@b.org\n"
        "Reminder: this invoice is OVERDUE.\n\nItems:\n| code | item | qty | price |\n| SKU1 | pen | 2 | 1.00 |\n"
        "| SKU2 | ink | 1 | 3.00 |\n\nTotal due: 5.00 EUR\n\n\n-- \nAcme Tools Ltd accounts team"
    )
    values, _ = programs.apply({"subject": "Invoice INV-1", "body": table})
    assert values == {"overdue": True, "item_count": 2}
    from protege.programs import Pattern, Program, run

    header_aware = Program("count", ("body",), Pattern(left="| SKU", cls="rest", line=True), offset=0)
    assert run(header_aware, {"body": table}) == 2
    assert run(Program("count", ("body",), Pattern(left="|", cls="rest", line=True), offset=-1), {"body": table}) == 2


def test_an_input_far_longer_than_any_trace_is_refused(changelog_set):
    fp = changelog_set.served["changes"]
    assert fp.max_chars >= 2000
    huge = {"entry": {"text": "vim (1.0-1) unstable; urgency=low\n\n  * x\n\n -- A B  " + "é " * fp.max_chars}}
    assert fp.apply(huge) is REFUSED


def test_number_words_and_a_count_of_the_list_another_field_is_in():
    import make_prose_orders

    rows = make_prose_orders.generate(300, seed=2)
    programs = build(
        "prose", [(r["input"], r["output"]) for r in rows], ["quantities", "item_count", "po_number"], promote_at=0.95
    )
    count = programs.served["item_count"]
    assert count.programs[0].op == "nsplit" and count.accuracy == 1.0
    with_po = next(r for r in rows if r["output"]["po_number"])
    body = with_po["input"]["email"]["body"]
    no_po = body.replace(f" Please reference PO {with_po['output']['po_number']} on the invoice.", "")
    po = programs.served["po_number"]
    assert po.apply(with_po["input"]) == with_po["output"]["po_number"]
    assert po.apply({"email": {"subject": "Order", "body": no_po}}) is None  # the traces say null without one
    from protege.programs import Pattern, Program, run

    seven = Program("span", ("t",), Pattern(left="order ", cls="word"), map="int")
    assert run(seven, {"t": "please order Seven lamps"}) == 7 and run(seven, {"t": "please order lamps"}) is REFUSED


def test_a_few_teacher_slips_do_not_hide_the_right_program():
    rows = make_invoices.generate(300, seed=9)
    examples = [(r["input"], dict(r["output"])) for r in rows]
    for _, out in examples[:300:60]:  # 5 of 300 traces (under 2%) miscount, as a real teacher sometimes does
        out["item_count"] += 1
    programs = build("invoices", examples, ["item_count"], promote_at=0.95)
    fp = programs.served["item_count"]
    assert fp.programs[0].op == "count" and fp.accuracy >= 0.95


def debian_changelogs(n: int, seed: int = 3) -> list[dict]:
    import make_debian_changelogs

    return make_debian_changelogs.generate(n, seed=seed)


def test_a_list_after_a_keyword_is_read_however_it_wraps_or_is_cased():
    rows = debian_changelogs(240)
    programs = build("debian", [(r["input"], r["output"]) for r in rows], list(rows[0]["output"]), promote_at=0.95)
    assert set(programs.served) == set(rows[0]["output"])  # every field of the messy entries has a program
    closes = programs.served["closes"].programs[0]
    assert closes.region.run and closes.region.fold and closes.region.start.lower() == "closes:"
    entry = (
        "vim (2:9.1+dfsg-2~bpo12+1) bookworm-backports; urgency=medium\n\n  [ Ana Lima ]\n"
        "  * Fix the parser (Closes: #101, bug#202,\n    #303) (LP: #99)\n    - see #404, a sub-item closes: #505\n"
        "  * Polish the docs. Closes:#606 and #707. Thanks to Bo <bo@example.com>\n"
        "  * Refresh patches\n\n -- Émile Zoë <emile@debian.org>  Mon, 01 Jan 2024 12:00:00 +0000"
    )
    values, _ = programs.apply({"entry": entry})
    assert values["closes"] == [101, 202, 303, 505, 606, 707]
    assert values["changes"] == 3 and values["email"] == "emile@debian.org" and values["maintainer"] == "Émile Zoë"
    assert values["version"] == "2:9.1+dfsg-2~bpo12+1" and values["distribution"] == "bookworm-backports"
    assert programs.apply({"entry": entry.replace("Closes", "Fixes").replace("closes", "fixes")})[0]["closes"] == []


def test_a_run_region_ends_where_the_list_does():
    from protege.programs.interpret import run_region
    from protege.programs.language import Pattern, Program, Region

    item = Pattern(cls="int").regex
    assert run_region("Closes: #1, #2 and\n  #3) see #4", "Closes:", False, item) == "1\n2\n3"
    tags = Program("all", ("t",), Pattern(cls="word"), region=Region(start="Tags:", run=True))
    assert run(tags, {"t": "Tags: red, blue and green. Size: 4"}) == ["red", "blue", "green"]  # not `and`
    assert run_region("closes: 5; CLOSES: 6", "Closes:", True, item) == "5\n6"
    assert run_region("closes: 5", "Closes:", False, item) is None  # case kept unless folded
    assert run_region("Closes: none yet, #7", "Closes:", False, item) is None  # a keyword without its list
    with pytest.raises(ValueError, match="run region"):
        Program("span", ("t",), Pattern(cls="int"), region=Region(start="Closes:", run=True))


def test_a_list_kept_sorted_or_each_once_and_a_count_of_every_bulleted_line():
    """dpkg's own reading sorts the closed bugs and drops repeats; a count of items may take sub-items of any
    bullet. The same entries, answered that way, get programs that do so — and render to Python that agrees."""
    rows = []
    for row in debian_changelogs(240):
        entry, out = row["input"]["entry"], dict(row["output"])
        out["closes"] = sorted(out["closes"])
        out["changes"] = sum(1 for line in entry.splitlines() if re.match(r"^\s+[-*+] ", line))
        rows.append({"input": row["input"], "output": out})
    programs = build("debian", [(r["input"], r["output"]) for r in rows], ["closes", "changes"], promote_at=0.95)
    closes, changes = programs.served["closes"].programs[0], programs.served["changes"].programs[0]
    assert closes.ascending and changes.pattern is not None and changes.pattern.cls == "bullet"
    entry = (
        "vim (9.1-2) unstable; urgency=low\n\n  * Fix it (Closes: #909, #101)\n    - a sub-item\n"
        "    + another, closes: #202\n  * Polish (Closes: #505)\n\n -- Ana Lima <ana@debian.org>  Mon, 01 Jan 2024"
    )
    values, _ = programs.apply({"entry": entry})
    assert values == {"closes": [101, 202, 505, 909], "changes": 4}
    namespace: dict = {}
    exec(compile(render(programs), "fields.py", "exec"), namespace)
    for inp in [{"entry": entry}, *(r["input"] for r in rows)]:
        assert namespace["solve"](inp) == programs.apply(inp)[0]


def test_each_once_and_ascending_are_list_orders_the_interpreter_keeps():
    from protege.programs.language import Pattern, Program

    numbers = Pattern(left="#", cls="int")
    text = {"t": "#7, #3, #7 and #5"}
    assert run(Program("all", ("t",), numbers, map="int"), text) == [7, 3, 7, 5]
    assert run(Program("all", ("t",), numbers, map="int", unique=True), text) == [7, 3, 5]
    assert run(Program("all", ("t",), numbers, map="int", unique=True, ascending=True), text) == [3, 5, 7]
    assert run(Program("count", ("t",), numbers, unique=True), text) == 3
    assert "each once, ascending" in Program("all", ("t",), numbers, unique=True, ascending=True).describe()
    with pytest.raises(ValueError, match="only lists"):
        Program("span", ("t",), numbers, ascending=True)


def test_a_constant_prefix_before_the_digits_the_text_holds():
    """`ORD-` + the number after `order no. `: the value is not written as is, its tail is."""
    rng = random.Random(5)
    examples = []
    for _ in range(120):
        number = rng.randint(100000, 999999)
        ask = rng.choice(["Please ship it soon.", "Any news?", "Thanks!"])
        examples.append(
            ({"mail": {"body": f"Hello,\nabout order no. {number}: {ask}\nBest, Ana"}}, {"order_id": f"ORD-{number}"})
        )
    programs = build("orders", examples, ["order_id"], promote_at=0.95)
    program = programs.served["order_id"].programs[0]
    assert program.prefix == "ORD-" and program.describe().startswith("'ORD-' + ")
    values, _ = programs.apply({"mail": {"body": "Hello,\nabout order no. 424242: Thanks!\nBest, Bo"}})
    assert values == {"order_id": "ORD-424242"}
    namespace: dict = {}
    exec(compile(render(programs), "fields.py", "exec"), namespace)
    mail = {"mail": {"body": "Hello,\nabout order no. 777777: Any news?\nBest, Cy"}}
    assert namespace["solve"](mail) == programs.apply(mail)[0] == {"order_id": "ORD-777777"}
    from protege.programs.language import Pattern, Program

    with pytest.raises(ValueError, match="constant prefix"):
        Program("span", ("t",), Pattern(cls="int"), map="int", prefix="#")


def _dated_mail(rng: random.Random) -> tuple[dict, dict]:
    """A mail sent on some day of 2024-2025 asking for delivery by a later day, written as people write dates:
    without the year where it is this year's or next (`January 8` in a November mail is next January)."""
    sent = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randint(0, 700))
    due = sent + dt.timedelta(days=rng.randint(3, 120))
    written = rng.choice(
        [
            f"{due:%B} {due.day}",
            f"{due.day} {due:%B}",
            f"{due:%A}, {due:%B} {due.day}",
            f"{due:%B} {due.day}, {due.year}",
            due.isoformat(),
            f"{due:%d.%m.%Y}",
        ]
    )
    body = rng.choice([f"Hi,\nplease deliver 3 desks.\nNeeded by {written}.\nBest, Ana", "Hi,\nany news?\nBo"])
    mail = {"email": {"date": f"{sent:%a, %d %b %Y} 09:00:00 +0100", "body": body}}
    return mail, {"deliver_by": due.isoformat() if "Needed" in body else None}


def test_a_written_date_is_read_as_iso_with_the_year_the_mails_date_gives():
    rng = random.Random(7)
    programs = build("orders", [_dated_mail(rng) for _ in range(150)], ["deliver_by"], promote_at=0.95)
    fp = programs.served["deliver_by"]
    assert fp.programs[0].map == "date" and "date" in fp.describe()
    assert fp.accuracy == 1.0
    november = {"email": {"date": "Sat, 08 Nov 2025 11:25:00 +0000", "body": "Hi,\nNeeded by January 8.\nAna"}}
    assert programs.apply(november)[0] == {"deliver_by": "2026-01-08"}
    no_date = {"email": {"date": "Sat, 08 Nov 2025 11:25:00 +0000", "body": "Hi,\nNeeded by next week.\nAna"}}
    assert programs.apply(no_date)[0] == {}  # not a date: refused, left to the student
    namespace: dict = {}
    exec(compile(render(programs), "fields.py", "exec"), namespace)
    for inp in (november, no_date, *(_dated_mail(rng)[0] for _ in range(60))):
        assert namespace["solve"](inp) == programs.apply(inp)[0]


def test_a_chain_takes_a_fifth_and_sixth_format_only_where_no_trace_disagrees():
    """Six ways to write the same field: four programs by coverage, then two more that every trace agrees with."""
    rng = random.Random(11)
    forms = ["Needed in {}.", "Ship to: {}", "City = {}", "deliver it to {}!", "is it {}?", "near {};"]
    towns = ["Oslo", "Lima", "Pune", "Turin", "Leeds", "Kyoto", "Quito", "Perth", "Graz", "Cork"]
    examples = []
    for i in range(240):
        town, other = rng.sample(towns, 2)
        body = f"Hello,\nWe liked {other} last time.\n{forms[i % 6].format(town)}\nAna"
        examples.append(({"mail": {"body": body}}, {"city": town}))
    programs = build("towns", examples, ["city"], promote_at=0.95)
    fp = programs.served["city"]
    assert len(fp.programs) > 4  # four used to be the most a chain held
    for form in forms:
        body = f"Hello,\nWe liked Lima last time.\n{form.format('Oslo')}\nAna"
        assert programs.apply({"mail": {"body": body}})[0] == {"city": "Oslo"}


def test_a_number_scaled_by_the_next_word_is_refused_not_read_short():
    """`two dozen` is 24, not 2: a numeric span right before a scale word leaves the field to the student."""
    from protege.programs import Pattern, Program

    after_order = Program("span", ("t",), Pattern(left="order ", cls="word"), map="int")
    assert run(after_order, {"t": "we order two dozen lamps"}) is REFUSED
    assert run(after_order, {"t": "we order 5 Hundred lamps"}) is REFUSED
    assert run(after_order, {"t": "we order 5-dozen lamps"}) is REFUSED
    assert run(after_order, {"t": "we order two dozers"}) == 2  # a word that only begins like a scale
    every = Program("all", ("t",), Pattern(left="#", cls="int"), map="int")
    assert run(every, {"t": "#3 and #4"}) == [3, 4]
    assert run(every, {"t": "#3 and #4 thousand"}) is REFUSED


def test_a_value_far_larger_than_any_trace_showed_is_refused():
    """Quantities of 1-60 in training: `to order 982795` (an order number) is not read as a quantity."""
    rng = random.Random(3)
    examples = [
        ({"mail": {"body": f"Hi,\nI would like to order {q} chairs.\nBest, Ana"}}, {"quantity": q})
        for q in (rng.randint(1, 60) for _ in range(90))
    ]
    programs = build("chairs", examples, ["quantity"], promote_at=0.95)
    fp = programs.served["quantity"]
    assert fp.max_digits == 3  # two digits seen, one more allowed
    big = {"mail": {"body": "Hi,\nI would like to order 982795 chairs.\nBest, Ana"}}
    fine = {"mail": {"body": "Hi,\nI would like to order 250 chairs.\nBest, Ana"}}
    assert fp.apply(big) is REFUSED and fp.apply(fine) == 250
    namespace: dict = {}
    exec(compile(render(programs), "fields.py", "exec"), namespace)
    assert namespace["solve"](big) == programs.apply(big)[0] == {}
    assert namespace["solve"](fine) == programs.apply(fine)[0] == {"quantity": 250}
    assert ProgramSet.from_json(programs.to_json()).served["quantity"].max_digits == 3


def test_a_value_far_smaller_than_any_trace_showed_is_refused():
    """Every training year has four digits: a listing whose title holds a number (`Catch-22`) gives the first
    integer 22, which is no year, so the program refuses and the field goes to the next tier."""
    rng = random.Random(5)
    words = ["Silent", "River", "Glass", "North", "Winter", "Garden", "Iron", "Paper", "Harbor", "Lantern"]
    examples = [
        ({"listing": f"{rng.choice(words)} {rng.choice(words)} by A. Writer, published {year}"}, {"year": year})
        for year in (rng.randint(1850, 2024) for _ in range(90))
    ]
    programs = build("books", examples, ["year"], promote_at=0.95)
    fp = programs.served["year"]
    assert (fp.max_digits, fp.min_digits) == (5, 3)
    catch = {"listing": "Catch-22 by J. Heller, published 1961"}
    fine = {"listing": "Glass River by A. Writer, published 1961"}
    assert fp.apply(catch) is REFUSED and fp.apply(fine) == 1961
    namespace: dict = {}
    exec(compile(render(programs), "fields.py", "exec"), namespace)
    assert namespace["solve"](catch) == programs.apply(catch)[0] == {}
    assert namespace["solve"](fine) == programs.apply(fine)[0] == {"year": 1961}
    assert ProgramSet.from_json(programs.to_json()).served["year"].min_digits == 3
    assert fits_digits(2001, 5, 3) and not fits_digits(22, 5, 3) and fits_digits(None, 5, 3) and fits_digits([22], 5, 3)


def test_a_second_match_no_trace_showed_is_refused_not_guessed():
    """Every training listing holds one number of each kind, so `first int before ' '` reads its page count; a
    title with a number in it (`1984`) gives two candidates the traces never chose between: refused, so the
    next tier answers. `first int` fits every trace as well, by position (the year comes after), and is
    smaller: it read `1984` as the page count, and is now ranked after the program that never had to choose."""
    rng = random.Random(7)
    words = ["Silent", "River", "Glass", "North", "Winter", "Garden", "Iron", "Paper", "Harbor", "Lantern"]
    examples = []
    for _ in range(90):
        title, pages, year = f"{rng.choice(words)} {rng.choice(words)}", rng.randint(90, 900), rng.randint(1850, 2024)
        examples.append(({"listing": f"{title} by A. Writer, {pages} pages, {year}"}, {"pages": pages}))
    programs = build("books", examples, ["pages"], promote_at=0.95)
    pages = programs.served["pages"]
    assert [p.sole for p in pages.programs] == [True] and pages.describe().startswith("only int")
    nineteen = {"listing": "1984 Glass by A. Writer, 328 pages, 1949"}
    fine = {"listing": "Glass River by A. Writer, 328 pages, 1949"}
    assert pages.apply(nineteen) is REFUSED and pages.apply(fine) == 328
    namespace: dict = {}
    exec(compile(render(programs), "fields.py", "exec"), namespace)
    for inp in (nineteen, fine):
        assert namespace["solve"](inp) == programs.apply(inp)[0]
    assert ProgramSet.from_json(programs.to_json()).served["pages"].apply(nineteen) is REFUSED


def test_the_same_traces_give_the_same_programs_whatever_the_string_hashing():
    """Candidates come out of sets, whose order follows the process's hash seed; the invites' attendee count once
    ended at `.` in one process and at a line break in the next."""

    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import make_invites;"
        "from protege.programs import build;"
        "rows = make_invites.generate(300);"
        "ps = build('invites', [(r['input'], r['output']) for r in rows], list(rows[0]['output']), promote_at=0.95);"
        "print(json.dumps({k: [p.to_json() for p in f.programs] for k, f in ps.fields.items()}, sort_keys=True))"
    )
    workloads = str(Path(__file__).resolve().parents[2] / "bench" / "workloads")
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script, workloads],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1 and "attendee_count" in outputs.pop()
