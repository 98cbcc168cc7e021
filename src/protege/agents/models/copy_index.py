"""What a copied field may say: the substrings of the call's input, as a suffix automaton.

The automaton of a text has one path per distinct substring, so "is this value a piece of the input?" is one
dictionary step per character — the grammar asks it for every character a copied string's candidate tokens
would write. It is built once per call, in time and size linear in the input (Blumer et al. 1985). The input's
string values are joined by a separator no answer can contain, so a value cannot straddle two of them.
"""

from __future__ import annotations

from typing import Any

SEPARATOR = "\x00"  # JSON answers escape it (\u0000) and the grammar never feeds it: no value crosses it


class SubstringIndex:
    """A suffix automaton: `step(state, char)` is the state after `char`, or None when no substring continues so."""

    __slots__ = ("edges", "link", "length", "last")

    def __init__(self, text: str):
        self.edges: list[dict[str, int]] = [{}]
        self.link, self.length, self.last = [-1], [0], 0
        for char in text:
            self._extend(char)

    root = 0

    def step(self, state: int, char: str) -> int | None:
        return None if char == SEPARATOR else self.edges[state].get(char)

    def chars(self, state: int) -> list[str]:
        """The characters that can follow from `state` (the separator excluded)."""
        return [c for c in self.edges[state] if c != SEPARATOR]

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
