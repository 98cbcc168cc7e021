"""`app.distill(task)` end to end on the tiny base: teacher traces → dataset → training → held-out evaluation
→ a student row → promotion by the gate → calls served by the student tier."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel
from student_support import smollm2_base, tiny_base  # noqa: F401 - fixtures

from protege import Policy, Protege, UserError
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage
from protege.distill.pipeline import dir_hash
from protege.distill.train import TrainConfig

SUBJECTS = ["refund please", "app crashes", "double charge", "login broken", "refund my order", "screen is blank",
            "charged twice", "error 500", "refund for May", "crash on save", "invoice wrong", "button missing"]
CONFIG = TrainConfig(max_steps=2, batch_size=4, torch_threads=2)


class Ticket(BaseModel):
    subject: str


class Triage(BaseModel):
    queue: Literal["billing", "bug"]
    priority: int


def oracle(req):
    subject = req.task_input["ticket"]["subject"]
    answer = {"queue": "billing" if any(w in subject for w in ("refund", "charge", "invoice")) else "bug",
              "priority": 2}
    return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=200, output_tokens=20))


@pytest.fixture
def app(tmp_path, tiny_base):
    teacher = FunctionModel(oracle, price_as="anthropic:claude-opus-4-5")
    a = Protege(db=f"sqlite:///{tmp_path}/app.db", teacher=teacher, replay=teacher, project_dir=tmp_path / ".protege",
                student_base=str(tiny_base))
    yield a
    a.close()


def register(app, **policy):
    @app.task(policy=Policy(min_traces=10, **policy))
    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    for subject in SUBJECTS:
        triage(Ticket(subject=subject))
    app.wait()
    return triage


def test_distill_trains_evaluates_records_and_promotes(app):
    """A passing gate promotes the student; its row points at the adapter (hash pinned) and the dataset, its
    metrics carry retention and the training run; the task's calls then go to the student tier."""
    register(app, promote_at=0.0)
    report = app.distill("triage", config=CONFIG)
    assert report.promoted and "≥ Policy.promote_at 0.000" in report.reason
    row = app.store.student(report.student_id)
    assert row.state == "promoted" and row.dataset_id == report.dataset_id and row.base == app.settings.student_base
    assert row.adapter_hash == dir_hash(Path(row.adapter_path)) and Path(row.adapter_path).is_dir()
    metrics = report.metrics
    assert 0.0 <= metrics["retention"] <= 1.0 and metrics["n"] >= 1
    assert metrics["parse_failure_rate"] == 0.0  # constrained decoding: even a random student answers valid JSON
    assert metrics["train"]["steps"] == 2 and metrics["train"]["final_loss"] > 0
    assert row.params["max_steps"] == 2
    result = app.run("triage", {"ticket": {"subject": "refund again"}}, tier="student", escalate=False)
    assert result.tier == "student" and isinstance(result.output, Triage)
    assert result.model == f"local:{report.student_id}"


def test_a_student_below_the_gate_stays_a_candidate(app):
    """Retention under Policy.promote_at: the student is recorded, not promoted, and the report says why."""
    register(app, promote_at=1.0)
    report = app.distill("triage", config=CONFIG)
    assert not report.promoted and "< Policy.promote_at 1.000" in report.reason
    assert app.store.student(report.student_id).state == "candidate"
    assert app.store.promoted_student("triage") is None


def test_too_few_traces_is_a_user_error_unless_forced(app):
    """Below Policy.min_traces distillation refuses with the numbers and the way out; force=True goes ahead."""
    @app.task(policy=Policy(min_traces=50, promote_at=1.0))
    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    for subject in SUBJECTS[:6]:
        triage(Ticket(subject=subject))
    app.wait()
    with pytest.raises(UserError, match=r"has 6 validated traces and Policy.min_traces is 50.*force=True"):
        app.distill("triage")
    assert app.distill("triage", force=True, config=CONFIG, auto_promote=False).student_id
