"""Check data against a task's stored JSON schema without its code (imports when no app is loaded).

Covers what pydantic's `model_json_schema()` emits: $ref/$defs, type (incl. lists of types), enum, const,
anyOf/oneOf/allOf, properties/required/additionalProperties, items/prefixItems, numeric bounds, string
length and pattern, array length. Unknown keywords (format, title, description, default) are ignored, so it never
rejects valid data for a keyword it does not know; with the app loaded, the task's pydantic model is used instead.
"""

from __future__ import annotations

import re
from typing import Any

TYPES: dict[str, Any] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
BOUNDS = (
    ("minimum", lambda v, b: v >= b),
    ("maximum", lambda v, b: v <= b),
    ("exclusiveMinimum", lambda v, b: v > b),
    ("exclusiveMaximum", lambda v, b: v < b),
)
MAX_ERRORS = 5


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Why `value` does not match `schema` (empty when it does), as 'path: problem' lines."""
    errors: list[str] = []
    _check(value, schema, schema, "", errors)
    return errors[:MAX_ERRORS]


def _check(value: Any, schema: Any, root: dict, path: str, errors: list[str]) -> None:
    if not isinstance(schema, dict) or len(errors) >= MAX_ERRORS:
        return
    if "$ref" in schema:
        _check(value, _resolve(schema["$ref"], root), root, path, errors)
    where = path or "<root>"
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(TYPES.get(k, lambda v: True)(value) for k in kinds):
            errors.append(f"{where}: expected {' or '.join(kinds)}, got {_kind(value)}")
            return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']!r}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {value!r}")
    _combinators(value, schema, root, path, errors)
    if isinstance(value, dict):
        _object(value, schema, root, path, errors)
    elif isinstance(value, list):
        _array(value, schema, root, path, errors)
    elif isinstance(value, str):
        _string(value, schema, where, errors)
    elif TYPES["number"](value):
        for key, ok in BOUNDS:
            if key in schema and not ok(value, schema[key]):
                errors.append(f"{where}: {value!r} fails {key}={schema[key]!r}")


def _combinators(value: Any, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    for sub in schema.get("allOf", []):
        _check(value, sub, root, path, errors)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options and not any(not _errs(value, o, root, path) for o in options):
            errors.append(f"{path or '<root>'}: {value!r} matches none of the allowed forms")


def _object(value: dict, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    props = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            errors.append(f"{_join(path, name)}: required field missing")
    for name, item in value.items():
        if name in props:
            _check(item, props[name], root, _join(path, name), errors)
        elif schema.get("additionalProperties") is False:
            errors.append(f"{_join(path, name)}: unexpected field")
        elif isinstance(schema.get("additionalProperties"), dict):
            _check(item, schema["additionalProperties"], root, _join(path, name), errors)


def _array(value: list, schema: dict, root: dict, path: str, errors: list[str]) -> None:
    where = path or "<root>"
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(f"{where}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errors.append(f"{where}: more than {schema['maxItems']} items")
    prefix = schema.get("prefixItems", [])
    for i, item in enumerate(value):
        sub = prefix[i] if i < len(prefix) else schema.get("items")
        _check(item, sub, root, f"{path}[{i}]", errors)


def _string(value: str, schema: dict, where: str, errors: list[str]) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: shorter than {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{where}: longer than {schema['maxLength']} characters")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errors.append(f"{where}: does not match pattern {schema['pattern']!r}")


def _errs(value: Any, schema: Any, root: dict, path: str) -> list[str]:
    found: list[str] = []
    _check(value, schema, root, path, found)
    return found


def _resolve(ref: str, root: dict) -> Any:
    node: Any = root
    for part in ref.removeprefix("#/").split("/") if ref.startswith("#/") else []:
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _kind(value: Any) -> str:
    return next(
        (k for k in ("null", "boolean", "integer", "number", "string", "array", "object") if TYPES[k](value)),
        type(value).__name__,
    )
