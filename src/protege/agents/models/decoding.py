"""A character-level automaton for compact JSON that matches a JSON schema (the student's answer format).

`Grammar(schema).start()` gives a `State`; `state.feed(text)` returns the next state or None when the text
cannot continue a valid answer; `state.forced()` is the text the schema fixes from here (keys, punctuation,
a shared enum prefix, a field whose value is given), which the decoder writes without asking the model.
Compact means no whitespace between tokens, which is how `chat_format.render_answer` writes answers, so forced
text is exactly what the student was trained on.

Supported (`schema_nodes.py`): objects with properties (emitted in schema order, all of them), dicts (values of
additionalProperties, keys of propertyNames), arrays (min/maxItems, uniqueItems), fixed-length tuples
(prefixItems), strings (min/maxLength, pattern, format date/date-time/time/email/uuid), integers/numbers (minimum
as a sign: >= 0 and > 0 exactly; a small integer range exactly), booleans, null, enum/const of any JSON value,
anyOf/oneOf/type lists (every option: each one the text so far allows is read side by side), $ref into $defs (a
recursive one to 32 schema levels); anything else (`{}`) is any JSON value.
Keywords it does not enforce are logged once per schema and left to validation (`Grammar.notes`).

What the traces taught about answers (`answer_profile.py`) tightens the schema: learned list and string bounds
(`bound_hits` reports an answer that reached one), unique list items, and copied strings — with the call's input
as `source`, such a string may only spell a substring of it (`copy_index.py`), and where the traces showed
where values start and end (never inside a word, say), only a substring with such edges. A copied string with a
shape (pattern, format, a minLength over 1) is offered only characters from which a span of the input with that
shape can still be reached, and is not opened at all where the input holds none: never a dead end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from protege.agents.models.copy_index import SpanIndex, SubstringIndex
from protege.agents.models.schema_nodes import (
    ANY,
    Node,
    bound_hits,
    compile_schema,
    first_chars,
    tool_call_node,
    with_bounds,
    with_fixed,
)

HEX = frozenset("0123456789abcdefABCDEF")
ESCAPES = frozenset('"\\/bfnrtu')
ESCAPED = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
CONTROL = [chr(i) for i in range(0x20)]  # what `\\u` may write (see `_escapable`)
NUMBER_END = frozenset({"zero", "int", "frac", "exp"})
MAX_EXP_DIGITS = 3
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"  # around a tool call (`chat_format.render_tool_calls`)
FREE_OBJECT = Node("freeobj")  # `{` of any JSON value
FREE_KEY = Node("string")
log = logging.getLogger("protege.decoding")
_LOGGED: set[tuple[str, ...]] = set()

__all__ = ["Grammar", "Node", "State", "compile_schema", "first_chars"]


class Grammar:
    """The automaton for one output schema; `fixed` top-level values are written as given, `bounds` (path →
    learned bounds) tighten it, and `source` (the call's input text) is what copied strings may quote. With
    `tools` ((name, parameter schema) pairs) a turn is the answer or one call of a tool, `<tool_call>{...}</tool_call>`:
    a student of a task with tools calls only tools it has, with arguments of their shape."""

    def __init__(
        self,
        schema: dict[str, Any] | None,
        *,
        fixed: dict[str, Any] | None = None,
        bounds: dict[str, dict[str, Any]] | None = None,
        source: str | None = None,
        tools: list[tuple[str, dict[str, Any] | None]] | None = None,
    ):
        self.notes: list[str] = []
        root = compile_schema(schema, notes=self.notes) if schema else ANY
        if bounds:
            root = with_bounds(root, bounds)
        if fixed:
            root = with_fixed(root, fixed)
        self.root = _bind_copy(root, _Indexes(source) if source is not None and _copies(root) else None)
        self.tool_call = tool_call_node(tools, self.notes) if tools else None
        if self.notes and tuple(self.notes) not in _LOGGED:
            _LOGGED.add(tuple(self.notes))
            log.warning("the answer grammar does not enforce %s; validation checks them", ", ".join(self.notes))

    def start(self) -> State:
        answer = (("value", self.root),)
        if self.tool_call is None:
            return State((answer,), "")
        call = (("lit", TOOL_CLOSE, 0), ("value", self.tool_call), ("lit", TOOL_OPEN, 0))  # the top is last
        return State((answer, call), "")

    def bound_hits(self, text: str) -> list[str]:
        """Where a complete answer reached a bound learned from the traces (or a runaway guard)."""
        try:
            value = json.loads(text)
        except ValueError:
            return []
        return bound_hits(self.root, value)


def _copies(node: Node) -> bool:
    if node.kind == "string":
        return node.copy is True
    subs = (*(sub for _, sub in node.props), *node.alts, *node.members, *([node.item] if node.item else []))
    return any(_copies(n) for n in subs)


class _Indexes:
    """This call's input indexed once per kind of span asked for: any substring, or one with learned edges."""

    def __init__(self, source: str):
        self.source = source
        self._built: dict[Any, SubstringIndex | SpanIndex] = {}

    def for_node(self, node: Node) -> SubstringIndex | SpanIndex:
        shaped = _shaped(node)  # checked jointly with the copy, which needs the places a value occurs
        key = (node.copy_edges, node.max_len) if node.copy_edges or shaped else None
        if key not in self._built:
            self._built[key] = self._build(node, shaped)
        return self._built[key]

    def _build(self, node: Node, shaped: bool) -> SubstringIndex | SpanIndex:
        if node.copy_edges:
            left, right, trimmed = node.copy_edges
            return SpanIndex(self.source, left, right, max_len=node.max_len, trimmed=trimmed)
        return SpanIndex.anywhere(self.source, node.max_len) if shaped else SubstringIndex(self.source)


def _bind_copy(node: Node, indexes: _Indexes | None) -> Node:
    """Copied strings point at this call's index (or lose the constraint without one)."""
    if not _copies(node):
        return node
    if node.kind == "string":
        return replace(node, copy=indexes.for_node(node) if indexes is not None else False)
    return replace(
        node,
        props=tuple((k, _bind_copy(sub, indexes)) for k, sub in node.props),
        alts=tuple(_bind_copy(a, indexes) for a in node.alts),
        members=tuple(_bind_copy(m, indexes) for m in node.members),
        item=_bind_copy(node.item, indexes) if node.item else None,
    )


# -- automaton frames: immutable tuples on an immutable stack ---------------------------------------------------------
# ("lit", text, pos) ("value", node) ("str", node, length, escape, copy_state, pattern_states)
# ("num", node, phase, text) ("enum", options, prefix) ("arr", node, count, phase, seen_items)
# ("mark", start) -- above a unique array's frame while one of its items is read; start: where the item began
# ("obj", phase, node) -- an object without properties: any keys (or `node.keys`), values of `node.item_node`
#
# A union's options that can all begin with the character read are each read on a stack of their own: a State holds
# every reading still possible and drops one when its next character is refused (`Cat | Dog` reads `{"kind":"` in
# both; `d` ends the Cat). Readings that meet again (`int | float` after `2,`) are one.

Fed = tuple | list[tuple] | None  # what one character makes of a stack: a stack, several (a union), or none


class State:
    """Where an answer stands in the grammar (and the text so far); immutable, so a token can be tried and dropped."""

    __slots__ = ("stacks", "text")

    def __init__(self, stacks: tuple[tuple, ...], text: str = ""):
        self.stacks, self.text = stacks, text

    @property
    def done(self) -> bool:
        return () in self.stacks

    def feed(self, text: str) -> State | None:
        stacks, written = self.stacks, self.text
        for char in text:
            fed = _feed(stacks[0], char, written) if len(stacks) == 1 else _feed_each(stacks, char, written)
            if fed is None:
                return None
            written += char
            if isinstance(fed, tuple):  # one reading, the usual case: as cheap as before unions were read in full
                if fed and fed[-1][0] == "mark" and _repeats(fed, written):
                    return None
                stacks = (fed,)
            else:
                stacks = _readings(fed, written)
                if not stacks:
                    return None
        return State(stacks, written)

    @property
    def depth(self) -> int:
        """How many objects and lists are open (an object with properties keeps its closing brace on the stack);
        with several readings, the shallowest."""
        return min(_depth(stack) for stack in self.stacks)

    def allowed(self) -> frozenset[str] | None:
        """The characters that may come next, or None when almost any may (inside a string)."""
        if len(self.stacks) == 1:
            return _allowed(self.stacks[0])
        out: frozenset[str] = frozenset()
        for stack in self.stacks:
            chars = _allowed(stack)
            if chars is None:
                return None
            out |= chars
        return out

    @property
    def at_soft_bound(self) -> bool:
        """Whether the value being read has reached a bound the schema did not set (learned from the traces, or a
        runaway guard): a string at its soft maxLength, a number at its learned or `MAX_DIGITS` digits, a list at its
        learned maxItems. An answer that reaches one is flagged; decoding must not step around it."""
        return any(_at_soft_bound(stack) for stack in self.stacks)

    def forced(self) -> str:
        """The text the grammar fixes from here on (stops where a choice begins)."""
        out, state = [], self
        while not state.done:
            allowed = state.allowed()
            if allowed is None or len(allowed) != 1:
                break
            char = next(iter(allowed))
            following = state.feed(char)
            if following is None:
                break
            out.append(char)
            state = following
        return "".join(out)


def _feed_each(stacks: tuple[tuple, ...], char: str, written: str) -> list[tuple] | None:
    """Every reading after `char`, or None when it ends them all."""
    out = [reading for stack in stacks for reading in _as_readings(_feed(stack, char, written))]
    return out or None


def _as_readings(fed: Fed) -> list[tuple]:
    """What one character made of a stack, as a list of readings (none, one, or a union's several)."""
    return [] if fed is None else fed if isinstance(fed, list) else [fed]


def _readings(fed: list[tuple], written: str) -> tuple[tuple, ...]:
    """The distinct readings that are still possible (readings that met again are one)."""
    out: list[tuple] = []
    for stack in fed:
        if stack not in out and not (stack and stack[-1][0] == "mark" and _repeats(stack, written)):
            out.append(stack)
    return tuple(out)


def _repeats(stack: tuple, written: str) -> bool:
    """Whether the item just closed repeats an earlier one of its unique list."""
    return written[stack[-1][1] :] in stack[-2][4]


def _depth(stack: tuple) -> int:
    return sum(1 for f in stack if f[0] in ("arr", "obj") or (f[0] == "lit" and f[1] in ("}", "]")))


def _at_soft_bound(stack: tuple) -> bool:
    if not stack:
        return False
    top = stack[-1]
    if top[0] == "str":
        return top[1].soft_len and top[2] >= top[1].max_len
    if top[0] == "num":
        return top[2] == "int" and len(top[3].lstrip("-")) >= top[1].max_digits
    if top[0] == "arr":
        node = top[1]
        return node.soft_items and node.max_items is not None and top[2] >= node.max_items
    return False


def _push_value(rest: tuple, node: Node) -> tuple:
    """Frames that read one value of `node` (objects with properties unfold into literals and values)."""
    frames: list[tuple] = [("lit", "}", 0)]
    for i in range(len(node.props) - 1, -1, -1):
        key, sub = node.props[i]
        frames.append(("value", sub))
        frames.append(("lit", ("{" if i == 0 else ",") + json.dumps(key, ensure_ascii=False) + ":", 0))
    return rest + tuple(frames)


def _push_members(rest: tuple, node: Node) -> tuple:
    """Frames that read a tuple: `[`, each position's value, commas between them, `]`."""
    frames: list[tuple] = [("lit", "]", 0)]
    for i in range(len(node.members) - 1, -1, -1):
        frames.append(("value", node.members[i]))
        frames.append(("lit", "[" if i == 0 else ",", 0))
    if not node.members:
        frames.append(("lit", "[", 0))
    return rest + tuple(frames)


def _feed(stack: tuple, c: str, written: str) -> Fed:
    if not stack:
        return None
    top, rest = stack[-1], stack[:-1]
    kind = top[0]
    if kind == "lit":
        _, text, pos = top
        if text[pos] != c:
            return None
        return rest if pos + 1 == len(text) else rest + (("lit", text, pos + 1),)
    if kind == "value":
        return _start_value(rest, top[1], c, written)
    if kind == "str":
        return _feed_string(rest, top, c)
    if kind == "num":
        return _feed_number(rest, top, c, written)
    if kind == "enum":
        return _feed_enum(rest, top, c, written)
    if kind == "arr":
        return _feed_array(rest, top, c, written)
    if kind == "mark":  # the item is complete: remember it, and `c` goes on to the list
        item, array = written[top[1] :], rest[-1]
        if item in array[4]:
            return None
        return _feed(rest[:-1] + (array[:4] + (array[4] | {item},),), c, written)
    if kind == "obj":
        return _feed_free_object(rest, top, c, written)
    return None


def _start_value(rest: tuple, node: Node, c: str, written: str) -> Fed:
    if node.kind == "union":
        return _start_options(rest, node, c, written)
    if node.kind == "any":
        return _start_any(rest, c, written)
    if c not in first_chars(node):
        return None
    if node.kind == "object":
        return _feed(_push_value(rest, node), c, written)
    if node.kind == "tuple":
        return _feed(_push_members(rest, node), c, written)
    if node.kind == "freeobj":
        return rest + (("obj", "start", node),)
    if node.kind == "array":
        return rest + (("arr", node, 0, "start", frozenset()),)
    if node.kind == "string":
        return rest + _string_frame(node)
    if node.kind == "number":
        return _feed_number(rest, ("num", node, "start", ""), c, written)
    return _feed(rest + (("enum", node.options, ""),), c, written)


def _start_options(rest: tuple, node: Node, c: str, written: str) -> Fed:
    """Every option of a union that can begin with `c`, each a reading of its own: the first that fits would
    make the others impossible (only `Cat` of `Cat | Dog`, never 2.5 for `int | float`)."""
    alts = [alt for alt in node.alts if c in first_chars(alt)]
    readings = [reading for alt in alts for reading in _as_readings(_start_value(rest, alt, c, written))]
    if len(readings) < 2:
        return readings[0] if readings else None
    return readings


def _string_frame(node: Node) -> tuple:
    copy_state = node.copy.root if isinstance(node.copy, SubstringIndex | SpanIndex) else None
    return (("str", node, 0, "", copy_state, node.pattern.start if node.pattern else None),)


def _start_any(rest: tuple, c: str, written: str) -> Fed:
    if c == '"':
        return rest + _string_frame(Node("string"))
    if c == "{":
        return rest + (("obj", "start", FREE_OBJECT),)
    if c == "[":
        return rest + (("arr", Node("array", item=ANY), 0, "start", frozenset()),)
    if c in "0123456789-":
        return _feed_number(rest, ("num", Node("number"), "start", ""), c, written)
    if c in "tfn":
        return _feed(rest + (("enum", ("true", "false", "null"), ""),), c, written)
    return None


def _feed_string(rest: tuple, top: tuple, c: str) -> tuple | None:
    _, node, length, escape, copied, matched = top
    if escape == "\\":
        if c not in ESCAPES:
            return None
        if c != "u":
            return _string_char(rest, top, ESCAPED[c])
        return rest + (top[:3] + ("u", copied, matched),) if _escape_possible(node, copied, matched, "u") else None
    if escape:  # inside \uXXXX
        digits = escape[1:] + c
        if c not in HEX or not _escape_possible(node, copied, matched, "u" + digits):
            return None
        return (
            rest + (top[:3] + ("u" + digits, copied, matched),)
            if len(digits) < 4
            else _string_char(rest, top, chr(int(digits, 16)))
        )
    if c == '"':
        if length < node.min_len or (matched is not None and not node.pattern.accepts(matched)):
            return None
        return None if node.copy and not node.copy.can_end(copied) else rest
    if length >= node.max_len or ord(c) < 0x20:
        return None
    if c == "\\":
        return rest + (top[:3] + ("\\", copied, matched),) if _escape_possible(node, copied, matched, "\\") else None
    return _string_char(rest, top, c)


def _string_char(rest: tuple, top: tuple, char: str) -> tuple | None:
    """One decoded character of a string, checked against the input (copied) and the pattern."""
    _, node, length, _escape, copied, matched = top
    if length >= node.max_len:
        return None
    stepped = _step_string(node, copied, matched, char)
    return None if stepped is None else rest + (("str", node, length + 1, "", *stepped),)


def _step_string(node: Node, copied: Any, matched: Any, char: str) -> tuple[Any, Any] | None:
    """The copy and pattern states after `char`; None when either refuses it, or when together they leave no way
    to a valid end (a copy that is a prefix of the shape but of no span of the input that has it)."""
    index = node.copy
    if isinstance(index, SubstringIndex | SpanIndex):
        copied = index.step(copied, char)
        if copied is None:
            return None
    if matched is not None:
        matched = node.pattern.step(matched, char)
        if matched is None:
            return None
    if isinstance(index, SpanIndex) and _shaped(node) and not index.viable(copied, node.pattern, matched, node.min_len):
        return None
    return copied, matched


def _shaped(node: Node) -> bool:
    """A copied string whose spans must also have a shape: only then can a substring prefix be a dead end (an
    index alone offers only characters that lead to a permitted end, and any one character meets a floor of 1)."""
    return node.pattern is not None or node.min_len > 1


def _escape_possible(node: Node, copied: Any, matched: Any, escape: str) -> bool:
    """Whether an escape begun as `escape` (a backslash, or `u` and the hex digits so far) can still end in a
    character the copy and the pattern accept: an escape that cannot (`\\u002` in a date) is a dead end, and the
    decoder would be stuck inside it."""
    return any(_step_string(node, copied, matched, ch) is not None for ch in _escapable(escape))


def _escapable(escape: str) -> list[str]:
    """The characters an escape begun as `escape` may write. `\\u` writes only the control characters, as the JSON
    of the answers the student learns does (the rest unescaped): a letter's escape spells a value in a way no
    trace showed (`\\u0049t\\u0065…` for `Items`, until the length cap cut it)."""
    if escape == "\\":
        return [*ESCAPED.values(), *CONTROL]
    digits = escape[1:].lower()
    return [ch for ch in CONTROL if f"{ord(ch):04x}".startswith(digits)]


def _feed_number(rest: tuple, top: tuple, c: str, written: str) -> Fed:
    _, node, phase, text = top
    nxt = _number_step(node, phase, text, c)
    if nxt is not None:
        return rest + (("num", node, nxt, text + c),)
    return _feed(rest, c, written) if _may_end(node, phase, text) else None


def _may_end(node: Node, phase: str, text: str) -> bool:
    """Whether the number may end here (or take an exponent): a complete one, and not zero where the schema wants
    it positive (a float > 0: `0.0` would be refused, and `0e5` still is zero)."""
    if phase not in NUMBER_END:
        return False
    return not (node.positive and not node.integer and phase in ("zero", "frac") and not text.strip("0."))


def _number_step(node: Node, phase: str, text: str, c: str) -> str | None:
    digit = c in "0123456789"
    if phase == "start":
        if c == "-" and not node.non_negative:
            return "minus"
        if c == "0":
            return None if node.positive and node.integer else "zero"
        return "int" if digit else None
    if phase == "minus":
        return ("zero" if c == "0" else "int") if digit else None
    if phase in ("zero", "int"):
        if digit and phase == "int" and len(text.lstrip("-")) < node.max_digits:
            return "int"
        if node.integer:
            return None
        if c == ".":
            return "frac_start"
        return "exp_start" if c in "eE" and _may_end(node, phase, text) else None
    if phase in ("frac_start", "frac"):
        if digit:
            return "frac"
        return "exp_start" if c in "eE" and _may_end(node, phase, text) else None
    if phase == "exp_start":
        return "exp_sign" if c in "+-" else ("exp" if digit else None)
    if phase in ("exp_sign", "exp"):  # 3 digits reach every double (1e308); more is a runaway
        return "exp" if digit and len(_exponent_digits(text)) < MAX_EXP_DIGITS else None
    return None


def _exponent_digits(text: str) -> str:
    return text[max(text.rfind(mark) for mark in "eE+-") + 1 :]


def _feed_enum(rest: tuple, top: tuple, c: str, written: str) -> Fed:
    _, options, prefix = top
    grown = prefix + c
    if any(o.startswith(grown) for o in options):
        longer = any(len(o) > len(grown) and o.startswith(grown) for o in options)
        return rest if grown in options and not longer else rest + (("enum", options, grown),)
    return _feed(rest, c, written) if prefix in options else None


def _feed_array(rest: tuple, top: tuple, c: str, written: str) -> Fed:
    _, node, count, phase, seen = top
    room = node.max_items is None or count < node.max_items
    if c == "]" and count >= node.min_items and phase != "start_item":
        return rest
    if phase == "start" and room or phase == "start_item":
        frames = rest + (("arr", node, count + 1, "after", seen),)
        if node.unique:
            frames += (("mark", len(written)),)
        return _start_value(frames, node.item, c, written)
    if phase == "after" and c == "," and room:
        return rest + (("arr", node, count, "start_item", seen),)
    return None


def _feed_free_object(rest: tuple, top: tuple, c: str, written: str) -> Fed:
    _, phase, node = top
    if phase in ("start", "after") and c == "}":
        return rest
    if phase == "start" or phase == "key":
        if c != '"':
            return None
        frames = rest + (("obj", "after", node), ("value", node.item_node), ("lit", ":", 0))
        return _start_value(frames, node.keys or FREE_KEY, c, written)
    if phase == "after" and c == ",":
        return rest + (("obj", "key", node),)
    return None


def _allowed(stack: tuple) -> frozenset[str] | None:
    if not stack:
        return frozenset()
    top, rest = stack[-1], stack[:-1]
    kind = top[0]
    if kind == "lit":
        return frozenset(top[1][top[2]])
    if kind == "value":
        return first_chars(top[1])
    if kind == "str":
        return _string_allowed(top)
    if kind == "num":
        _, node, phase, text = top
        own = frozenset(ch for ch in "0123456789-.eE+" if _number_step(node, phase, text, ch))
        if _may_end(node, phase, text):
            parent = _allowed(rest)
            return None if parent is None else own | parent
        return own
    if kind == "enum":
        _, options, prefix = top
        own = frozenset(o[len(prefix)] for o in options if o.startswith(prefix) and len(o) > len(prefix))
        if prefix in options:
            parent = _allowed(rest)
            return None if parent is None else own | parent
        return own
    if kind == "arr":
        _, node, count, phase, _seen = top
        room = node.max_items is None or count < node.max_items
        close = frozenset("]") if count >= node.min_items and phase != "start_item" else frozenset()
        if phase == "after":
            return close | (frozenset(",") if room else frozenset())
        return close | (first_chars(node.item) if room or phase == "start_item" else frozenset())
    if kind == "mark":
        return _allowed(rest)
    if kind == "obj":
        return frozenset('}"') if top[1] == "start" else (frozenset(",}") if top[1] == "after" else frozenset('"'))
    return frozenset()


def _string_allowed(top: tuple) -> frozenset[str] | None:
    _, node, length, escape, copied, matched = top
    if escape == "\\":
        return ESCAPES
    if escape:
        return HEX
    close = length >= node.min_len and (matched is None or node.pattern.accepts(matched))
    close = close and (not node.copy or node.copy.can_end(copied))
    if length >= node.max_len:
        return frozenset('"') if close else frozenset()
    chars = None
    if node.copy:
        chars = frozenset(node.copy.chars(copied))
        if _shaped(node):
            chars = frozenset(c for c in chars if _step_string(node, copied, matched, c) is not None)
    elif matched is not None:
        chars = node.pattern.next_chars(matched)
    if chars is None:
        return None
    spelled = frozenset("\\" if ch in '"\\' or ord(ch) < 0x20 else ch for ch in chars)
    return spelled | (frozenset('"') if close else frozenset())
