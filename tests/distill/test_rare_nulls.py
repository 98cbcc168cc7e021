"""Rows where a usually-filled field is null are repeated so a small student sees the rule; nothing else moves."""

from __future__ import annotations

import json

from protege.distill.rare_nulls import MAX_COPIES, repeat_rare_nulls


def row(answer) -> dict:
    text = answer if isinstance(answer, str) else json.dumps(answer)
    return {"messages": [{"role": "user", "content": "mail"}, {"role": "assistant", "content": text}]}


def filled(i: int) -> dict:
    return {"name": f"Ana {i}", "email": f"ana{i}@x.io", "city": None if i % 3 == 0 else "Porto"}


def test_rows_with_a_rare_null_are_repeated_until_they_are_about_five_percent():
    rows = [row(filled(i)) for i in range(120)] + [row({**filled(900), "email": None}) for _ in range(2)]
    out, boosted = repeat_rare_nulls(rows)
    assert boosted == {"email": 2}  # city is null in a third of the rows: common, left alone
    nulls = [r for r in out if json.loads(r["messages"][-1]["content"])["email"] is None]
    assert len(nulls) == 2 * 4  # each trained on ceil(0.05 * 122 / 2) = 4 times
    assert len(out) == 120 + len(nulls)
    assert out[:120] == rows[:120]  # the other rows, once each and in order


def test_a_single_null_may_be_a_slip_and_is_not_repeated():
    rows = [row(filled(i)) for i in range(100)] + [row({**filled(7), "name": None})]
    out, boosted = repeat_rare_nulls(rows)
    assert out == rows and boosted == {}


def test_very_rare_nulls_are_repeated_at_most_max_copies_times():
    rows = [row(filled(i)) for i in range(1000)] + [row({**filled(1), "email": None}) for _ in range(2)]
    out, boosted = repeat_rare_nulls(rows)
    assert boosted == {"email": 2} and len(out) == 1000 + 2 * MAX_COPIES


def test_answers_that_are_not_objects_pass_unchanged():
    rows = [row("plain text"), row([1, 2]), {"messages": [{"role": "assistant", "content": None}]}]
    assert repeat_rare_nulls(rows) == (rows, {})
