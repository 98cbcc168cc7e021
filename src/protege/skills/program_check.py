"""Verification of a candidate program: run it in the sandbox on solved inputs and score each answer with the
task's own `score` — the whole output, and each top-level field on its own.

A field's score puts the program's value for that field into the expected answer and scores that hybrid, so a
task's tolerant `score` (case, rounding, order) is tolerant per field too; with the default exact score it is
plain equality of the field. A program may leave out a field it cannot compute: that field scores 0 (the next
tier fills it) while the others can still verify.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from protege.skills.examples import Example

ENTRY = "solve"
FATAL_KINDS = ("timeout", "crash", "memory")  # a candidate that does this twice is dropped without more runs
MAX_FATAL = 2
CLIP = 2000  # characters of a failing case's values kept for the report and the revision prompt


class FailingCase(BaseModel):
    """A held-out input the program got wrong: what it answered (or the error) and which of the fields it
    returned were wrong (a field it left out is the next tier's, not a failure)."""

    trace_id: str | None = None
    input: Any = None
    expected: Any = None
    actual: Any = None
    error: str | None = None
    fields: list[str] = Field(default_factory=list)


class Verification(BaseModel):
    """A candidate's scores on one set of cases: overall and per field, with its failing cases."""

    source: str
    round: int = 0
    cases: int = 0
    agreement: float = 0.0
    field_agreement: dict[str, float] = Field(default_factory=dict)
    failures: list[FailingCase] = Field(default_factory=list)
    errors: dict[str, int] = Field(default_factory=dict)  # sandbox failure kind -> count
    failed_at: list[int] = Field(default_factory=list, exclude=True)  # index of each failure's case
    left_out: list[str] = Field(default_factory=list)  # fields the program did not return on some case

    @property
    def rank(self) -> tuple[float, float]:
        fields = self.field_agreement.values()
        return self.agreement, (sum(fields) / len(fields) if fields else 0.0)


class Scorer:
    """The task's contract for scoring: its output model, `score` and `check` (duck-typed from a TaskSpec)."""

    def __init__(self, task: Any, fields: list[str]):
        self.output_model: type[BaseModel] | None = getattr(task, "output_model", None)
        self.input_model: type[BaseModel] | None = getattr(task, "input_model", None)
        self.score: Callable[[Any, Any], float] = getattr(task, "score", None) or _equal
        self.check: Callable[[Any, Any], bool] | None = getattr(task, "check", None)
        self.fields = fields

    def parse(self, value: Any) -> Any:
        """The answer as the task's output model (raises ValidationError), or the JSON value without one."""
        return self.output_model.model_validate(value) if self.output_model else value

    def whole(self, example: Example, expected: Any, actual: Any) -> tuple[float, str | None]:
        try:
            parsed = self.parse(actual)
        except ValidationError as exc:
            return 0.0, f"invalid answer: {_brief(exc)}"
        if self.check is not None and self.input_model is not None:
            try:
                if not self.check(self.input_model.model_validate(example.input), parsed):
                    return 0.0, "the task's check rejected the answer"
            except Exception as exc:  # a buggy check fails the case, not the verification
                return 0.0, f"check raised {type(exc).__name__}: {exc}"
        return _clamp(self.score(expected, parsed)), None

    def field(self, name: str, expected: Any, actual: Any) -> float:
        if not isinstance(actual, dict) or name not in actual:
            return 0.0
        hybrid = {**_dump(expected), name: actual[name]}
        try:
            return _clamp(self.score(expected, self.parse(hybrid)))
        except (ValidationError, TypeError, ValueError):
            return 0.0


def verify(
    sandbox: Any, source: str, examples: list[Example], scorer: Scorer, *, timeout_s: float, round_no: int = 0
) -> Verification:
    """Score `source` on `examples` (each run in the sandbox); every case counts, a failed run scores 0."""
    totals = {name: 0.0 for name in scorer.fields}
    overall, fatal = 0.0, 0
    failures: list[FailingCase] = []
    failed_at: list[int] = []
    errors: dict[str, int] = {}  # failed runs by kind
    left_out: set[str] = set()
    for index, example in enumerate(examples):
        expected = scorer.parse(example.output)
        if fatal >= MAX_FATAL:
            failed_at.append(index)
            failures.append(_case(example, None, "not run: the program kept timing out or crashing", scorer.fields))
            continue
        result = sandbox.run(source, ENTRY, example.input, timeout_s=timeout_s)
        if not result.ok:
            errors[result.kind] = errors.get(result.kind, 0) + 1
            fatal += result.kind in FATAL_KINDS
            failed_at.append(index)
            failures.append(_case(example, None, f"{result.kind}: {result.error}", scorer.fields))
            continue
        score, problem = scorer.whole(example, expected, result.value)
        overall += score
        returned = set(result.value) if isinstance(result.value, dict) else set()
        left_out.update(name for name in scorer.fields if name not in returned)
        wrong = []
        for name in scorer.fields:
            field_score = scorer.field(name, expected, result.value)
            totals[name] += field_score
            if field_score < 1.0 and name in returned:
                wrong.append(name)
        whole = returned.issuperset(scorer.fields)  # a partial answer is judged on the fields it gave
        if wrong or (whole and score < 1.0) or not isinstance(result.value, dict):
            failed_at.append(index)
            failures.append(_case(example, result.value, problem if whole else None, wrong))
    n = max(len(examples), 1)
    return Verification(
        source=source,
        round=round_no,
        cases=len(examples),
        agreement=overall / n,
        field_agreement={name: total / n for name, total in totals.items()},
        failures=failures,
        errors=errors,
        failed_at=failed_at,
        left_out=[name for name in scorer.fields if name in left_out],
    )


def output_fields(output_schema: dict[str, Any]) -> list[str]:
    """The output's top-level field names; a recursive model's schema is a `$ref` into its `$defs`, resolved."""
    schema = output_schema or {}
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        schema = (schema.get("$defs") or {}).get(ref.removeprefix("#/$defs/")) or {}
    return list(schema.get("properties") or {})


def _case(example: Example, actual: Any, error: str | None, fields: list[str]) -> FailingCase:
    return FailingCase(
        trace_id=example.trace_id,
        input=_clip(example.input),
        expected=_clip(example.output),
        actual=_clip(actual),
        error=error[:CLIP] if error else None,
        fields=list(fields),
    )


def _clip(value: Any) -> Any:
    """Keep a value as is when small; a long one becomes its clipped JSON text (reports stay readable)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= CLIP else text[:CLIP] + "…"


def _dump(value: Any) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    return dict(value) if isinstance(value, dict) else {}


def _equal(expected: Any, actual: Any) -> float:
    return 1.0 if expected == actual else 0.0


def _clamp(value: Any) -> float:
    try:
        return min(max(float(value), 0.0), 1.0)
    except (TypeError, ValueError):
        return 0.0


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '<answer>'}: {e['msg']}" for e in exc.errors(include_url=False)[:4]
    )
