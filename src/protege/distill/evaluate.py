"""Held-out evaluation of a student against the teacher (DESIGN §8 step 7).

The student answers every eval input with the same prompt it was trained on (the row's messages minus the
answer), in batches when the model decodes several at once (`LocalModel`). Its parsed answers are scored
against the teacher's validated outputs and, when rows carry reference labels, against those too. `retention` =
student score / teacher score, where the teacher score is the teacher's own agreement with the references (1.0
when there are none: the teacher is then the reference).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from protege.agents.fixed_fields import with_fixed
from protege.agents.models.base import Message, Model, ModelRequest, ModelResponse
from protege.agents.results import gate_confidence
from protege.errors import UserError

ScoreFn = Callable[[Any, Any], float]
MAX_EXAMPLES = 20
EVAL_CHUNK = 32  # requests handed to a batching model at once: it sorts them by length, so batches pad little
T = TypeVar("T")


class Mismatch(BaseModel):
    """One eval input the student got wrong (kept for the report; the first few only)."""

    input: Any
    expected: Any
    actual: str


class EvalReport(BaseModel):
    """How a student did on held-out inputs."""

    n: int
    student_score: float = Field(description="mean score against the teacher's outputs")
    exact_match: float = Field(description="share of answers equal to the teacher's")
    reference_score: float | None = Field(default=None, description="mean score against reference labels, when present")
    teacher_score: float = Field(default=1.0, description="teacher's agreement with the references (1.0 without them)")
    retention: float = Field(description="student score / teacher score, on references when present")
    field_accuracy: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "per output field: share of answers whose field equals the teacher's (an unparseable answer misses all)"
        ),
    )
    kind_accuracy: dict[str, float] = Field(
        default_factory=dict,
        description=(
            "per field kind (e.g. copied / computed, when the kinds are known): share of right fields of that kind"
        ),
    )
    parse_failure_rate: float = Field(
        default=0.0, description="share of answers that fail to parse or were cut short (invalid, as in the cascade)"
    )
    mean_confidence: float | None = None
    mean_latency_s: float = Field(
        default=0.0, description="seconds per answer (batched: a chunk's wall time / its answers)"
    )
    median_latency_s: float = 0.0
    tokens_per_s: float = Field(default=0.0, description="output tokens per second of generation")
    mismatches: list[Mismatch] = Field(default_factory=list)
    scores: list[float] = Field(default_factory=list, description="each answer's score vs the teacher, in row order")
    confidences: list[float | None] = Field(
        default_factory=list,
        description=(
            "each answer's gate confidence, row order: its least-sure field's confidence, else the answer's (what "
            "the cascade's gate compares with the floor); 0.0 for an answer that fails validation (the cascade "
            "escalates it whatever its confidence, so a confidence gate must not count it as kept)"
        ),
    )
    field_confidences: list[dict[str, float] | None] = Field(
        default_factory=list,
        description=(
            "each answer's per-field confidences (field → its least-sure token's probability), row order; None where "
            "the model gives none"
        ),
    )


def exact_score(expected: Any, actual: Any) -> float:
    """Default score: 1.0 when the parsed outputs are equal, else 0.0."""
    return 1.0 if expected == actual else 0.0


def evaluate_student(
    model: Model,
    eval_rows: Sequence[dict[str, Any]],
    *,
    output_model: type[BaseModel],
    score: ScoreFn | None = None,
    reference_key: str = "reference",
    progress: Callable[[int, int], None] | None = None,
    field_kinds: Mapping[str, str] | None = None,
    fixed: Sequence[Mapping[str, Any]] | None = None,
) -> EvalReport:
    """Answer every eval row with `model` and score it (see module doc). Rows: input, output, messages[, reference].
    `field_kinds` (output field → its kind) adds the accuracy per kind, so the misses show where they gather.
    `fixed` (one mapping per row): the fields programs decide for that row, which the model is handed as fixed
    and the answer carries, as the cascade serves a student behind its task's programs."""
    if not eval_rows:
        raise UserError("eval_rows is empty; hold out some traces for evaluation (the dataset split does this)")
    if fixed is not None and len(fixed) != len(eval_rows):
        raise UserError(f"fixed has {len(fixed)} entries for {len(eval_rows)} eval rows; give one mapping per row")
    score = score or exact_score
    schema = output_model.model_json_schema()
    values = [dict(f) for f in fixed] if fixed is not None else [{} for _ in eval_rows]
    requests = [_request(row, schema, i, values[i]) for i, row in enumerate(eval_rows)]
    started = time.perf_counter()
    responses = [(_with_values(r, v), t) for (r, t), v in zip(_answer_all(model, requests, progress), values)]
    wall = time.perf_counter() - started
    report = _report(eval_rows, responses, output_model, score, reference_key, wall)
    report.kind_accuracy = kind_accuracy(report.field_accuracy, field_kinds or {})
    return report


def kind_accuracy(field_accuracy: Mapping[str, float], field_kinds: Mapping[str, str]) -> dict[str, float]:
    """Mean field accuracy per kind; every field counts once per answer, so each kind's figure is the share of
    its fields the student got right. Fields without a known kind are left out."""
    by_kind: dict[str, list[float]] = {}
    for name, accuracy in field_accuracy.items():
        if name in field_kinds:
            by_kind.setdefault(field_kinds[name], []).append(accuracy)
    return {kind: _mean(values) for kind, values in sorted(by_kind.items())}


def _request(row: dict[str, Any], schema: dict[str, Any], index: int, fixed: dict[str, Any]) -> ModelRequest:
    messages = row.get("messages")
    if not messages or "output" not in row:
        raise UserError(
            f"eval_rows[{index}] needs 'messages' and 'output' (the teacher's answer); got keys {sorted(row)!r}"
        )
    prompt = messages[:-1] if messages[-1].get("role") == "assistant" else messages
    return ModelRequest(
        messages=[Message(role=m["role"], content=m.get("content") or "") for m in prompt],
        output_schema=schema,
        task_input=row.get("input"),
        fixed_output=fixed or None,
    )


def _with_values(response: ModelResponse, fixed: dict[str, Any]) -> ModelResponse:
    """The answer with the program-decided fields put in, as the cascade does (`with_fixed`)."""
    if not fixed or not response.text:
        return response
    return response.model_copy(update={"text": with_fixed(response.text, fixed)})


def _answer_all(model: Model, requests: list[ModelRequest], progress) -> list[tuple[ModelResponse, float]]:
    """(response, seconds per answer) per request; a failed answer gets an empty response. A model that can
    batch (`LocalModel.generate_batch`) gets EVAL_CHUNK requests at a time, and each answer's seconds are then
    its chunk's wall time shared among the chunk's answers."""
    batch = getattr(model, "generate_batch", None)
    size = EVAL_CHUNK if batch else 1
    out: list[tuple[ModelResponse, float]] = []
    for start in range(0, len(requests), size):
        chunk = requests[start : start + size]
        started = time.perf_counter()
        answers = batch(chunk, return_exceptions=True) if batch else [_answer_one(model, chunk[0])]
        each = (time.perf_counter() - started) / len(chunk)
        out += [(_failed(answer) if isinstance(answer, Exception) else answer, each) for answer in answers]
        if progress:
            progress(len(out), len(requests))
    return out


def _answer_one(model: Model, request: ModelRequest) -> ModelResponse | Exception:
    try:
        return _run_sync(model.request(request))
    except Exception as exc:  # a failed answer is a failed answer; the report counts it
        return exc


def _failed(exc: Exception) -> ModelResponse:
    return ModelResponse(text="", raw={"error": repr(exc)})


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when called from inside a running event loop (in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: dict[str, Any] = {}

    def runner() -> None:
        try:
            result["value"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=runner)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def _parse(output_model: type[BaseModel], data: Any) -> BaseModel | None:
    try:
        if isinstance(data, str):
            return output_model.model_validate_json(data)
        return output_model.model_validate(data)
    except ValidationError:
        return None


def _report(rows, responses, output_model, score, reference_key, wall) -> EvalReport:
    scores, exact, ref_scores, teacher_scores, confidences, latencies = [], [], [], [], [], []
    field_hits: dict[str, list[float]] = {}
    failures, tokens, gate_confidences, per_field = 0, 0, [], []
    mismatches: list[Mismatch] = []
    for row, (response, latency) in zip(rows, responses):
        teacher = _parse(output_model, row["output"])
        student = None if response.cut_short else _parse(output_model, response.text)  # as the cascade: invalid
        latencies.append(latency)
        tokens += response.usage.output_tokens
        if response.confidence is not None:
            confidences.append(response.confidence)
        if student is None:
            failures += 1
        per_field.append(response.field_confidences)
        gated = gate_confidence(response.confidence, response.field_confidences)
        gate_confidences.append(gated if student is not None else 0.0)
        value = score(teacher, student) if student is not None else 0.0
        scores.append(value)
        exact.append(1.0 if student is not None and student == teacher else 0.0)
        _count_fields(field_hits, teacher, student)
        if value < 1.0 and len(mismatches) < MAX_EXAMPLES:
            mismatches.append(Mismatch(input=row.get("input"), expected=row["output"], actual=response.text))
        reference = row.get(reference_key)
        if reference is not None:
            ref = _parse(output_model, reference)
            if ref is not None:
                ref_scores.append(score(ref, student) if student is not None else 0.0)
                teacher_scores.append(score(ref, teacher) if teacher is not None else 0.0)
    n = len(rows)
    reference_score = _mean(ref_scores) if ref_scores else None
    teacher_score = _mean(teacher_scores) if teacher_scores else 1.0
    student_score = _mean(scores)
    basis = reference_score if reference_score is not None else student_score
    return EvalReport(
        n=n,
        student_score=student_score,
        exact_match=_mean(exact),
        reference_score=reference_score,
        teacher_score=teacher_score,
        retention=basis / teacher_score if teacher_score > 0 else 0.0,
        field_accuracy={name: _mean(hits) for name, hits in field_hits.items()},
        parse_failure_rate=failures / n,
        mean_confidence=_mean(confidences) if confidences else None,
        mean_latency_s=_mean(latencies),
        median_latency_s=statistics.median(latencies),
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        mismatches=mismatches,
        scores=scores,
        confidences=gate_confidences,
        field_confidences=per_field,
    )


def _count_fields(hits: dict[str, list[float]], teacher: BaseModel | None, student: BaseModel | None) -> None:
    if teacher is None:
        return
    for name in type(teacher).model_fields:
        right = student is not None and getattr(student, name) == getattr(teacher, name)
        hits.setdefault(name, []).append(1.0 if right else 0.0)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
