"""What a copied field may say: the substrings of the call's input, as a suffix automaton.

The automaton of a text has one path per distinct substring, so "is this value a piece of the input?" is one
dictionary step per character — the grammar asks it for every character a copied string's candidate tokens
would write. It is built once per call, in time and size linear in the input (Blumer et al. 1985). The input's
string values are joined by a separator no answer can contain, so a value cannot straddle two of them.

Where the traces showed more — a name never starts inside a word, an address never after a `.` — a `SpanIndex`
also holds where a value may start and end: the class of the character just outside it (`edge_class`), and
whether the value may begin or end with white space (no trace's did: ` anna@x.io` is not an address).

A copied string that must also have a shape (a `pattern` or `format`, or a `minLength` over one) needs both
checked together: `order` is a substring and a prefix of an address, but if no address in the input starts with
it, writing it is a dead end. `SpanIndex.viable` answers "can this prefix still end as a span that has the
shape?" by walking the pattern along the input from each place the prefix occurs, so the grammar offers only
characters with a way to a valid end, and opens such a string only where the input holds one.
"""

from __future__ import annotations

from typing import Any

SEPARATOR = "\x00"  # JSON answers escape it (\u0000) and the grammar never feeds it: no value crosses it
JOINERS = frozenset(".-_@'+/")  # characters that join words into one token: an address, a path, O'Brien
EDGE_CLASSES = ("break", "joiner", "word")  # what stands just outside a span; "break": space, punctuation, edge


def edge_class(char: str | None) -> str:
    """The class of the character just before or after a span (None: the span touches its value's edge)."""
    if char is None or char == SEPARATOR or not (char.isalnum() or char in JOINERS):
        return "break"
    return "word" if char.isalnum() else "joiner"


class SubstringIndex:
    """A suffix automaton: `step(state, char)` is the state after `char`, or None when no substring continues so."""

    __slots__ = ("edges", "link", "length", "last", "_any")

    def __init__(self, text: str):
        self.edges: list[dict[str, int]] = [{}]
        self.link, self.length, self.last = [-1], [0], 0
        for char in text:
            self._extend(char)
        self._any = any(c != SEPARATOR for c in self.edges[self.root])  # a value of one character or more exists

    root = 0

    def step(self, state: int, char: str) -> int | None:
        return None if char == SEPARATOR else self.edges[state].get(char)

    def chars(self, state: int) -> list[str]:
        """The characters that can follow from `state` (the separator excluded)."""
        return [c for c in self.edges[state] if c != SEPARATOR]

    def can_end(self, state: int) -> bool:
        return True  # every substring is a value

    def viable(self, state: int, pattern: Any = None, matched: Any = None, min_len: int = 0) -> bool:
        """Whether a value can still be completed from `state`: every substring is a value, so only the empty
        start with a length floor can be stuck (an input with nothing to copy). A shape needs `SpanIndex`."""
        if pattern is not None or min_len > 1:
            raise ValueError("a copy with a shape is checked by a SpanIndex")
        return state != self.root or min_len == 0 or self._any

    def contains(self, text: str) -> bool:
        state = self.root
        for char in text:
            next_state = self.step(state, char)
            if next_state is None:
                return False
            state = next_state
        return True

    def _extend(self, char: str) -> None:
        edges, link, length = self.edges, self.link, self.length
        cur = len(edges)
        edges.append({})
        length.append(length[self.last] + 1)
        link.append(0)
        p = self.last
        while p != -1 and char not in edges[p]:
            edges[p][char] = cur
            p = link[p]
        if p != -1:
            q = edges[p][char]
            if length[p] + 1 == length[q]:
                link[cur] = q
            else:
                clone = len(edges)
                edges.append(dict(edges[q]))
                length.append(length[p] + 1)
                link.append(link[q])
                while p != -1 and edges[p].get(char) == q:
                    edges[p][char] = clone
                    p = link[p]
                link[q] = link[cur] = clone
        self.last = cur


class SpanIndex:
    """The substrings of `text` that start after a character of a class in `left` and end before one in `right`
    (`edge_class`), at most `max_len` long, and (`trimmed`) neither begin nor end with white space. A state is the
    set of places the value so far can start; only characters that leave a way to a permitted end are offered, so
    the decoder never walks into a dead end."""

    root = 0

    @classmethod
    def anywhere(cls, text: str, max_len: int) -> SpanIndex:
        """Every substring of `text` up to `max_len` (no learned edges): what a shaped copy is checked on."""
        every = frozenset(EDGE_CLASSES)
        return cls(text, every, every, max_len)

    def __init__(self, text: str, left: frozenset[str], right: frozenset[str], max_len: int, *, trimmed: bool = False):
        self.text, self.max_len = text, max_len
        n = len(text)
        outside = [edge_class(text[i - 1] if i else None) for i in range(n + 1)]  # the class before position i
        self._ends_ok = [
            edge_class(text[j] if j < n else None) in right and not (trimmed and j and text[j - 1].isspace())
            for j in range(n + 1)
        ]
        self._next_end = _next_true(self._ends_ok, blocked=[j < n and text[j] == SEPARATOR for j in range(n + 1)])
        starts = tuple(
            i for i in range(n) if outside[i] in left and text[i] != SEPARATOR and not (trimmed and text[i].isspace())
        )
        self._states: list[tuple[int, tuple[int, ...]]] = [(0, starts)]
        self._ids: dict[tuple[int, tuple[int, ...]], int] = {}
        self._steps: list[dict[str, int | None]] = [{}]
        self._chars: dict[int, list[str]] = {}
        self._viable: dict[tuple, bool] = {}

    def step(self, state: int, char: str) -> int | None:
        steps = self._steps[state]
        if char not in steps:
            length, starts = self._states[state]
            moved = tuple(i for i in starts if self._continues(i, length, char))
            steps[char] = self._intern(length + 1, moved) if moved else None
        return steps[char]

    def chars(self, state: int) -> list[str]:
        if state not in self._chars:
            length, starts = self._states[state]
            text, n = self.text, len(self.text)
            found = {
                text[i + length] for i in starts if i + length < n and self._continues(i, length, text[i + length])
            }
            self._chars[state] = sorted(found)
        return self._chars[state]

    def can_end(self, state: int) -> bool:
        length, starts = self._states[state]
        return length == 0 or any(self._ends_ok[i + length] for i in starts)

    def contains(self, text: str) -> bool:
        state: int | None = self.root
        for char in text:
            state = self.step(state, char) if state is not None else None
        return state is not None and self.can_end(state)

    def viable(self, state: int, pattern: Any = None, matched: Any = None, min_len: int = 0) -> bool:
        """Whether the value so far (`state`, and `matched`: the states of `pattern` after it) can still end as a
        permitted span at least `min_len` long that the pattern accepts."""
        key = (state, pattern.source if pattern is not None else None, matched, min_len)
        found = self._viable.get(key)
        if found is None:
            length, starts = self._states[state]
            found = any(self._completes(i, length, pattern, matched, min_len) for i in starts)
            self._viable[key] = found
        return found

    def _completes(self, start: int, length: int, pattern: Any, matched: Any, min_len: int) -> bool:
        """Walk the input on from one occurrence of the value so far until an accepted end or the pattern dies."""
        text, at = self.text, start + length
        while True:
            if self._ends_ok[at] and at - start >= min_len and (pattern is None or pattern.accepts(matched)):
                return True
            if at >= len(text) or at - start >= self.max_len or text[at] == SEPARATOR:
                return False
            if pattern is not None:
                matched = pattern.step(matched, text[at])
                if matched is None:
                    return False
            at += 1

    def _continues(self, start: int, length: int, char: str) -> bool:
        at = start + length
        if at >= len(self.text) or self.text[at] != char or char == SEPARATOR:
            return False
        end = self._next_end[at + 1]
        return end is not None and end - start <= self.max_len

    def _intern(self, length: int, starts: tuple[int, ...]) -> int:
        key = (length, starts)
        found = self._ids.get(key)
        if found is None:
            found = self._ids[key] = len(self._states)
            self._states.append(key)
            self._steps.append({})
        return found


def _next_true(flags: list[bool], *, blocked: list[bool]) -> list[int | None]:
    """For each position, the first position at or after it whose flag is set, not past a blocked one (a
    separator: a span cannot cross into the next value)."""
    out: list[int | None] = [None] * len(flags)
    nxt: int | None = None
    for j in range(len(flags) - 1, -1, -1):
        if flags[j]:
            nxt = j
        elif blocked[j]:
            nxt = None
        out[j] = nxt
    return out


def input_text(task_input: Any) -> str:
    """The text a copied value may come from: the input's string values and numbers (keys left out), joined by
    the separator, in document order."""
    return SEPARATOR.join(_strings(task_input))


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [str(value)]
    return []
