"""The student's answer grammar as GBNF (llama.cpp's grammar format), for servers that constrain with it.

It is written from the same schema nodes the torch engine decodes under (`decoding.compile_schema`), so a server
that samples under it accepts exactly the compact JSON the student was trained to write: properties in schema
order, all of them, no whitespace, strings of at most `DEFAULT_MAX_STRING` characters, integers of at most the
node's digits (the runaway guard's `MAX_DIGITS`, or as many as the schema's bounds need). (The torch engine
additionally restricts copied fields to substrings of the input; that constraint depends on each call's input,
so it cannot live in a static grammar.)
"""

from __future__ import annotations

import json
from typing import Any

from protege.agents.models.decoding import TOOL_CLOSE, TOOL_OPEN
from protege.agents.models.schema_nodes import Node, compile_schema, tool_call_node

_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_SHARED = {
    "char": _CHAR,
    "ws": "",  # compact JSON: the student never writes whitespace between tokens
    "any-string": '"\\"" char* "\\""',
    "any-number": '"-"? ("0" | [1-9] [0-9]*) ("." [0-9]+)? ([eE] [-+]? [0-9]+)?',
    "any-value": 'any-object | any-array | any-string | any-number | "true" | "false" | "null"',
    "any-object": '"{" (any-string ":" any-value ("," any-string ":" any-value)*)? "}"',
    "any-array": '"[" (any-value ("," any-value)*)? "]"',
}


def schema_to_gbnf(schema: dict[str, Any], tools: list[tuple[str, dict[str, Any] | None]] | None = None) -> str:
    """GBNF for compact JSON answers of `schema` (pydantic's JSON schema dialect), with `root` as the start rule.
    With `tools` ((name, parameter schema) pairs), a turn as `decoding.Grammar(tools=...)` decodes it: the answer,
    or one `<tool_call>{"name":...,"arguments":...}</tool_call>` of a tool it has."""
    writer = _Writer()
    root = writer.expr(compile_schema(schema))
    if tools:
        call = writer.expr(tool_call_node(tools, notes=[]))
        root = f"{root} | {_literal(TOOL_OPEN)} {call} {_literal(TOOL_CLOSE)}"
    rules = [f"root ::= {root}", *writer.rules]
    used = "\n".join(rules)
    shared = [f"{name} ::= {body}" for name, body in _SHARED.items() if name in used or name == "char"]
    return "\n".join(rules + _closure(shared, used)) + "\n"


def _closure(shared: list[str], used: str) -> list[str]:
    """The shared rules the grammar refers to, directly or through each other."""
    keep: list[str] = []
    text = used
    for _ in range(3):  # any-value -> any-object -> any-string -> char: a fixed, shallow chain
        keep = [rule for rule in shared if rule.split(" ::= ")[0] in text]
        text = used + "\n".join(keep)
    return keep


def _literal(text: str) -> str:
    """A GBNF string literal of `text` (JSON escaping is close enough: GBNF reads \\", \\\\ and \\n)."""
    return json.dumps(text, ensure_ascii=False)


class _Writer:
    """Turns schema nodes into GBNF expressions, giving compound values rules of their own."""

    def __init__(self) -> None:
        self.rules: list[str] = []

    def rule(self, body: str) -> str:
        name = f"v{len(self.rules)}"
        self.rules.append(f"{name} ::= {body}")
        return name

    def expr(self, node: Node) -> str:
        kind = node.kind
        if kind == "object":
            parts = [
                f"{_literal(('{' if i == 0 else ',') + json.dumps(key, ensure_ascii=False) + ':')} {self.expr(value)}"
                for i, (key, value) in enumerate(node.props)
            ]
            return self.rule(" ".join(parts) + ' "}"')
        if kind == "array":
            return self.rule(self._array(node))
        if kind == "tuple":
            members = ' "," '.join(self.expr(member) for member in node.members)
            return self.rule(f'"[" {members} "]"' if members else '"[]"')
        if kind == "string":
            return self.rule(f'"\\"" char{{{node.min_len},{node.max_len}}} "\\""')
        if kind == "number":
            return self.rule(_number(node))
        if kind == "literal":
            return self.rule(" | ".join(_literal(option) for option in node.options))
        if kind == "union":
            return self.rule(" | ".join(self.expr(alt) for alt in node.alts))
        if kind == "freeobj":
            return "any-object"
        return "any-value"

    def _array(self, node: Node) -> str:
        item = self.expr(node.item) if node.item is not None else "any-value"
        low, high = node.min_items, node.max_items
        if high == 0:
            return '"[]"'
        more_low = max(low - 1, 0)
        more = f'("," {item}){{{more_low},{high - 1}}}' if high is not None else f'("," {item}){{{more_low},}}'
        body = f"{item} {more}"
        return f'"[" {body} "]"' if low > 0 else f'"[" ({body})? "]"'


def _number(node: Node) -> str:
    """Integers with at most the node's digits (learned from the traces, or wide enough for its bounds); a sign
    only where the schema's minimum allows it."""
    digits = f"[0-9]{{0,{max(node.max_digits, 1) - 1}}}"
    whole = f"[1-9] {digits}" if node.positive and node.integer else f'("0" | [1-9] {digits})'
    sign = "" if node.non_negative or node.positive else '"-"? '
    if node.integer:
        return f"{sign}{whole}"
    return f'{sign}{whole} ("." [0-9]+)? ([eE] [-+]? [0-9]+)?'
