"""A JSON schema as a tree of `Node`s: what the answer grammar (`decoding.py`) walks.

Beside the schema's own keywords, a node carries what was learned about answers from the training traces
(`answer_profile.py`): bounds on list lengths and string lengths marked *soft* — an answer that reaches one has
left what the traces show and is flagged (`bound_hits`) — unique list items, and strings that may only be copied
from the call's input. Keywords the grammar does not enforce are listed in `notes`, so the caller can say that
validation checks them instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from protege.agents.models.copy_index import SpanIndex, SubstringIndex

DIGITS = frozenset("0123456789")
DEFAULT_MAX_STRING = 400  # characters; a runaway string from an unsure model is stopped here (a soft bound)
MAX_DIGITS = 18  # of an integer part: a runaway number is stopped here too
ENUMERABLE_RANGE = 256  # an integer range this small is decoded as the list of its values (bounds enforced)
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
)


@dataclass(frozen=True)
class Node:
    """A normalized schema: kind is one of object, freeobj, array, tuple, string, number, literal, union, any."""

    kind: str
    props: tuple[tuple[str, Node], ...] = ()
    item: Node | None = None
    options: tuple[str, ...] = ()  # literal: JSON texts of the allowed values
    alts: tuple[Node, ...] = ()
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
    if depth > 32 or not isinstance(schema, dict):
        return ANY
    notes += [key for key in UNENFORCED if key in schema and key not in notes]
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
    kind = schema.get("type")
    if isinstance(kind, list):
        return _union([compile_schema({**schema, "type": k}, root, depth + 1, notes) for k in kind])
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


def _object(schema: dict[str, Any], root: dict[str, Any], depth: int, notes: list[str]) -> Node:
    props = schema.get("properties") or {}
    if not props:
        return Node("freeobj")
    if schema.get("additionalProperties") not in (None, False):
        notes.append("additionalProperties")  # only the named properties are written
    return Node("object", props=tuple((k, compile_schema(v, root, depth + 1, notes)) for k, v in props.items()))


def _tuple(schema: dict[str, Any], root: dict[str, Any], depth: int, notes: list[str]) -> Node:
    """A fixed-length list of typed positions (pydantic's `tuple[int, str]`); one that may grow past its
    `prefixItems` is read as any list, and validation checks its positions."""
    prefix = schema["prefixItems"]
    if schema.get("items") is not False and schema.get("maxItems") != len(prefix):
        notes.append("prefixItems")
        return Node("array", item=ANY)
    return Node("tuple", members=tuple(compile_schema(s, root, depth + 1, notes) for s in prefix))


def _string(schema: dict[str, Any], notes: list[str]) -> Node:
    from protege.agents.models.patterns import for_schema

    declared = schema.get("maxLength")
    max_len = min(declared, DEFAULT_MAX_STRING) if declared is not None else DEFAULT_MAX_STRING
    pattern = for_schema(schema, notes)
    return Node(
        "string",
        min_len=schema.get("minLength", 0),
        max_len=max_len,
        soft_len=declared is None or declared > DEFAULT_MAX_STRING,
        pattern=pattern,
    )


def _number(schema: dict[str, Any], integer: bool, notes: list[str]) -> Node:
    low = schema.get("minimum")
    high = schema.get("maximum")
    if integer and low is not None and high is not None and 0 <= high - low <= ENUMERABLE_RANGE:
        values = range(int(low), int(high) + 1)
        if "maximum" in notes and "exclusiveMaximum" not in schema:
            notes.remove("maximum")  # enforced here, as the list of values
        return Node("literal", options=tuple(str(v) for v in values))
    exclusive = schema.get("exclusiveMinimum")
    if low is not None and low not in (0, 1) or exclusive not in (None, 0):
        notes.append("minimum")  # the grammar enforces a sign, not an arbitrary floor
    floor = low if low is not None else exclusive
    return Node(
        "number",
        integer=integer,
        non_negative=floor is not None and floor >= 0,
        positive=floor is not None and (floor > 0 or exclusive is not None and floor >= 0),
    )


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _union(alts: list[Node]) -> Node:
    if sum(a.kind in ("array", "tuple") for a in alts) > 1:  # the first that opens `[` would take every list
        alts = [Node("array", item=ANY) if a.kind == "tuple" else a for a in alts]
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
    kinds = {"object": dict, "freeobj": dict, "array": list, "tuple": list, "string": str}
    if node.kind in kinds:
        return isinstance(value, kinds[node.kind])
    if node.kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return node.kind == "any"
