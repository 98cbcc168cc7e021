"""Induce on part of the traces, verify on the rest: what a field's program must show to be served.

Examples are split by input hash (a third held out), so the split is stable as traces grow and no input is on
both sides. A field's program is promoted when, on held-out examples it never saw, it answered at least
`MIN_HELDOUT` of them and was right on at least `promote_at` of those it answered; the cases it refused are
counted apart — a refusal leaves the field to the next tier, which is safe, a wrong value is not.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field  # FieldProgram has a `field` attribute
from datetime import UTC, datetime
from typing import Any

from protege.programs.dates import reference_date
from protege.programs.induce import NOISE, Fit, induce, same, string_leaves
from protege.programs.interpret import REFUSED, run, source_text
from protege.programs.language import Program

MIN_HELDOUT = 10
HELDOUT_EVERY = 3
MAX_ANCHORS = 4
MIN_MAX_CHARS = 2000
DIGITS_SLACK = 1  # a number may have one more integer digit than any training value's (10x larger) before it refuses


@dataclass
class FieldProgram:
    """One output field's programs (tried in order) and how they did on held-out traces."""

    field: str
    programs: list[Program]
    train_coverage: float = 0.0
    heldout: int = 0
    right: int = 0
    wrong: int = 0
    refused: int = 0
    promoted: bool = False
    reason: str = ""
    anchors: dict[str, list[str]] = dc_field(default_factory=dict)  # source path -> literals the training texts had
    max_chars: int = 0  # longest input text served: twice the training texts' longest (0: no limit)
    max_digits: int = 0  # integer digits a served number may have: the training values' most + 1 (0: no limit)
    min_digits: int = 0  # ... and at least: the training values' fewest - 1 (0: no limit; a year read as `22`)

    @property
    def accuracy(self) -> float | None:
        answered = self.right + self.wrong
        return self.right / answered if answered else None

    @property
    def refusal_rate(self) -> float | None:
        return self.refused / self.heldout if self.heldout else None

    def apply(self, data: dict[str, Any]) -> Any:
        """The first program's value that applies, else REFUSED. An input whose text lacks a literal the
        training texts of that source had is not of the kind the program was verified on: refused."""
        # the input's own date, looked up once for a chain of date programs (each would look it up again)
        reference = reference_date(data) if any(p.map == "date" for p in self.programs) else None
        for program in self.programs:
            if not self.guards(data, program):
                continue
            value = run(program, data, reference)
            if value is not REFUSED and fits_digits(value, self.max_digits, self.min_digits):
                return value
        return REFUSED

    def guards(self, data: dict[str, Any], program: Program) -> bool:
        """Whether the input passes the guard of the text the program reads; a constant reads none, so every
        text the field's guard names (what the traces it never varied on looked like) — and with none named (no
        text input, or stored before constants were guarded) it has nothing to stand on: refused."""
        if program.op != "const":
            return has_anchors(data, program.source, self.anchors.get(program.source_path, ()), self.max_chars)
        guard = self.anchors.items()
        return bool(guard) and all(has_anchors(data, path_of(key), anchors, self.max_chars) for key, anchors in guard)

    def describe(self) -> str:
        return " | else ".join(p.describe() for p in self.programs) or "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "programs": [p.to_json() for p in self.programs],
            "train_coverage": self.train_coverage,
            "heldout": self.heldout,
            "right": self.right,
            "wrong": self.wrong,
            "refused": self.refused,
            "promoted": self.promoted,
            "reason": self.reason,
            "anchors": self.anchors,
            "max_chars": self.max_chars,
            "max_digits": self.max_digits,
            "min_digits": self.min_digits,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FieldProgram:
        data = dict(data)
        data["programs"] = [Program.from_json(p) for p in data.get("programs", [])]
        return cls(**data)


@dataclass
class ProgramSet:
    """A task's field programs: every output field with its programs (or none) and its held-out record."""

    task: str
    fields: dict[str, FieldProgram]
    traces: int = 0
    induce_s: float = 0.0
    train: int = 0  # traces induced on
    heldout: int = 0  # traces held out for verification
    created_at: str = dc_field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    skill_version: int | None = None  # the stored skill version it was read from (not serialized: the row is it)

    @property
    def served(self) -> dict[str, FieldProgram]:
        return {name: fp for name, fp in self.fields.items() if fp.promoted}

    def field_accuracy(self) -> dict[str, float]:
        """Held-out accuracy of each served field's program."""
        return {name: fp.accuracy for name, fp in self.served.items() if fp.accuracy is not None}

    def apply(self, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The promoted fields' values on an input, and the promoted fields that refused it."""
        values, refused = {}, []
        for name, fp in self.served.items():
            value = fp.apply(data)
            if value is REFUSED:
                refused.append(name)
            else:
                values[name] = value
        return values, refused

    def only(self, names: Iterable[str], why: str) -> ProgramSet:
        """A copy that serves only the fields in `names`; the others' programs are kept, unserved, with `why`."""
        keep = set(names)
        narrowed = ProgramSet.from_json(self.to_json())
        for name, fp in narrowed.fields.items():
            if fp.promoted and name not in keep:
                fp.promoted, fp.reason = False, why
        return narrowed

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "traces": self.traces,
            "induce_s": self.induce_s,
            "created_at": self.created_at,
            "train": self.train,
            "heldout": self.heldout,
            "fields": [fp.to_json() for fp in self.fields.values()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgramSet:
        fields = [FieldProgram.from_json(f) for f in data.get("fields", [])]
        return cls(
            task=data["task"],
            fields={f.field: f for f in fields},
            traces=data.get("traces", 0),
            induce_s=data.get("induce_s", 0.0),
            created_at=data.get("created_at", ""),
            train=data.get("train", 0),
            heldout=data.get("heldout", 0),
        )


Pair = tuple[dict[str, Any], dict[str, Any]]  # (input, output) of one trace


def split(examples: list[Pair]) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out) by input hash, duplicates dropped."""
    from protege.tasks import input_hash

    train: list[Pair] = []
    held: list[Pair] = []
    seen: set[str] = set()
    for inp, out in examples:
        digest = input_hash(inp)
        if digest in seen:
            continue
        seen.add(digest)
        (held if int(digest[:8], 16) % HELDOUT_EVERY == 0 else train).append((inp, out))
    return train, held


def build(
    task: str, examples: list[tuple[dict[str, Any], dict[str, Any]]], fields: list[str], *, promote_at: float
) -> ProgramSet:
    """Induce each field's programs on the training part, score them on the held-out part, promote per field."""
    train, held = split(examples)
    if not train:
        return ProgramSet(task, {f: FieldProgram(f, [], reason="no training traces") for f in fields}, len(examples))
    inputs = [i for i, _ in train]
    found, seconds = induce(inputs, [o for _, o in train], fields)
    out = {}
    for name in fields:
        fits = found.get(name) or []
        covered = len(frozenset().union(*(f.covered for f in fits))) / len(train) if fits else 0.0
        anchors, max_chars = guard(fits, inputs)
        fp = FieldProgram(
            name,
            [f.program for f in fits],
            train_coverage=covered,
            anchors=anchors,
            max_chars=max_chars,
            max_digits=_max_digits([o.get(name) for _, o in train]),
            min_digits=_min_digits([o.get(name) for _, o in train]),
        )
        _score(fp, held, promote_at)
        out[name] = fp
    return ProgramSet(task, out, traces=len(train) + len(held), induce_s=seconds, train=len(train), heldout=len(held))


def _score(fp: FieldProgram, held: list[tuple[dict[str, Any], dict[str, Any]]], promote_at: float) -> None:
    if not fp.programs:
        fp.reason = "no program fits every training trace"
        return
    for inp, out in held:
        value = fp.apply(inp)
        fp.heldout += 1
        if value is REFUSED:
            fp.refused += 1
        elif same(value, out.get(fp.field)):
            fp.right += 1
        else:
            fp.wrong += 1
    answered = fp.right + fp.wrong
    acc = fp.accuracy
    if answered < MIN_HELDOUT:
        fp.reason = f"answered {answered} held-out traces; needs {MIN_HELDOUT}"
    elif acc is not None and acc < promote_at:
        fp.reason = f"held-out accuracy {acc:.1%} < promote_at {promote_at:.0%}"
    else:
        fp.promoted, fp.reason = True, f"held-out accuracy {acc:.1%} on {answered} answered"


def guard(fits: list[Fit], inputs: list[dict[str, Any]]) -> tuple[dict[str, list[str]], int]:
    """A field's anchors per source path, and its length limit: what the training texts its programs answered
    right look like (one a program did not explain, such as an empty SMS answered with placeholders, says
    nothing of the texts it reads). A constant reads no text and fits every trace by agreeing with it: it is held
    to every text input the traces had, and to its own value where they all wrote it (`EUR`), so it answers only
    inputs like those on which the traces never varied."""
    rows: dict[tuple[str, ...], set[int]] = {}
    constant = next((f.program.value for f in fits if f.program.op == "const"), None)
    for fit in fits:
        if fit.program.op == "const":
            for source in steady_sources(inputs):
                rows.setdefault(source, set()).update(range(len(inputs)))
        else:
            rows.setdefault(fit.program.source, set()).update(fit.covered)
    anchors: dict[str, list[str]] = {}
    lengths: list[int] = []
    for source, picked in rows.items():
        texts = [source_text(inputs[k], source) for k in sorted(picked)]
        anchors[".".join(source)] = common_literals(texts) + written_constant(constant, texts)
        lengths += [len(t) for t in texts if t is not None]
    return anchors, _max_chars(lengths)


def atypical(n: int) -> int:
    """How many of n training texts may be unlike the rest without changing a guard: a teacher's slip share
    (NOISE, rounded up), so a lone probe or empty input does not turn a guard off; none among fewer than
    MIN_HELDOUT, where one text is not told apart from a format."""
    return math.ceil(NOISE * n) if n >= MIN_HELDOUT else 0


def common_literals(texts: list[str | None]) -> list[str]:
    """Up to MAX_ANCHORS whitespace-delimited tokens that all texts but `atypical` ones contain (structural ones
    first: with punctuation, then longer): what the inputs a program was induced on look like."""
    counts: dict[str, int] = {}
    for text in texts:
        for token in {t for t in (text or "").split() if len(t) >= 2 and not any(c.isdigit() for c in t)}:
            counts[token] = counts.get(token, 0) + 1  # (tokens with digits are dates and ids: they vary)
    need = len(texts) - atypical(len(texts))
    ranked = sorted((t for t, n in counts.items() if n >= need), key=lambda t: (t.isalnum(), -len(t), t))
    return ranked[:MAX_ANCHORS]


def written_constant(value: Any, texts: list[str | None]) -> list[str]:
    """A constant text value as an anchor, where all training texts but `atypical` ones wrote it: `always 'EUR'`
    learned from EUR-only messages is no answer for one in USD."""
    if not isinstance(value, str) or not value.strip():
        return []
    written = sum(1 for t in texts if t is not None and value in t)
    return [value] if written >= len(texts) - atypical(len(texts)) else []


def steady_sources(inputs: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The text inputs (string leaves) that all training inputs but `atypical` ones have."""
    counts: dict[tuple[str, ...], int] = {}
    for data in inputs:
        for source in string_leaves(data):
            counts[source] = counts.get(source, 0) + 1
    return sorted(s for s, n in counts.items() if n >= len(inputs) - atypical(len(inputs)))


def path_of(key: str) -> tuple[str, ...]:
    """An anchors key (a source path joined with dots) as the path it was made from (a key with a dot of its own
    names no text: the constant refuses, which is safe)."""
    return tuple(key.split("."))


def has_anchors(data: dict[str, Any], source: tuple[str, ...], anchors: Any, max_chars: int = 0) -> bool:
    """Whether the input's text looks like the training texts: every anchor in it, and not far longer."""
    if not anchors and not max_chars:
        return True
    text = source_text(data, source)
    if text is None or (max_chars and len(text) > max_chars):
        return False
    return all(a in text for a in anchors)


def digits(value: Any) -> int:
    """The most integer digits of a number or of a list's numbers (0 for anything else)."""
    if isinstance(value, list):
        return max(map(digits, value), default=0)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return len(str(abs(int(value))))
    return 0


def fewest_digits(value: Any) -> int | None:
    """The integer digits of a number (None for anything else: a list's items are found by a pattern that marks
    each, `#42` among six-digit bug numbers is still a bug number; a lone number is often just the first one)."""
    return None if isinstance(value, list) else digits(value) or None


def fits_digits(value: Any, max_digits: int, min_digits: int = 0) -> bool:
    """Whether a program's value is of the magnitude the traces showed: `to order 982795` read as a quantity is an
    order number, and no training quantity was within a factor of ten of it; `Catch-22` read as a year is 22,
    and every training year had four digits."""
    if max_digits and digits(value) > max_digits:
        return False
    fewest = fewest_digits(value)
    return not min_digits or fewest is None or fewest >= min_digits


def _max_digits(values: list[Any]) -> int:
    most = max(map(digits, values), default=0)
    return most + DIGITS_SLACK if most else 0


def _min_digits(values: list[Any]) -> int:
    fewest = min((d for v in values if (d := fewest_digits(v)) is not None), default=0)
    return fewest - DIGITS_SLACK if fewest - DIGITS_SLACK > 1 else 0  # every number has one digit: no limit


def _max_chars(lengths: list[int]) -> int:
    """Twice the longest training text (at least MIN_MAX_CHARS): a far longer input is not the kind the programs
    were verified on, and it bounds the work a pattern does on hostile input. The longest is taken among texts at
    most twice as long as all but `atypical` ones: a long tail of entries counts, one 180 KB probe does not."""
    if not lengths:
        return 0
    ranked = sorted(lengths)
    typical = ranked[len(ranked) - 1 - atypical(len(ranked))]
    return max(MIN_MAX_CHARS, 2 * max(n for n in ranked if n <= 2 * typical))
