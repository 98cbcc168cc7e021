"""The field-program language: small typed expressions over one input text, built only by protege.

A program computes one top-level output field from one string leaf of the input (or is a constant):

- `span`:  the `occurrence`-th match of a pattern (left context, a token class, right context), mapped
           (strip, case, int/float parsing, a written date as ISO) — a name after `Name: `, the n-th line, the
           first email address, the date after `Needed by ` —
           and for text, after a constant `prefix` (`ORD-` + the number after `order no. `);
- `all`:   every match of a pattern inside a region (between two literal delimiters), each mapped — a list,
           as written or with repeats dropped (`unique`) and/or in ascending order (`ascending`);
- `count`: how many matches of a pattern a region holds — lines that start with `- `, numbers after `#`;
- `split` / `nsplit`: the items of a delimited list in a region (`Attendees: Ana, Bo and Cy` → 3 names), or
           how many there are; separators are a fixed set (commas, semicolons, `and`, `&`, line breaks);
- `has`:   whether a literal occurs (a yes/no field: `URGENT` in the subject), or does not (`negate`);
- `const`: a value every trace agreed on.

Every pattern is a regular expression protege assembles from escaped literals and a fixed table of token
classes, so running a program executes no code anyone wrote: the interpreter (interpret.py) is protege's own.
A program is JSON (`to_json`/`from_json`) so it is stored with the task's skill and reloaded.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

CLASSES: dict[str, str] = {
    "int": r"[0-9]+",
    "number": r"-?[0-9]+(?:[.,][0-9]+)?",
    "word": r"\w+",
    "token": r"\S+",
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "rest": r"[^\n]*",  # the rest of the line
    "lazy": r"[^\n]*?",  # up to the right context, on one line
    "line": r"[^\n]*\S[^\n]*",  # a non-blank line
    "bullet": r"[-*+•◦▪‣][ \t][^\n]*",  # a bulleted line's bullet and text, whatever the bullet (with `line`)
    "empty": r"",  # nothing: the pattern is its literal (`has`)
}
"""Token classes, most specific first: the only regex fragments that are not escaped literals. Digits are ASCII
(`\\d` is any script's): an Arabic-Indic `١٢٣٤` is a form no trace showed, so a number program refuses it."""

WIDER = {"number": 0.01, "word": 0.02, "token": 0.03, "lazy": 0.04, "rest": 0.04, "line": 0.04, "bullet": 0.04}
"""Tie-breakers: an int is a number is a word is a token is (part of) a line; where several fit alike, the
narrowest is the program."""

MAPS = ("id", "strip", "lower", "upper", "squash", "int", "float", "date")
TEXT_MAPS = MAPS[:5]  # the maps whose value is text (a constant prefix can go before it)
"""Value maps applied to a matched text (after which the field's JSON type is compared). `date`: a written date
as `YYYY-MM-DD`, a yearless one in the year nearest the input's own date (dates.py)."""

OPS = ("span", "all", "count", "split", "nsplit", "has", "const")
GLUE = r"(?:\s|[,;&#]|\band\b|\b[A-Za-z]{1,4}#)*"
"""What may stand between the items of a `run` region's list: spaces, line breaks, `,` `;` `&` `and`, and a
number sign, alone or after a short word (`#1, bug#2`)."""
SEPARATORS = r"\s*(?:,\s*(?:and|&)\s+|,|;|\band\b|&|\n)\s*"
"""What separates the items of a delimited list (`split`, `nsplit`)."""


@dataclass(frozen=True)
class Pattern:
    """`left` (a literal), then a `cls` token (captured), then `right` (a literal); `line`: `left` starts a line
    (after optional indentation)."""

    left: str = ""
    cls: str = "rest"
    right: str = ""
    line: bool = False
    strict: bool = False  # with `line`: `left` starts the line exactly (its indentation included), no more
    keep: bool = False  # the left literal is part of the value (`SKU` of `SKU1234`)
    pre: str = ""  # a token class right before the left literal (the number before ` EUR`)
    lead: str = ""  # a literal right before that token (`due: ` in `due: 12.50 EUR`)

    @cached_property
    def regex(self) -> re.Pattern[str]:
        head = (r"(?m)^" if self.strict else r"(?m)^[ \t]*") if self.line else ""
        if self.pre:
            head += re.escape(self.lead) + r"(?<![\w.,])(?:" + CLASSES[self.pre] + ")"
        left, cls, right = re.escape(self.left), CLASSES[self.cls], re.escape(self.right)
        if self.cls in ("int", "number") and not (self.left and self.left[-1].isalnum()):
            cls = r"(?<![\w.,])" + cls  # a whole number: not the tail of 90x60's 60, 12.50's 50 or a code's digits
        return re.compile(head + ("(" + left + cls + ")" if self.keep else left + "(" + cls + ")") + right)

    @property
    def size(self) -> float:
        """Simplicity cost: a class, plus a little per context character (shorter contexts generalise)."""
        context = 0.02 * (len(self.left) + len(self.right) + len(self.lead))
        wider = WIDER.get(self.cls, 0)  # of classes that fit alike, the narrowest
        return 1 + context + (0.1 if self.right else 0) + (0.3 if self.pre else 0) + wider


@dataclass(frozen=True)
class Region:
    """The text after the first `start` and before the next `end` (either literal may be empty: from the start,
    to the end). A literal that is missing makes the program refuse the input.

    With `run` (all/count only), the region is instead every list that follows a `start`: the program's pattern
    matched again and again with only list glue between the matches (spaces, line breaks, `,` `;` `&` `and`, `#`), so
    `Closes: #1,\n    #2` yields both items wherever the list wraps, and the list ends where anything else
    follows. `fold` finds such a `start` in any letter case (`closes:`)."""

    start: str = ""
    end: str = ""
    each: bool = False  # every start..end piece, not only the first (all/count/split only)
    run: bool = False  # every run of the pattern's matches right after a `start` (all/count only)
    fold: bool = False  # run: `start` in any letter case

    @property
    def size(self) -> float:
        if self.run:  # a start, and a list shape: as specific as a start and an end, and safer (it stops at prose)
            return 0.5 + 0.02 * len(self.start) + (0.1 if self.fold else 0)
        return (0.3 if self.start else 0) + (0.3 if self.end else 0) + (0.3 if self.each else 0)


@dataclass(frozen=True)
class Program:
    """One output field's program (see the module docstring)."""

    op: str
    source: tuple[str, ...] = ()
    pattern: Pattern | None = None
    region: Region = field(default_factory=Region)
    occurrence: int = 0  # span: which match (0 first, -1 last)
    map: str = "id"
    empty_null: bool = False  # span: an empty match means null
    absent_null: bool = False  # no match (span) or no region (list, count) means null / [] / 0: the traces
    # showed that whenever it was absent
    empty_refuses: bool = False  # all/count: no match refuses (every trace had one, so none is a new format)
    offset: int = 0  # count: added to the number of matches (a table's header row: -1)
    negate: bool = False  # has: true when the literal is absent
    unique: bool = False  # all/split: each item once, where first written; count: distinct matches
    ascending: bool = False  # all/split: items sorted ascending (bug numbers listed smallest first)
    prefix: str = ""  # span: a constant written before the matched text (`ORD-` + the digits of `order no. 123456`)
    sole: bool = False  # span: refuse where the pattern matches twice; it matched once in every training text, so
    # the traces never said which of two to take (`first int before ' '` and a title `1984 by ..., 328 pages`)
    value: Any = None  # const

    def __post_init__(self) -> None:
        if self.op not in OPS or self.map not in MAPS:
            raise ValueError(f"not a field program: op {self.op!r}, map {self.map!r}")
        if self.op in ("split", "nsplit") and not self.region.start:
            raise ValueError(f"a {self.op!r} program needs a region that starts at a literal")
        if self.region.run and (self.op not in ("all", "count") or not self.region.start or self.region.end):
            raise ValueError(f"a run region needs an 'all' or 'count' program and a start literal, not {self.op!r}")
        if self.sole and self.op != "span":
            raise ValueError(f"only a span refuses a second match, not a {self.op!r} program")
        if self.prefix and (self.op != "span" or self.map not in TEXT_MAPS):
            raise ValueError(f"only a span of text takes a constant prefix, not a {self.op!r} with map {self.map!r}")
        lists = ("all", "split")
        if self.unique and self.op not in (*lists, "count") or self.ascending and self.op not in lists:
            raise ValueError(f"only lists drop repeats or sort (and counts skip repeats), not a {self.op!r} program")
        if self.op in ("span", "all", "count", "has") and (
            self.pattern is None or self.pattern.cls not in CLASSES or self.pattern.pre not in ("", *CLASSES)
        ):
            raise ValueError(f"a {self.op!r} program needs a pattern of a known token class")

    @property
    def size(self) -> float:
        if self.op == "const":
            return 1.0
        extra = (0.2 if self.map != "id" else 0) + 0.3 * abs(self.occurrence)
        extra += 0.2 * (self.empty_null + self.absent_null)
        extra -= 0.05 * self.empty_refuses  # the safer of two equal programs
        extra += 0.8 * abs(self.offset) + 0.2 * self.negate  # an offset is a guess about the layout
        extra += 0.1 * (self.unique + self.ascending) + (0.3 + 0.02 * len(self.prefix) if self.prefix else 0)
        pattern = self.pattern.size if self.pattern is not None else 1.5  # a split: its separators are a guess
        return 1 + pattern + self.region.size + extra

    @property
    def source_path(self) -> str:
        return ".".join(self.source)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["source"] = list(self.source)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Program:
        data = dict(data)
        pattern = data.pop("pattern", None)
        region = data.pop("region", None) or {}
        return cls(
            source=tuple(data.pop("source", ())),
            pattern=Pattern(**pattern) if pattern else None,
            region=Region(**region),
            **data,
        )

    def describe(self) -> str:
        """One line a reviewer reads: what the program does."""
        order = (", each once" if self.unique else "") + (", ascending" if self.ascending else "")
        return (f"{self.prefix!r} + " if self.prefix else "") + self._describe() + order

    def _describe(self) -> str:
        if self.op == "const":
            return f"always {self.value!r}"
        if self.op in ("split", "nsplit"):
            what = "number of items" if self.op == "nsplit" else "items"
            mapped = f", {self.map}" if self.map != "id" else ""
            each = "each " if self.region.each else ""
            none = (", 0" if self.op == "nsplit" else ", []") + " without it" if self.absent_null else ""
            return (
                f"{what} of {each}list between {self.region.start!r} and {self.region.end or 'end'!r} "
                f"of {self.source_path}{mapped}{none}"
            )
        p = self.pattern
        assert p is not None
        where = f" of {self.source_path}" if self.source else ""
        ctx = (
            f"line starting {'exactly ' if p.strict else ''}{p.left!r}"
            if p.line
            else (f"after {p.left!r}" if p.left else "")
        )
        if p.pre:
            ctx = f"after {p.lead!r}+{p.pre}" if p.lead else f"after a {p.pre}"
            ctx += f"+{p.left!r}" if p.left else ""
        if p.cls == "bullet":  # its context is the line start: the bullet is part of the class
            what = "bulleted line (any bullet, any indentation)"
        else:
            what = (f"{p.left!r}+{p.cls}" if p.keep else f"{p.cls}") + (f" {ctx}" if ctx and not p.keep else "")
        what += f" before {p.right!r}" if p.right else ""
        region = ""
        if self.region.run:
            region = f" in each list after {self.region.start!r}" + (" (any case)" if self.region.fold else "")
        elif self.region.start or self.region.end:
            region = (
                f" {'in each piece' if self.region.each else ''} between {self.region.start or 'start'!r} and "
                f"{self.region.end or 'end'!r}"
            ).replace("  ", " ")
        mapped = f", {self.map}" if self.map != "id" else ""
        if self.op == "count":
            off = f" {self.offset:+d}" if self.offset else ""
            return f"count of {what}{region}{where}{off}" + (", 0 without it" if self.absent_null else "")
        if self.op == "has":
            return f"{'no' if self.negate else 'has'} {p.left!r}{region}{where}"
        if self.op == "all":
            return f"every {what}{region}{where}{mapped}" + (", [] without it" if self.absent_null else "")
        nth = {0: "first", -1: "last"}.get(self.occurrence, f"match #{self.occurrence + 1}")
        nth = "only" if self.sole else nth  # a second match refuses: first and last are the same one
        nulls = (", empty→null" if self.empty_null else "") + (", absent→null" if self.absent_null else "")
        return f"{nth} {what}{where}{mapped}{nulls}"
