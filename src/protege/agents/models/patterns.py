"""String `pattern` and `format` as automata the answer grammar steps one character at a time.

A small regex compiler for the subset JSON-schema patterns use: literals and escapes, `.`, classes `[a-z_]`
and `[^...]`, `\\d \\w \\s` and their negations (ASCII only: a subset of what validation accepts, so never a
wrong answer), groups `( )` `(?: )` `(?P<name> )`, `|`, and `* + ? {m} {m,} {m,n}`, with `^`/`$` at the ends (a pattern
without them matches anywhere, as JSON Schema says). It builds a Thompson NFA and steps sets of its states
(memoized). Lookarounds, backreferences, word boundaries and inline flags (`(?i)`) are not compiled: such a
pattern is left to validation and named, with the reason, in the grammar's notes. Formats date, date-time, time,
email and uuid are patterns here; any other format is left to validation too.
"""

from __future__ import annotations

import re
from typing import Any

# a month's days (the 29th of February of a common year is left to validation)
_DATE = r"\d{4}-((0[1-9]|1[0-2])-(0[1-9]|1\d|2\d)|(0[13-9]|1[0-2])-30|(0[13578]|1[02])-31)"
_TIME = r"([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?"  # 60: a leap second
FORMATS = {
    "date": f"^{_DATE}$",
    "date-time": f"^{_DATE}T{_TIME}$",
    "time": f"^{_TIME}$",
    "email": r"^[^@\s\"\\<>()\[\],;:]+@[^@\s\"\\<>()\[\],;:]+\.[^@\s\"\\<>()\[\],;:.]+$",
    "uuid": r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
}
CLASS_ESCAPES = {
    "d": (False, frozenset(), (("0", "9"),)),
    "w": (False, frozenset("_"), (("a", "z"), ("A", "Z"), ("0", "9"))),
    "s": (False, frozenset(" \t\n\r\f\v"), ()),
}
LITERAL_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}
ANY_CHAR = (True, frozenset("\n"), ())
MAX_REPEAT = 1000


class Unsupported(ValueError):
    """A regex construct this compiler does not handle."""


def for_schema(schema: dict[str, Any], notes: list[str]) -> Pattern | None:
    """The automaton of a string schema's `pattern` (or else its `format`); None, with a note, when it cannot be
    compiled or there is none. (Whether `format` itself is noted is decided with the schema's other keywords.)"""
    source = schema.get("pattern")
    if source is None:
        source = FORMATS.get(schema.get("format", ""))
    if source is None:
        return None
    try:
        return Pattern(source)
    except Unsupported as exc:
        note = f"pattern {source!r} ({exc})"
        notes += [] if note in notes else [note]
        return None


class Pattern:
    """A compiled pattern: `start`, `step(states, char)` (None when the char cannot follow), `accepts(states)`."""

    def __init__(self, source: str):
        self.source = source
        body, anchored_start, anchored_end = _strip_anchors(source)
        self.moves: list[list[tuple[tuple, int]]] = []  # per state: (char class, target)
        self.empties: list[list[int]] = []  # per state: epsilon targets
        parser = _Parser(body, self)
        begin, end = parser.parse()
        if not anchored_start:
            begin = self._any_star_before(begin)
        if not anchored_end:
            end = self._any_star_after(end)
        self.accept = end
        self.start = self._closure({begin})
        self._memo: dict[tuple[frozenset, str], frozenset | None] = {}

    def step(self, states: frozenset, char: str) -> frozenset | None:
        key = (states, char)
        if key not in self._memo:
            targets = {target for s in states for cls, target in self.moves[s] if _matches(cls, char)}
            self._memo[key] = self._closure(targets) if targets else None
        return self._memo[key]

    def accepts(self, states: frozenset) -> bool:
        return self.accept in states

    def next_chars(self, states: frozenset) -> frozenset[str] | None:
        """The characters that can come next when they are a short list; None when a class is open-ended."""
        out: set[str] = set()
        for s in states:
            for negated, chars, ranges in (cls for cls, _ in self.moves[s]):
                if negated or sum(ord(hi) - ord(lo) + 1 for lo, hi in ranges) > 64:
                    return None
                out |= chars | {chr(c) for lo, hi in ranges for c in range(ord(lo), ord(hi) + 1)}
        return frozenset(out)

    # -- construction --------------------------------------------------------------------------------------------

    def state(self) -> int:
        self.moves.append([])
        self.empties.append([])
        return len(self.moves) - 1

    def _closure(self, states: set[int]) -> frozenset:
        todo, seen = list(states), set(states)
        while todo:
            for nxt in self.empties[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return frozenset(seen)

    def _any_star_before(self, begin: int) -> int:
        loop = self.state()
        self.moves[loop].append(((True, frozenset(), ()), loop))
        self.empties[loop].append(begin)
        return loop

    def _any_star_after(self, end: int) -> int:
        loop = self.state()
        self.empties[end].append(loop)
        self.moves[loop].append(((True, frozenset(), ()), loop))
        return loop


def _strip_anchors(source: str) -> tuple[str, bool, bool]:
    start = source.startswith("^")
    body = source[1:] if start else source
    end = body.endswith("$") and not body.endswith("\\$")
    return (body[:-1] if end else body), start, end


def _matches(cls: tuple, char: str) -> bool:
    negated, chars, ranges = cls
    inside = char in chars or any(lo <= char <= hi for lo, hi in ranges)
    return inside != negated


def _group_kind(text: str) -> str:
    """What a `(?…` group that is not `(?:` is, for the note that says why its pattern is left to validation."""
    if text.startswith(("?=", "?!", "?<=", "?<!")):
        return "a lookaround"
    if text.startswith("?P="):
        return "a backreference"
    if text.startswith(("?P<", "?<")) and ">" in text:
        return "a named group"
    if re.match(r"\?[aiLmsux-]+[:)]", text):
        return "an inline flag such as (?i)"
    return "an unsupported group"


def _escape_kind(char: str) -> str:
    if char.isdigit():
        return "a backreference"
    return "a word boundary" if char in "bB" else f"the escape \\{char}"


class _Parser:
    """Recursive descent over the regex; each piece returns its (begin, end) NFA states."""

    def __init__(self, text: str, nfa: Pattern):
        self.text, self.pos, self.nfa = text, 0, nfa

    def parse(self) -> tuple[int, int]:
        begin, end = self.alternation()
        if self.pos != len(self.text):
            raise Unsupported(f"unexpected {self.text[self.pos]!r} at {self.pos}")
        return begin, end

    def peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def alternation(self) -> tuple[int, int]:
        branches = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence())
        if len(branches) == 1:
            return branches[0]
        begin, end = self.nfa.state(), self.nfa.state()
        for b, e in branches:
            self.nfa.empties[begin].append(b)
            self.nfa.empties[e].append(end)
        return begin, end

    def sequence(self) -> tuple[int, int]:
        begin = end = self.nfa.state()
        while self.peek() not in (None, "|", ")"):
            b, e = self.repeat()
            self.nfa.empties[end].append(b)
            end = e
        return begin, end

    def repeat(self) -> tuple[int, int]:
        start = self.pos
        piece = self.atom()
        low, high = self.quantifier()
        if (low, high) == (1, 1):
            return piece
        source = self.text[start : self.pos]
        return self._repeated(piece, start, source, low, high)

    def _repeated(self, piece, start: int, source: str, low: int, high: int | None) -> tuple[int, int]:
        copies = [piece] + [self._reparse(start) for _ in range(max(low, 1 if high is None else high) - 1)]
        begin = end = self.nfa.state()
        for i, (b, e) in enumerate(copies):
            self.nfa.empties[end].append(b)
            if i >= low:  # optional copies: skip to the end
                self.nfa.empties[b].append(e)
            end = e
        if high is None:  # the last copy loops
            self.nfa.empties[copies[-1][1]].append(copies[-1][0])
        return begin, end

    def _reparse(self, start: int) -> tuple[int, int]:
        saved = self.pos
        self.pos = start
        piece = self.atom()
        self.pos = saved
        return piece

    def quantifier(self) -> tuple[int, int | None]:
        char = self.peek()
        if char in ("*", "+", "?"):
            self.pos += 1
            self._no_lazy()
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[char]
        if char == "{" and self._counted():
            close = self.text.index("}", self.pos)
            low, comma, high = self.text[self.pos + 1 : close].partition(",")
            self.pos = close + 1
            self._no_lazy()
            low_n = int(low)
            high_n = low_n if not comma else (int(high) if high else None)
            if low_n > MAX_REPEAT or (high_n or 0) > MAX_REPEAT:
                raise Unsupported("a repeat count over 1000")
            return low_n, high_n
        return 1, 1

    def _counted(self) -> bool:
        close = self.text.find("}", self.pos)
        inner = self.text[self.pos + 1 : close] if close > 0 else ""
        low, comma, high = inner.partition(",")
        return low.isdigit() and (not comma or high == "" or high.isdigit())

    def _no_lazy(self) -> None:
        if self.peek() in ("?", "+"):
            self.pos += 1  # lazy/possessive: the same language

    def atom(self) -> tuple[int, int]:
        char = self.peek()
        if char is None:  # `sequence` stops at the end, so only a bug gets here
            raise Unsupported("the pattern ends where an atom is expected")
        if char == "(":
            return self.group()
        if char == "[":
            return self.single(self.char_class())
        if char == ".":
            self.pos += 1
            return self.single(ANY_CHAR)
        if char == "\\":
            return self.single(self.escape())
        if char in ("^", "$"):
            raise Unsupported("an anchor inside the pattern")
        if char in ("*", "+", "?", "{"):
            raise Unsupported(f"nothing to repeat at {self.pos}")
        self.pos += 1
        return self.single((False, frozenset(char), ()))

    def single(self, cls: tuple) -> tuple[int, int]:
        begin, end = self.nfa.state(), self.nfa.state()
        self.nfa.moves[begin].append((cls, end))
        return begin, end

    def group(self) -> tuple[int, int]:
        self.pos += 1
        if self.text.startswith("?:", self.pos):
            self.pos += 2
        elif _group_kind(self.text[self.pos :]) == "a named group":  # its name changes nothing it matches
            self.pos = self.text.index(">", self.pos) + 1
        elif self.peek() == "?":
            raise Unsupported(_group_kind(self.text[self.pos :]))
        piece = self.alternation()
        if self.peek() != ")":
            raise Unsupported("an unclosed group")
        self.pos += 1
        return piece

    def escape(self) -> tuple:
        self.pos += 1
        char = self.peek()
        if char is None:
            raise Unsupported("a trailing backslash")
        self.pos += 1
        if char.lower() in CLASS_ESCAPES:
            negated, chars, ranges = CLASS_ESCAPES[char.lower()]
            return (char.isupper(), chars, ranges)
        if char.isalnum() and char not in LITERAL_ESCAPES:
            raise Unsupported(_escape_kind(char))
        return (False, frozenset(LITERAL_ESCAPES.get(char, char)), ())

    def char_class(self) -> tuple:
        self.pos += 1
        negated = self.peek() == "^"
        self.pos += negated
        chars: set[str] = set()
        ranges: list[tuple[str, str]] = []
        first = True
        while self.peek() is not None and (self.peek() != "]" or first):
            first = False
            lo = self._class_char(chars, ranges)
            if lo is not None and self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] not in ("]", ""):
                self.pos += 1
                hi = self._class_char(chars, ranges)
                if hi is None:
                    raise Unsupported("a range to a class")
                chars.discard(lo)
                ranges.append((lo, hi))
        if self.peek() != "]":
            raise Unsupported("an unclosed class")
        self.pos += 1
        return (negated, frozenset(chars), tuple(ranges))

    def _class_char(self, chars: set[str], ranges: list) -> str | None:
        """Read one class member into chars/ranges; the char itself when it is a single char (range start)."""
        char = self.text[self.pos]
        self.pos += 1
        if char != "\\":
            chars.add(char)
            return char
        esc = self.text[self.pos]
        self.pos += 1
        if esc.lower() in CLASS_ESCAPES:
            if esc.isupper():
                raise Unsupported(f"\\{esc} inside a class")
            _, more, more_ranges = CLASS_ESCAPES[esc]
            chars |= more
            ranges += more_ranges
            return None
        literal = LITERAL_ESCAPES.get(esc, esc)
        chars.add(literal)
        return literal
