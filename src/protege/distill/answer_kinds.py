"""Learn a task's `AnswerProfile` from its training traces: answer length, list and string bounds, unique lists,
and which fields are copied from the input (Geng et al., EMNLP 2023: a copied field is decoded under a grammar of
the input's substrings, so the student cannot invent an id or a name).

A field is *copied* when, in at least `copy_threshold` of the traces that give it a value, every value (every
item, for a list) is a verbatim substring of the call's input — the input's string and number values, as the
decoder sees them (`copy_index.input_text`). Bounds are the largest seen with a margin, learned only from enough
traces (`MIN_EVIDENCE`), so a small dataset does not make a legal answer impossible.

A copied field's *edges* are learned too: the class of the character just before and just after each value where
the input holds it (`copy_index.edge_class`: a break, a word character, or a joiner such as `.` or `@`). The
smallest set of classes that accounts for every training value is kept; a break is always allowed. So where
no trace's name ended inside a word, the decoder cannot stop a name at `Las` of `Lasse`, and where no address
started after a `.`, it cannot copy `amara@x.org` out of `watanabe.amara@x.org` — a boundary rule in the
spirit of FlashFill's position expressions, read off the traces rather than written for a workload.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from protege.agents.models.answer_profile import AnswerProfile, FieldKind, FieldProfile
from protege.agents.models.copy_index import EDGE_CLASSES, edge_class, input_text
from protege.agents.models.schema_nodes import MAX_DIGITS, Node, compile_schema

COPY_THRESHOLD = 0.98
MIN_EVIDENCE = 10  # traces with a value at a path before a bound or a kind is learned there
MIN_UNIQUE_EVIDENCE = 5  # lists of two or more items, all unique, before uniqueItems is learned
TOKEN_MARGIN, TOKEN_SLACK = 1.5, 16
ITEMS_MARGIN, ITEMS_SLACK = 1.5, 2
LENGTH_MARGIN, LENGTH_SLACK = 1.5, 16
DIGITS_SLACK = 2  # a number may have two more integer digits than any trace's (100x larger) before it is flagged


class _PathStats:
    """What one path of the answers held across the traces."""

    def __init__(self) -> None:
        self.list_lengths: list[int] = []
        self.unique_lists = 0  # lists of 2+ items with no repeat
        self.repeated_lists = 0
        self.string_lengths: list[int] = []
        self.number_digits: list[int] = []  # integer digits of each number value
        self.traces = 0  # traces with a value here
        self.copied = 0  # ... whose every string value is a substring of the input
        self.strings = 0  # ... that held strings
        self.numbers_read = 0  # ... whose every number is written in the input
        self.numbers = 0
        self.lefts: list[frozenset[str]] = []  # per copied value, the edge classes just before its occurrences
        self.rights: list[frozenset[str]] = []  # ... and just after them
        self.untrimmed = 0  # string values that begin or end with white space


def learn_answer_profile(
    rows: Sequence[dict[str, Any]],
    schema: dict[str, Any] | None,
    *,
    tokenizer: Any = None,
    copy_threshold: float = COPY_THRESHOLD,
    copy_constraint: bool = True,
) -> AnswerProfile:
    """The profile of `rows` (dataset rows with `input`, `output` and the chat `messages`); `tokenizer` counts
    answer tokens (without one no token bound is learned)."""
    stats: dict[str, _PathStats] = {}
    for row in rows:
        task_input, output = input_and_output(row)
        if output is None:
            continue
        source = input_text(task_input)
        per_trace: dict[str, list[Any]] = {}
        _walk(output, "", stats, per_trace)
        for path, values in per_trace.items():
            _count_trace(stats.setdefault(path, _PathStats()), values, source)
    root = compile_schema(schema) if schema else Node("any")
    longest = _longest_answer(rows, tokenizer)
    bounds = {path: b for path, s in stats.items() if (b := _bounds(s, copy_threshold))}
    fields = {
        key: _field(sub, stats.get(key), stats.get(f"{key}[]"), copy_threshold)
        for key, sub in (root.props if root.kind == "object" else ())
    }
    return AnswerProfile(
        traces=len(rows),
        copy_threshold=copy_threshold,
        copy_constraint=copy_constraint,
        longest_answer_tokens=longest,
        max_answer_tokens=math.ceil(longest * TOKEN_MARGIN) + TOKEN_SLACK if longest else None,
        bounds=bounds,
        fields=fields,
    )


def learn_for_student(
    rows: Sequence[dict[str, Any]], schema: dict[str, Any] | None, adapter: Path, *, copy_constraint: bool = True
) -> AnswerProfile:
    """Learn the profile with the student's own tokenizer and store it in its adapter dir."""
    from transformers import AutoTokenizer

    profile = learn_answer_profile(
        rows, schema, tokenizer=AutoTokenizer.from_pretrained(adapter), copy_constraint=copy_constraint
    )
    profile.save(adapter)
    return profile


def input_and_output(row: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """A dataset row's input and output. Train rows carry only their chat (`build_dataset` writes `input` and
    `output` on eval rows alone), so those are read back from the user turn (the input as compact JSON) and the
    final assistant turn (the answer as JSON): the very text the student trains on, redacted where it was."""
    if row.get("output") is not None:
        return row.get("input") or {}, row["output"]
    messages = row.get("messages") or []
    user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    answer = messages[-1].get("content") if messages and messages[-1].get("role") == "assistant" else None
    try:
        task_input, output = json.loads(user or ""), json.loads(answer or "")
    except ValueError:
        return {}, None
    return (task_input if isinstance(task_input, dict) else {}), output


def _walk(value: Any, path: str, stats: dict[str, _PathStats], per_trace: dict[str, list[Any]]) -> None:
    if value is None:
        return
    per_trace.setdefault(path, []).append(value)
    here = stats.setdefault(path, _PathStats())
    if isinstance(value, dict):
        for key, sub in value.items():
            _walk(sub, f"{path}.{key}" if path else key, stats, per_trace)
    elif isinstance(value, list):
        here.list_lengths.append(len(value))
        if len(value) >= 2:
            texts = [repr(v) for v in value]
            if len(set(texts)) == len(texts):
                here.unique_lists += 1
            else:
                here.repeated_lists += 1
        for item in value:
            _walk(item, f"{path}[]", stats, per_trace)
    elif isinstance(value, str):
        here.string_lengths.append(len(value))
    elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        here.number_digits.append(len(str(abs(int(value)))))


def _count_trace(stats: _PathStats, values: list[Any], source: str) -> None:
    values = [v for v in values if v not in ("", [], {})]
    if not values:
        return
    stats.traces += 1
    strings = [v for v in values if isinstance(v, str)]
    if strings:
        stats.strings += 1
        stats.copied += all(s in source for s in strings)
        for text in strings:
            _count_edges(stats, text, source)
            stats.untrimmed += text != text.strip()
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers:
        stats.numbers += 1
        stats.numbers_read += all(_written_in(n, source) for n in numbers)


def _count_edges(stats: _PathStats, value: str, source: str) -> None:
    places = list(_occurrences(value, source))
    if places:
        stats.lefts.append(frozenset(edge_class(source[i - 1] if i else None) for i in places))
        stats.rights.append(
            frozenset(edge_class(source[i + len(value)] if i + len(value) < len(source) else None) for i in places)
        )


def _occurrences(value: str, source: str) -> Iterator[int]:
    at = source.find(value)
    while at != -1:
        yield at
        at = source.find(value, at + 1)


def _edges(stats: _PathStats) -> dict[str, list[str]] | None:
    """The edge classes that account for every copied value (a break always allowed), or None when they allow
    every class anyway or too few values were seen."""
    if len(stats.lefts) < MIN_EVIDENCE:
        return None
    left, right = _cover(stats.lefts), _cover(stats.rights)
    if len(left) == len(right) == len(EDGE_CLASSES):
        return None
    return {"left": sorted(left), "right": sorted(right)}


def _cover(seen: list[frozenset[str]]) -> set[str]:
    """A small set of classes such that every value has an occurrence with one of them (greedy set cover)."""
    chosen = {"break"}
    left = [classes for classes in seen if not classes & chosen]
    while left:
        best = Counter(c for classes in left for c in classes).most_common(1)[0][0]
        chosen.add(best)
        left = [classes for classes in left if best not in classes]
    return chosen


def _written_in(number: int | float, source: str) -> bool:
    """The number appears in the text as a whole number (not as part of a longer one)."""
    return re.search(rf"(?<![0-9.]){re.escape(str(number))}(?![0-9])", source) is not None


def _bounds(stats: _PathStats, copy_threshold: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if stats.traces < MIN_EVIDENCE:
        return out
    if stats.list_lengths:
        seen = max(stats.list_lengths)
        out["max_items"] = max(math.ceil(seen * ITEMS_MARGIN), seen + ITEMS_SLACK)
        if stats.unique_lists >= MIN_UNIQUE_EVIDENCE and not stats.repeated_lists:
            out["unique_items"] = True
    if stats.string_lengths:
        seen = max(stats.string_lengths)
        out["max_length"] = max(math.ceil(seen * LENGTH_MARGIN), seen + LENGTH_SLACK)
    if stats.number_digits and max(stats.number_digits) + DIGITS_SLACK < MAX_DIGITS:
        out["max_digits"] = max(stats.number_digits) + DIGITS_SLACK
    if stats.strings == stats.traces and _rate(stats) >= copy_threshold:
        out["copy"] = True
        if edges := _edges(stats):
            out["copy_edges"] = edges
        if len(stats.lefts) >= MIN_EVIDENCE and not stats.untrimmed:
            out["copy_trimmed"] = True  # no value began or ended with white space: none may
    return out


def _rate(stats: _PathStats) -> float:
    return stats.copied / stats.strings if stats.strings else 0.0


def _field(node: Node, own: _PathStats | None, items: _PathStats | None, copy_threshold: float) -> FieldProfile:
    """A top-level field's kind: from the schema (enum) and from what its values (or list items) were."""
    if _is_enum(node):
        return FieldProfile(kind="enum", traces=own.traces if own else 0)
    values = items if items is not None and items.traces else own
    if values is None or not values.traces:
        return FieldProfile(kind="free")
    if values.strings:
        rate = _rate(values)
        copied = values.strings >= MIN_EVIDENCE and values.strings == values.traces and rate >= copy_threshold
        return FieldProfile(kind="copied" if copied else "free", traces=values.traces, copy_rate=round(rate, 4))
    if values.numbers:
        rate = values.numbers_read / values.numbers
        kind: FieldKind = "number" if rate >= copy_threshold else "computed"
        return FieldProfile(kind=kind, traces=values.traces, copy_rate=round(rate, 4))
    return FieldProfile(kind="free", traces=values.traces)


def _is_enum(node: Node) -> bool:
    if node.kind == "literal":
        return True
    return node.kind == "union" and all(a.kind == "literal" for a in node.alts)


def _longest_answer(rows: Sequence[dict[str, Any]], tokenizer: Any) -> int | None:
    if tokenizer is None:
        return None
    answers = [
        m.get("content") or "" for row in rows for m in row.get("messages", [])[-1:] if m.get("role") == "assistant"
    ]
    if not answers:
        return None
    return max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in answers)
