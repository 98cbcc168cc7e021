"""The fields verified programs decide for a call, and how they enter a model's answer: the cascade serves them
this way, and `evaluate_student(fixed=...)` judges a student the same way."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from protege.agents.validate import strip_fences


async def decide_fields(programs: Any, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The fields programs decide for this input, and any program failure to record (authored programs run in a
    sandbox, asynchronously: `adecide`; an induced ProgramSet applies in-process)."""
    adecide = getattr(programs, "adecide", None)
    if adecide is None:
        return program_values(programs, data), []
    try:
        return await adecide(data)
    except Exception as exc:  # never fail the call: the models answer every field instead
        logging.getLogger("protege").exception("field programs failed on an input; the models answer it")
        return {}, [f"field programs failed: {type(exc).__name__}: {exc}"[:500]]


def defer_to_student(fixed: dict[str, Any], programs: Any, student: Mapping[str, float] | None) -> dict[str, Any]:
    """Leave to the promoted student the fields it got right more often (`student`: its exact match per field on
    its eval split) than their program did on held-out traces: a program right 98% of the time must not overrule
    a student right 100%."""
    accuracy = getattr(programs, "field_accuracy", None)
    if not student or accuracy is None:
        return fixed
    programs_right = accuracy()
    return {f: v for f, v in fixed.items() if student.get(f, 0.0) <= programs_right.get(f, 1.0)}


def program_values(programs: Any, data: dict[str, Any]) -> dict[str, Any]:
    """The output fields verified programs decide for this input (a program that refuses decides nothing)."""
    if programs is None:
        return {}
    try:
        values, _refused = programs.apply(data)
    except Exception:  # a fault in a program must never fail the call: the models answer every field instead
        logging.getLogger("protege").exception("field programs failed on an input; the models answer it")
        return {}
    return values


def with_fixed(text: str, fixed: dict[str, Any]) -> str:
    """A model's JSON answer with the program-decided fields put in (a model that did not honour them is
    overruled: the programs are verified, the model's guess for those fields is not). Non-JSON stays as is."""
    try:
        answer = json.loads(strip_fences(text))
    except ValueError:
        return text
    if not isinstance(answer, dict):
        return text
    return json.dumps({**answer, **fixed}, ensure_ascii=False)
