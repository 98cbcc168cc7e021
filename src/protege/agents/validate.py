"""Validation of an answer: it must parse into the output model, then pass the task's `check`."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from protege.tasks import TaskSpec


def validate_answer(spec: TaskSpec, task_input: BaseModel, text: str) -> tuple[BaseModel | None, list[str]]:
    """(parsed output, []) when valid, else (output or None, the reasons it is not)."""
    if not text.strip():
        return None, ["empty answer: the model gave no final JSON"]
    try:
        output = spec.parse_output(strip_fences(text))
    except ValidationError as exc:
        return None, [_describe(e) for e in exc.errors(include_url=False)[:8]]
    if spec.check is None:
        return output, []
    try:
        ok = spec.check(task_input, output)
    except Exception as exc:  # a buggy check is the app's problem, but the call must not crash
        return output, [f"check raised {type(exc).__name__}: {exc}"]
    return output, ([] if ok else [f"check {getattr(spec.check, '__name__', 'check')!r} rejected the answer"])


def _describe(err: ErrorDetails) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "<answer>"
    return f"{loc}: {err.get('msg', 'invalid')}"


def strip_fences(text: str) -> str:
    """Models sometimes wrap JSON in ```json fences; accept that, nothing looser."""
    t = text.strip()
    if t.startswith("```") and t.endswith("```"):
        t = t[3:-3].strip()
        if t.startswith("json"):
            t = t[4:]
    return t
