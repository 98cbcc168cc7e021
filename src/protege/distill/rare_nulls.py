"""Rare absences, seen more often: the training rows where a usually-filled field is null are repeated.

A small student learns each field's usual reading and little else: when a field is null in 4 of 300 traces (a
web-form order with no contact address; a mail signed by no one), it fills the field anyway — it copied the
form's `no-reply@` sender on every such unseen call, at full confidence, so no gate could catch it. Those rows
are the only evidence of the rule, so each is repeated until the field's nulls make up about `TARGET_SHARE` of
the rows (at most `MAX_COPIES` times). A field that is null often enough is left alone, and so is one null in
fewer than `MIN_EVIDENCE` rows (a single null may be a teacher's slip, and repeating it would teach the slip).
Only answers that are JSON objects are read; other rows pass unchanged. Opt-in (`TrainConfig(repeat_rare_nulls=
True)`): on the bundled orders it made the three web-form contacts of 80 unseen calls `null`, as they should be,
and left exact match where it was (docs/student.md, "Rare nulls").
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

RARE_SHARE = 0.05  # a field null in fewer of the rows than this is "rarely null"
TARGET_SHARE = 0.05  # ... and its null rows are repeated until they are about this share of the rows
MAX_COPIES = 4  # a row is trained on at most this many times per epoch
MIN_EVIDENCE = 2  # nulls of a field needed before its rows are repeated


def repeat_rare_nulls(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The rows with each rare-null row repeated, and for each such field how many of its rows were null."""
    answers = [_answer(row) for row in rows]
    n = len(rows)
    copies = [1] * n
    boosted: dict[str, int] = {}
    for name, nulls in _null_rows(answers).items():
        if len(nulls) < MIN_EVIDENCE or len(nulls) >= RARE_SHARE * n:
            continue
        times = min(MAX_COPIES, math.ceil(TARGET_SHARE * n / len(nulls)))
        for i in nulls:
            copies[i] = max(copies[i], times)
        boosted[name] = len(nulls)
    return [row for row, times in zip(rows, copies, strict=True) for _ in range(times)], boosted


def _null_rows(answers: list[dict[str, Any] | None]) -> dict[str, list[int]]:
    """Per top-level field, the rows whose answer has it null (fields of every answer that is an object)."""
    out: dict[str, list[int]] = {}
    for i, answer in enumerate(answers):
        for name, value in (answer or {}).items():
            nulls = out.setdefault(name, [])
            if value is None:
                nulls.append(i)
    return out


def _answer(row: dict[str, Any]) -> dict[str, Any] | None:
    """The row's final answer (its last assistant turn) when that is a JSON object."""
    try:
        value = json.loads(row["messages"][-1].get("content") or "")
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return value if isinstance(value, dict) else None
