"""A JSON schema as a tree of `Node`s: what the answer grammar (`decoding.py`) walks.

Beside the schema's own keywords, a node carries what was learned about answers from the training traces
(`answer_profile.py`): bounds on list lengths and string lengths marked *soft* — an answer that reaches one has
left what the traces show and is flagged (`bound_hits`) — unique list items, and strings that may only be copied
from the call's input. Keywords the grammar does not enforce are listed in `notes`, so the caller can say that
validation checks them instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from protege.agents.models.patterns import FORMATS, for_schema

if TYPE_CHECKING:
    from protege.agents.models.copy_index import SpanIndex, SubstringIndex

DIGITS = frozenset("0123456789")
DEFAULT_MAX_STRING = 400  # characters; a runaway string from an unsure model is stopped here (a soft bound)
MAX_DIGITS = 18  # of an integer part: a runaway number is stopped here too
ENUMERABLE_RANGE = 256  # an integer range this small is decoded as the list of its values (bounds enforced)
MAX_DEPTH = 32  # schema levels compiled; a recursive schema is any JSON value below (noted)
UNENFORCED = (
    "format",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "patternProperties",
    "not",
    "if",
    "contains",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
)


@dataclass(frozen=True)
class Node:
    """A normalized schema: kind is one of object, freeobj, array, tuple, string, number, literal, union, any.
    A freeobj (no named properties) has values of `item` and keys of `keys` (None: any)."""

    kind: str
    props: tuple[tuple[str, Node], ...] = ()
    item: Node | None = None
    options: tuple[str, ...] = ()  # literal: JSON texts of the allowed values
    alts: tuple[Node, ...] = ()
    keys: Node | None = None  # freeobj: what its keys may be (`propertyNames`), a string or string-literal node
    members: tuple[Node, ...] = ()  # tuple: each position's value (a fixed-length `prefixItems` list)
    integer: bool = False
    non_negative: bool = False
    positive: bool = False
    min_len: int = 0
    max_len: int = DEFAULT_MAX_STRING
    soft_len: bool = True  # max_len is not the schema's own: reaching it means the answer ran away
    min_items: int = 0
    max_items: int | None = None
    soft_items: bool = False  # max_items was learned from the traces, not set by the schema
    unique: bool = False  # an item equal to an earlier one is refused
    max_digits: int = MAX_DIGITS  # of a number's integer part: learned from the traces, or the runaway guard
    # a string that may only be a substring of the call's input: True as learned, the call's index once bound
    copy: bool | SubstringIndex | SpanIndex = False
    # where a copied value may start and end: the edge classes allowed just before it and just after it, and
    # whether it must not begin or end with white space
    copy_edges: tuple[frozenset[str], frozenset[str], bool] | None = None
    pattern: Any = None  # a compiled `patterns.Pattern` the string must match (None: any text)

    @property
    def item_node(self) -> Node:
        """An array's item (ANY where the schema leaves it open)."""
        return self.item if self.item is not None else ANY


ANY = Node("any")


def compile_schema(
    schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0, notes: list[str] | None = None
) -> Node:
    """Turn a JSON schema (pydantic's `model_json_schema()` dialect) into a Node tree; keywords it cannot
    enforce are appended to `notes`."""
    root = root if root is not None else schema
    notes = notes if notes is not None else []
    if not isinstance(schema, dict):
        return ANY
    if depth > MAX_DEPTH:
        _note(notes, f"the schema below {MAX_DEPTH} levels (recursion)")
        return ANY
    kind = schema.get("type")
    if isinstance(kind, list):  # each type notes what it leaves to validation
        return _union([compile_schema({**schema, "type": k}, root, depth + 1, notes) for k in kind])
    for key in _unenforced(schema):
        _note(notes, key)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return compile_schema(root.get("$defs", {}).get(name, {}), root, depth + 1, notes)
    if "const" in schema:
        return Node("literal", options=(compact(schema["const"]),))
    if "enum" in schema:
        return Node("literal", options=tuple(compact(v) for v in schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _union([compile_schema(s, root, depth + 1, notes) for s in schema[key]])
    if "allOf" in schema:
        if len(schema["allOf"]) > 1:
            notes.append("allOf")
        return compile_schema(schema["allOf"][0], root, depth + 1, notes)
    if kind == "object" or (kind is None and "properties" in schema):
        return _object(schema, root, depth, notes)
    if kind == "array" and "prefixItems" in schema:
        return _tuple(schema, root, depth, notes)
    if kind == "array":
        item = compile_schema(schema["items"], root, depth + 1, notes) if schema.get("items") else ANY
        return Node(
            "array",
            item=item,
            min_items=schema.get("minItems", 0),
            max_items=schema.get("maxItems"),
            unique=bool(schema.get("uniqueItems")),
        )
    if kind == "string":
        return _string(schema, notes)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer", notes)
    if kind == "boolean":
        return Node("literal", options=("true", "false"))
    if kind == "null":
        return Node("literal", options=("null",))
    return ANY


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _unenforced(schema: dict[str, Any]) -> list[str]:
    """The keywords of this schema node the grammar leaves to validation (decided per node: one field's enforced
    `maximum` must not take the note from another's that is not)."""
    keys = [key for key in UNENFORCED if key in schema]
    if "maximum" in keys and _enumerable(schema):
        keys.remove("maximum")
    if "format" in keys and schema["format"] in FORMATS and "pattern" not in schema:
        keys.remove("format")
    return keys


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int, notes: list[str]) -> Node:
    props = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    if not props:
        return _free_object(schema, root, depth, notes)
    if extra not in (None, False):
        _note(notes, "additionalProperties")  # only the named properties are written
    return Node("object", props=tuple((k, compile_schema(v, root, depth + 1, notes)) for k, v in props.items()))


def _free_object(schema: dict[str, Any], root: dict[str, Any], depth: int, notes: list[str]) -> Node:
    """An object without named properties (`dict[str, int]`): its values of the `additionalProperties` schema, its
    keys of `propertyNames` where that is a string shape the grammar reads; `{}` alone where nothing is allowed."""
    extra = schema.get("additionalProperties")
    if extra is False and "patternProperties" not in schema:
        return Node("literal", options=("{}",))
    item = compile_schema(extra, root, depth + 1, notes) if isinstance(extra, dict) and extra else None
    keys = None
    if "propertyNames" in schema:
        keys = compile_schema({"type": "string", **schema["propertyNames"]}, root, depth + 1, notes)
        if not (keys.kind == "string" or keys.kind == "literal" and all(o[0] == '"' for o in keys.options)):
            _note(notes, "propertyNames")
            keys = None
    return Node("freeobj", item=item, keys=keys)


def _tuple(schema: dict[str, Any], root: dict[str, Any], depth: int, notes: list[str]) -> Node:
    """A fixed-length list of typed positions (pydantic's `tuple[int, str]`); one that may grow past its
    `prefixItems` is read as any list, and validation checks its positions."""
    prefix = schema["prefixItems"]
    if schema.get("items") is not False and schema.get("maxItems") != len(prefix):
        notes.append("prefixItems")
        return Node("array", item=ANY)
    return Node("tuple", members=tuple(compile_schema(s, root, depth + 1, notes) for s in prefix))


def _string(schema: dict[str, Any], notes: list[str]) -> Node:
    declared, min_len = schema.get("maxLength"), schema.get("minLength", 0)
    guard = max(DEFAULT_MAX_STRING, 2 * min_len)  # the runaway guard leaves room above a long minLength
    max_len = min(declared, guard) if declared is not None else guard
    pattern = for_schema(schema, notes)
    return Node(
        "string",
        min_len=min_len,
        max_len=max_len,
        soft_len=declared is None or declared > guard,
        pattern=pattern,
    )


def _enumerable(schema: dict[str, Any]) -> bool:
    """An integer range small enough to decode as the list of its values."""
    low, high = schema.get("minimum"), schema.get("maximum")
    if schema.get("type") != "integer" or low is None or high is None:
        return False
    return 0 <= math.floor(high) - math.ceil(low) <= ENUMERABLE_RANGE


def _number(schema: dict[str, Any], integer: bool, notes: list[str]) -> Node:
    """A number whose floor is enforced as a sign: >= 0, > 0 (and >= 1 for an integer) exactly; any other floor
    narrows to the sign it implies and is noted."""
    low, high, exclusive = schema.get("minimum"), schema.get("maximum"), schema.get("exclusiveMinimum")
    if integer and _enumerable(schema):
        values = range(math.ceil(schema["minimum"]), math.floor(schema["maximum"]) + 1)
        return Node("literal", options=tuple(str(v) for v in values))
    strict = low is None and exclusive is not None  # a floor the value must exceed
    floor = low if low is not None else exclusive
    if integer and floor is not None:  # an integer floor is inclusive: > 0 is >= 1
        floor, strict = (math.floor(floor) + 1 if strict else math.ceil(floor)), False
    exact = floor is None or floor == 0 or (integer and floor == 1)
    if not exact or low is not None and exclusive is not None:
        _note(notes, "minimum")
    return Node(
        "number",
        integer=integer,
        non_negative=floor is not None and floor >= 0,
        positive=floor is not None and (floor > 0 or strict and floor == 0),
        max_digits=max([MAX_DIGITS, *(_digits(b) for b in (low, high, exclusive) if b is not None)]),
    )


def _digits(bound: float) -> int:
    """The integer digits of a bound: a floor of 10**20 needs 21 (the runaway guard must not rule it out)."""
    return len(str(abs(int(bound))))


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def tool_call_node(tools: list[tuple[str, dict[str, Any] | None]], notes: list[str]) -> Node:
    """One tool call as a local model writes it (`chat_format.render_tool_calls`): `{"name":...,"arguments":...}`
    naming one of the tools, its arguments under that tool's parameter schema (each compiled as its own root, so
    its `$ref`s resolve)."""
    calls = [
        Node("object", props=(("name", Node("literal", options=(compact(name),))), ("arguments", _arguments(params))))
        for name, params in tools
    ]
    return _union(calls)


def _arguments(params: dict[str, Any] | None) -> Node:
    """A tool's arguments. The grammar writes an object's every property in schema order, which suits arguments
    that are all required; a tool with optional ones is called with its defaults left out and in the teacher's
    order (as the training rows show), so there any JSON object is written and the tool checks it (a bad argument
    is an error result the model reads)."""
    params = params or {"type": "object", "properties": {}}
    props, required = params.get("properties") or {}, set(params.get("required") or [])
    if set(props) - required:
        return Node("freeobj")
    # a Python function refuses keyword arguments it does not have
    closed = {**params, "additionalProperties": False} if "additionalProperties" not in params else params
    return compile_schema(closed, notes=[])


def _union(alts: list[Node]) -> Node:
    """The options of anyOf/oneOf, literals merged into one; the decoder reads every option still possible."""
    literals = [a for a in alts if a.kind == "literal"]
    others = [a for a in alts if a.kind != "literal"]
    if literals:
        others.append(Node("literal", options=tuple(o for a in literals for o in a.options)))
    return others[0] if len(others) == 1 else Node("union", alts=tuple(others))


def first_chars(node: Node) -> frozenset[str]:
    """Characters a value of this node can start with."""
    if node.kind in ("object", "freeobj"):
        return frozenset("{")
    if node.kind in ("array", "tuple"):
        return frozenset("[")
    if node.kind == "string":
        return frozenset('"') if _can_open(node) else frozenset()
    if node.kind == "number":
        return DIGITS if node.non_negative else DIGITS | {"-"}
    if node.kind == "literal":
        return frozenset(o[0] for o in node.options)
    if node.kind == "union":
        return frozenset().union(*(first_chars(a) for a in node.alts))
    return frozenset('"{[-tfn') | DIGITS


def _can_open(node: Node) -> bool:
    """A string copied from this call's input is opened only where the input holds a value it may write (a
    nullable field is then null, not a dead end)."""
    index = node.copy
    if isinstance(index, bool):
        return True
    pattern = node.pattern
    return index.viable(index.root, pattern, pattern.start if pattern is not None else None, node.min_len)


# -- what a caller adds to the schema's tree ----------------------------------------------------------------------


def with_fixed(node: Node, fixed: dict[str, Any]) -> Node:
    """The tree with top-level fields whose values are decided written as those exact values (no choice left)."""
    from protege.errors import UserError

    if node.kind != "object":
        raise UserError(f"fixed_output {sorted(fixed)!r} needs an output schema that is an object with properties")
    names = {key for key, _ in node.props}
    unknown = sorted(set(fixed) - names)
    if unknown:
        raise UserError(
            f"fixed_output names {unknown!r}, which are not fields of the output schema "
            f"({sorted(names)!r}); fix only the schema's own top-level fields"
        )
    props = tuple(
        (key, Node("literal", options=(compact(fixed[key]),)) if key in fixed else sub) for key, sub in node.props
    )
    return replace(node, props=props)


def with_bounds(node: Node, bounds: dict[str, dict[str, Any]], path: str = "") -> Node:
    """The tree with what the traces showed applied at each path ("field", "field[]", "field.sub"): soft
    maxItems/maxLength (never above the schema's own), uniqueItems, copied strings."""
    here = bounds.get(path, {})
    if node.kind == "union":
        return replace(node, alts=tuple(with_bounds(alt, bounds, path) for alt in node.alts))
    if node.kind == "object":
        props = tuple((key, with_bounds(sub, bounds, f"{path}.{key}" if path else key)) for key, sub in node.props)
        return replace(node, props=props)
    if node.kind == "array":
        node = replace(node, item=with_bounds(node.item_node, bounds, f"{path}[]"))
        learned = here.get("max_items")
        if learned is not None and (node.max_items is None or learned < node.max_items):
            node = replace(node, max_items=max(learned, node.min_items), soft_items=True)
        return replace(node, unique=node.unique or bool(here.get("unique_items")))
    if node.kind == "string":
        learned = here.get("max_length")
        if learned is not None and learned < node.max_len:
            node = replace(node, max_len=max(learned, node.min_len), soft_len=True)
        if here.get("copy"):
            node = replace(node, copy=True, copy_edges=_copy_edges(here), min_len=max(node.min_len, 1))
        return node
    if node.kind == "number":
        learned = here.get("max_digits")
        if learned is not None and learned < node.max_digits:
            node = replace(node, max_digits=learned)
    return node


def _copy_edges(bounds: dict[str, Any]) -> tuple[frozenset[str], frozenset[str], bool] | None:
    """Where a copied value may start and end, from its learned `copy_edges` and `copy_trimmed` (None: anywhere)."""
    from protege.agents.models.copy_index import EDGE_CLASSES

    edges, trimmed = bounds.get("copy_edges"), bool(bounds.get("copy_trimmed"))
    if not edges and not trimmed:
        return None
    left, right = (edges["left"], edges["right"]) if edges else (EDGE_CLASSES, EDGE_CLASSES)
    return frozenset(left), frozenset(right), trimmed


def bound_hits(node: Node, value: Any, path: str = "") -> list[str]:
    """Where a parsed answer reached a soft bound (a runaway list, string or number), as readable lines."""
    name = path or "the answer"
    if node.kind == "union":
        alt = next((a for a in node.alts if _fits(a, value)), None)
        return bound_hits(alt, value, path) if alt is not None else []
    if node.kind == "object" and isinstance(value, dict):
        return [
            hit
            for key, sub in node.props
            if key in value
            for hit in bound_hits(sub, value[key], f"{path}.{key}" if path else key)
        ]
    if node.kind == "array" and isinstance(value, list):
        hits = [hit for item in value for hit in bound_hits(node.item_node, item, f"{path}[]")]
        if node.soft_items and node.max_items is not None and len(value) >= node.max_items:
            hits.insert(0, f"{name}: {len(value)} items, the most the training traces allow")
        return hits
    if node.kind == "string" and isinstance(value, str) and node.soft_len and len(value) >= node.max_len:
        return [f"{name}: a string of {len(value)} characters, the longest allowed"]
    if node.kind == "number" and isinstance(value, int | float) and len(str(abs(int(value)))) >= node.max_digits:
        limit = "the training traces allow" if node.max_digits < MAX_DIGITS else "allowed"
        return [f"{name}: a number of {node.max_digits} digits, the most {limit}"]
    return []


def _fits(node: Node, value: Any) -> bool:
    if node.kind == "literal":
        return compact(value) in node.options
    if node.kind == "object":  # the grammar writes every property
        return isinstance(value, dict) and set(value) == {key for key, _ in node.props}
    kinds = {"object": dict, "freeobj": dict, "array": list, "tuple": list, "string": str}
    if node.kind in kinds:
        return isinstance(value, kinds[node.kind])
    if node.kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return node.kind == "any"
