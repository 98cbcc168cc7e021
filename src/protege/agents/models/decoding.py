"""A character-level automaton for compact JSON that matches a JSON schema (the student's answer format).

`Grammar(schema).start()` gives a `State`; `state.feed(text)` returns the next state or None when the text
cannot continue a valid answer; `state.forced()` is the text the schema fixes from here (keys, punctuation,
a shared enum prefix), which the decoder writes without asking the model; `state.finish()` is the shortest valid
completion, used to close an answer that runs out of budget. Compact means no whitespace between tokens, which
is how `chat_format.render_answer` writes answers, so forced text is exactly what the student was trained on.

Supported: objects with properties (emitted in schema order, all of them), arrays, strings (min/maxLength),
integers/numbers (sign and zero checked against minimum), booleans, null, enum/const, anyOf/oneOf/type lists,
$ref into $defs; anything else (free-form dicts, `{}`) is any JSON value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DIGITS = frozenset("0123456789")
HEX = frozenset("0123456789abcdefABCDEF")
ESCAPES = frozenset('"\\/bfnrtu')
DEFAULT_MAX_STRING = 400  # characters; a runaway string from an unsure model is closed here
MAX_DIGITS = 18  # of an integer part: a runaway number is closed here too


# -- schema nodes ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """A normalized schema: kind is one of object, freeobj, array, string, number, literal, union, any."""

    kind: str
    props: tuple[tuple[str, Node], ...] = ()
    item: Node | None = None
    options: tuple[str, ...] = ()  # literal: JSON texts of the allowed values
    alts: tuple[Node, ...] = ()
    integer: bool = False
    non_negative: bool = False
    positive: bool = False
    min_len: int = 0
    max_len: int = DEFAULT_MAX_STRING
    min_items: int = 0
    max_items: int | None = None


ANY = Node("any")


def compile_schema(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Node:
    """Turn a JSON schema (pydantic's `model_json_schema()` dialect) into a Node tree."""
    root = root if root is not None else schema
    if depth > 32 or not isinstance(schema, dict):
        return ANY
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return compile_schema(root.get("$defs", {}).get(name, {}), root, depth + 1)
    if "const" in schema:
        return Node("literal", options=(_compact(schema["const"]),))
    if "enum" in schema:
        return Node("literal", options=tuple(_compact(v) for v in schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _union([compile_schema(s, root, depth + 1) for s in schema[key]])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return compile_schema(schema["allOf"][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union([compile_schema({**schema, "type": k}, root, depth + 1) for k in kind])
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        if not props:
            return Node("freeobj")
        return Node("object", props=tuple((k, compile_schema(v, root, depth + 1)) for k, v in props.items()))
    if kind == "array":
        item = compile_schema(schema.get("items", {}), root, depth + 1) if schema.get("items") else ANY
        return Node("array", item=item, min_items=schema.get("minItems", 0), max_items=schema.get("maxItems"))
    if kind == "string":
        return Node("string", min_len=schema.get("minLength", 0),
                    max_len=min(schema.get("maxLength", DEFAULT_MAX_STRING), DEFAULT_MAX_STRING))
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        return Node("number", integer=kind == "integer", non_negative=low is not None and low >= 0,
                    positive=low is not None and (low > 0 or "exclusiveMinimum" in schema and low >= 0))
    if kind == "boolean":
        return Node("literal", options=("true", "false"))
    if kind == "null":
        return Node("literal", options=("null",))
    return ANY


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _union(alts: list[Node]) -> Node:
    literals = [a for a in alts if a.kind == "literal"]
    others = [a for a in alts if a.kind != "literal"]
    if literals:
        others.append(Node("literal", options=tuple(o for a in literals for o in a.options)))
    return others[0] if len(others) == 1 else Node("union", alts=tuple(others))


def first_chars(node: Node) -> frozenset[str]:
    """Characters a value of this node can start with."""
    if node.kind in ("object", "freeobj"):
        return frozenset("{")
    if node.kind == "array":
        return frozenset("[")
    if node.kind == "string":
        return frozenset('"')
    if node.kind == "number":
        return DIGITS if node.non_negative else DIGITS | {"-"}
    if node.kind == "literal":
        return frozenset(o[0] for o in node.options)
    if node.kind == "union":
        return frozenset().union(*(first_chars(a) for a in node.alts))
    return frozenset('"{[-tfn') | DIGITS


# -- automaton frames: immutable tuples on an immutable stack ---------------------------------------------------------
# ("lit", text, pos) ("value", node) ("str", node, length, escape) ("num", node, phase, text)
# ("enum", options, prefix) ("arr", node, count, phase) ("obj", phase)   -- "obj" is a free-form JSON object

NUMBER_END = frozenset({"zero", "int", "frac", "exp"})


class State:
    """Where an answer stands in the grammar; immutable, so the decoder can try a token and drop it."""

    __slots__ = ("stack",)

    def __init__(self, stack: tuple):
        self.stack = stack

    @property
    def done(self) -> bool:
        return not self.stack

    def feed(self, text: str) -> State | None:
        stack = self.stack
        for char in text:
            stack = _feed(stack, char)
            if stack is None:
                return None
        return State(stack)

    def allowed(self) -> frozenset[str] | None:
        """The characters that may come next, or None when almost any may (inside a string)."""
        return _allowed(self.stack)

    def forced(self) -> str:
        """The text the grammar fixes from here on (stops where a choice begins)."""
        out, stack = [], self.stack
        while stack:
            allowed = _allowed(stack)
            if allowed is None or len(allowed) != 1:
                break
            char = next(iter(allowed))
            out.append(char)
            stack = _feed(stack, char)
        return "".join(out)

    def finish(self) -> str:
        """A short text that completes a valid answer from here (used when the token budget runs out)."""
        out, stack = [], self.stack
        for _ in range(10_000):
            if not stack:
                return "".join(out)
            char = _closing_char(stack)
            out.append(char)
            stack = _feed(stack, char)
            if stack is None:
                break
        raise RuntimeError("grammar could not be completed")  # a bug, not a model failure


class Grammar:
    """The automaton for one output schema."""

    def __init__(self, schema: dict[str, Any] | None):
        self.root = compile_schema(schema) if schema else ANY

    def start(self) -> State:
        return State((("value", self.root),))


def _push_value(rest: tuple, node: Node) -> tuple:
    """Frames that read one value of `node` (objects with properties unfold into literals and values)."""
    if node.kind == "object":
        frames = [("lit", "}", 0)]
        for i in range(len(node.props) - 1, -1, -1):
            key, sub = node.props[i]
            frames.append(("value", sub))
            frames.append(("lit", ("{" if i == 0 else ",") + _compact(key) + ":", 0))
        return rest + tuple(frames)
    return rest + (("value", node),)


def _feed(stack: tuple, c: str) -> tuple | None:
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
        return _start_value(rest, top[1], c)
    if kind == "str":
        return _feed_string(rest, top, c)
    if kind == "num":
        return _feed_number(rest, top, c)
    if kind == "enum":
        _, options, prefix = top
        grown = prefix + c
        if any(o.startswith(grown) for o in options):
            return rest if grown in options and not any(len(o) > len(grown) and o.startswith(grown) for o in options) \
                else rest + (("enum", options, grown),)
        return _feed(rest, c) if prefix in options else None
    if kind == "arr":
        return _feed_array(rest, top, c)
    if kind == "obj":
        return _feed_free_object(rest, top, c)
    return None


def _start_value(rest: tuple, node: Node, c: str) -> tuple | None:
    if node.kind == "union":
        for alt in node.alts:
            if c in first_chars(alt):
                return _start_value(rest, alt, c)
        return None
    if node.kind == "any":
        return _start_any(rest, c)
    if c not in first_chars(node):
        return None
    if node.kind == "object":
        return _feed(_push_value(rest, node), c)
    if node.kind == "freeobj":
        return rest + (("obj", "start"),)
    if node.kind == "array":
        return rest + (("arr", node, 0, "start"),)
    if node.kind == "string":
        return rest + (("str", node, 0, ""),)
    if node.kind == "number":
        return _feed_number(rest, ("num", node, "start", ""), c)
    return _feed(rest + (("enum", node.options, ""),), c)


def _start_any(rest: tuple, c: str) -> tuple | None:
    if c == '"':
        return rest + (("str", Node("string"), 0, ""),)
    if c == "{":
        return rest + (("obj", "start"),)
    if c == "[":
        return rest + (("arr", Node("array", item=ANY), 0, "start"),)
    if c in DIGITS or c == "-":
        return _feed_number(rest, ("num", Node("number"), "start", ""), c)
    if c in "tfn":
        return _feed(rest + (("enum", ("true", "false", "null"), ""),), c)
    return None


def _feed_string(rest: tuple, top: tuple, c: str) -> tuple | None:
    _, node, length, escape = top
    if escape:
        if escape == "\\":
            if c not in ESCAPES:
                return None
            return rest + (("str", node, length, "u" if c == "u" else ""),)
        if c not in HEX:  # inside \uXXXX
            return None
        return rest + (("str", node, length, "" if len(escape) == 4 else escape + "x"),)
    if c == '"':
        return rest if length >= node.min_len else None
    if length >= node.max_len or ord(c) < 0x20:
        return None
    if c == "\\":
        return rest + (("str", node, length + 1, "\\"),)
    return rest + (("str", node, length + 1, ""),)


def _feed_number(rest: tuple, top: tuple, c: str) -> tuple | None:
    _, node, phase, text = top
    nxt = _number_step(node, phase, text, c)
    if nxt is not None:
        return rest + (("num", node, nxt, text + c),)
    return _feed(rest, c) if phase in NUMBER_END else None


def _number_step(node: Node, phase: str, text: str, c: str) -> str | None:
    digit = c in DIGITS
    if phase == "start":
        if c == "-" and not node.non_negative:
            return "minus"
        if c == "0":
            return None if node.positive and node.integer else "zero"
        return "int" if digit else None
    if phase == "minus":
        return ("zero" if c == "0" else "int") if digit else None
    if phase in ("zero", "int"):
        if digit and phase == "int" and len(text.lstrip("-")) < MAX_DIGITS:
            return "int"
        if node.integer:
            return None
        return "frac_start" if c == "." else ("exp_start" if c in "eE" else None)
    if phase in ("frac_start", "frac"):
        if digit:
            return "frac"
        return "exp_start" if phase == "frac" and c in "eE" else None
    if phase == "exp_start":
        return "exp_sign" if c in "+-" else ("exp" if digit else None)
    if phase in ("exp_sign", "exp"):
        return "exp" if digit else None
    return None


def _feed_array(rest: tuple, top: tuple, c: str) -> tuple | None:
    _, node, count, phase = top
    room = node.max_items is None or count < node.max_items
    if c == "]" and count >= node.min_items:
        return rest
    if phase == "start" and room:
        return _start_value(rest + (("arr", node, count + 1, "after"),), node.item, c)
    if phase == "after" and c == "," and room:
        return rest + (("arr", node, count, "start_item"),)
    if phase == "start_item":
        return _start_value(rest + (("arr", node, count + 1, "after"),), node.item, c)
    return None


def _feed_free_object(rest: tuple, top: tuple, c: str) -> tuple | None:
    phase = top[1]
    if phase in ("start", "after") and c == "}":
        return rest
    if phase == "start" or phase == "key":
        if c != '"':
            return None
        return rest + (("obj", "after"), ("value", ANY), ("lit", ":", 0), ("str", Node("string"), 0, ""))
    if phase == "after" and c == ",":
        return rest + (("obj", "key"),)
    return None


def _allowed(stack: tuple) -> frozenset[str] | None:
    if not stack:
        return frozenset()
    top, rest = stack[-1], stack[:-1]
    kind = top[0]
    if kind == "lit":
        return frozenset(top[1][top[2]])
    if kind == "value":
        node = top[1]
        return first_chars(node)
    if kind == "str":
        _, node, length, escape = top
        if escape == "\\":
            return ESCAPES
        if escape:
            return HEX
        if length >= node.max_len:
            return frozenset('"')
        return None
    if kind == "num":
        _, node, phase, text = top
        own = frozenset(ch for ch in "0123456789-.eE+" if _number_step(node, phase, text, ch))
        if phase in NUMBER_END:
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
        _, node, count, phase = top
        room = node.max_items is None or count < node.max_items
        close = frozenset("]") if count >= node.min_items and phase != "start_item" else frozenset()
        if phase == "after":
            return close | (frozenset(",") if room else frozenset())
        return close | (first_chars(node.item) if room else frozenset())
    if kind == "obj":
        return frozenset('}"') if top[1] == "start" else (frozenset(',}') if top[1] == "after" else frozenset('"'))
    return frozenset()


def _closing_char(stack: tuple) -> str:
    """The next character of the shortest way to finish the value on top of the stack."""
    top = stack[-1]
    kind = top[0]
    if kind == "lit":
        return top[1][top[2]]
    if kind == "value":
        return _shortest_start(top[1])
    if kind == "str":
        _, node, length, escape = top
        if escape == "\\":
            return "n"
        if escape:
            return "0"
        return '"' if length >= node.min_len else "a"
    if kind == "num":
        _, node, phase, _text = top
        if phase in NUMBER_END:
            return _closing_char(stack[:-1])
        return "1" if phase in ("start", "minus") and node.positive else ("0" if phase != "frac_start" else "0")
    if kind == "enum":
        _, options, prefix = top
        if prefix in options:
            return _closing_char(stack[:-1])
        return next(o for o in options if o.startswith(prefix))[len(prefix)]
    if kind == "arr":
        _, node, count, phase = top
        if count >= node.min_items and phase != "start_item":
            return "]"
        if phase == "after":
            return ","
        return _shortest_start(node.item)
    if kind == "obj":
        return "}" if top[1] in ("start", "after") else '"'
    raise RuntimeError(f"unknown frame {kind!r}")


def _shortest_start(node: Node) -> str:
    if node.kind == "union":
        literal = next((a for a in node.alts if a.kind == "literal"), None)
        return _shortest_start(literal or node.alts[0])
    if node.kind == "literal":
        return min(node.options, key=len)[0]
    if node.kind == "number":
        return "1" if node.positive else "0"
    if node.kind == "any":
        return "n"
    return min(first_chars(node))
