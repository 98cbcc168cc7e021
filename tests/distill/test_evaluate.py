"""Held-out evaluation (DESIGN §8 step 7) with deterministic FunctionModel students: scores, exact match,
per-field accuracy, parse failures, reference labels and retention."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel
from student_support import chat_row

from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse
from protege.distill.evaluate import evaluate_student
from protege.errors import UserError


class Triage(BaseModel):
    queue: Literal["billing", "bug", "other"]
    priority: int


TEACHER = {
    "refund": {"queue": "billing", "priority": 2},
    "crash": {"queue": "bug", "priority": 1},
    "hello": {"queue": "other", "priority": 3},
    "invoice": {"queue": "billing", "priority": 3},
}


def rows(references: dict | None = None) -> list[dict]:
    return [
        chat_row(
            "Triage the ticket.",
            {"subject": s},
            out,
            **({"reference": references[s]} if references and s in references else {}),
        )
        for s, out in TEACHER.items()
    ]


def student(answers: dict):
    """A student that answers from the structured input: a dict is a JSON answer, a str is raw text."""
    return FunctionModel(lambda req: answers[req.task_input["subject"]], name="function:student")


def sure(answers: dict):
    """`student`, answering with confidence 0.9."""

    def answer(req):
        text = answers[req.task_input["subject"]]
        return ModelResponse(text=text if isinstance(text, str) else json.dumps(text), confidence=0.9)

    return FunctionModel(answer, name="function:sure")


def test_a_perfect_student_retains_everything():
    """Answers equal to the teacher's: every score is 1, nothing fails to parse, all fields right."""
    report = evaluate_student(student(TEACHER), rows(), output_model=Triage)
    assert (report.n, report.student_score, report.exact_match, report.retention) == (4, 1.0, 1.0, 1.0)
    assert report.parse_failure_rate == 0.0 and report.mismatches == []
    assert report.field_accuracy == {"queue": 1.0, "priority": 1.0}
    assert report.reference_score is None and report.teacher_score == 1.0


def test_wrong_and_unparseable_answers_are_counted_apart():
    """One answer with a wrong field, one that is not JSON, one that breaks the schema: exact match 1/4,
    two parse failures, field accuracy per field, and each miss kept as a mismatch with the raw text."""
    answers = {
        **TEACHER,
        "crash": {"queue": "bug", "priority": 2},
        "hello": "I think it's other",
        "invoice": {"queue": "sales", "priority": 3},
    }
    report = evaluate_student(student(answers), rows(), output_model=Triage)
    assert report.exact_match == 0.25 and report.student_score == 0.25 and report.retention == 0.25
    assert report.parse_failure_rate == 0.5
    assert report.field_accuracy == {"queue": 0.5, "priority": 0.25}
    assert [m.input["subject"] for m in report.mismatches] == ["crash", "hello", "invoice"]
    assert report.mismatches[1].actual == "I think it's other"
    # for the confidence gate an invalid answer has confidence 0: the cascade escalates it whatever it was
    assert evaluate_student(sure(answers), rows(), output_model=Triage).confidences == [0.9, 0.9, 0.0, 0.0]


@pytest.mark.parametrize("stop_reason", ["max_tokens", "bound"])
def test_an_answer_cut_short_is_invalid_even_when_it_parses(stop_reason):
    """A decoder that hit its token limit or a learned bound may still have closed valid JSON (the loop of #15):
    it counts as a failed answer, wrong and with gate confidence 0, as the cascade escalates it."""

    def answer(req):
        cut = req.task_input["subject"] == "crash"
        text = json.dumps(TEACHER[req.task_input["subject"]])
        return ModelResponse(text=text, confidence=0.99, stop_reason=stop_reason if cut else "end_turn")

    report = evaluate_student(FunctionModel(answer), rows(), output_model=Triage)
    assert report.exact_match == 0.75 and report.parse_failure_rate == 0.25
    assert report.confidences == [0.99, 0.0, 0.99, 0.99]
    assert [m.input["subject"] for m in report.mismatches] == ["crash"]


def test_the_gate_goes_by_the_least_sure_field_and_accuracy_is_given_per_kind():
    """Per-field confidences are kept per answer; the gate's figure is the least-sure field's (the answer's
    own confidence only where a model gives none per field); field accuracy is pooled per field kind."""

    def answer(req):
        subject = req.task_input["subject"]
        fields = None if subject == "hello" else {"queue": 0.99, "priority": 0.3 if subject == "crash" else 0.8}
        return ModelResponse(
            text=json.dumps({**TEACHER[subject], "priority": 1}), confidence=0.95, field_confidences=fields
        )

    report = evaluate_student(
        FunctionModel(answer), rows(), output_model=Triage, field_kinds={"queue": "copied", "priority": "computed"}
    )
    assert report.confidences == [0.8, 0.3, 0.95, 0.8]
    assert report.field_confidences[1] == {"queue": 0.99, "priority": 0.3} and report.field_confidences[2] is None
    assert report.field_accuracy == {"queue": 1.0, "priority": 0.25}
    assert report.kind_accuracy == {"computed": 0.25, "copied": 1.0}
    assert evaluate_student(FunctionModel(answer), rows(), output_model=Triage).kind_accuracy == {}


def test_a_custom_score_gives_partial_credit():
    """The task's `score` decides quality (here: half a point per right field); exact match stays strict."""

    def per_field(expected: Triage, actual: Triage) -> float:
        return ((expected.queue == actual.queue) + (expected.priority == actual.priority)) / 2

    answers = {**TEACHER, "crash": {"queue": "bug", "priority": 5}}
    report = evaluate_student(student(answers), rows(), output_model=Triage, score=per_field)
    assert report.student_score == pytest.approx(3.5 / 4) and report.exact_match == 0.75


def test_retention_is_measured_on_reference_labels_when_they_exist():
    """With labels, the teacher's own score counts: a teacher right on 1 of 2 labelled rows scores 0.5, a
    student right on the same one retains 100%, even though it disagrees with the teacher elsewhere."""
    references = {"refund": {"queue": "billing", "priority": 2}, "crash": {"queue": "bug", "priority": 9}}
    answers = {**TEACHER, "hello": {"queue": "bug", "priority": 3}}
    report = evaluate_student(student(answers), rows(references), output_model=Triage)
    assert report.teacher_score == 0.5 and report.reference_score == 0.5
    assert report.retention == 1.0 and report.student_score == 0.75


def test_a_model_error_is_a_failed_answer_not_a_crash():
    """A student that raises on one input: that input counts as unparseable, the rest are still scored."""

    def flaky(req):
        if req.task_input["subject"] == "crash":
            raise RuntimeError("out of memory")
        return TEACHER[req.task_input["subject"]]

    report = evaluate_student(FunctionModel(flaky), rows(), output_model=Triage)
    assert report.exact_match == 0.75 and report.parse_failure_rate == 0.25


async def test_it_runs_inside_an_event_loop_too():
    """Called from async code (a notebook, a server) it still answers every row."""
    report = evaluate_student(student(TEACHER), rows(), output_model=Triage)
    assert report.exact_match == 1.0


def test_progress_and_latency_are_reported():
    """progress(done, total) is called once per row; latencies are measured per answer."""
    seen: list[tuple[int, int]] = []
    report = evaluate_student(student(TEACHER), rows(), output_model=Triage, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert report.mean_latency_s > 0 and report.median_latency_s > 0


def test_bad_rows_are_user_errors():
    """No rows, or rows without the teacher's output, say what is missing."""
    with pytest.raises(UserError, match="eval_rows is empty"):
        evaluate_student(student(TEACHER), [], output_model=Triage)
    row = rows()[0]
    del row["output"]
    with pytest.raises(UserError, match=r"eval_rows\[0\] needs 'messages' and 'output'"):
        evaluate_student(student(TEACHER), [row], output_model=Triage)


def test_fields_programs_decide_are_handed_to_the_model_and_put_in_its_answer():
    """`fixed`: per row, the fields programs decide — in the request (`fixed_output`, so a grammar writes them) and
    in the scored answer whatever the model wrote there, as the cascade serves a student behind its programs."""
    seen = []

    def answer(req):
        seen.append(req.fixed_output)
        return ModelResponse(text=json.dumps({"queue": "other", "priority": 9}), confidence=0.9)

    fixed = [{"queue": "billing", "priority": 2}, {"queue": "bug"}, {}, {"priority": 3}]
    report = evaluate_student(FunctionModel(answer), rows(), output_model=Triage, fixed=fixed)
    assert seen == [{"queue": "billing", "priority": 2}, {"queue": "bug"}, None, {"priority": 3}]
    assert report.scores == [1.0, 0.0, 0.0, 0.0]
    assert report.field_accuracy == {"queue": 0.75, "priority": 0.5}  # "hello" is "other" anyway
    with pytest.raises(UserError, match=r"fixed has 1 entries for 4 eval rows"):
        evaluate_student(FunctionModel(answer), rows(), output_model=Triage, fixed=[{}])
