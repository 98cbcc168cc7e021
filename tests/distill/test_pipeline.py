"""`app.distill(task)` end to end on the tiny base: teacher traces → dataset → training → held-out evaluation
→ a student row → promotion by the gate → calls served by the student tier."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field
from triage_support import SUBJECTS

from protege import Policy, Protege, UserError
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage
from protege.distill.pipeline import dir_hash, refused_because
from protege.distill.train import TrainConfig

CONFIG = TrainConfig(max_steps=2, batch_size=4, torch_threads=2)


class Ticket(BaseModel):
    subject: str


class Triage(BaseModel):
    queue: Literal["billing", "bug"]
    priority: int = Field(ge=1, le=5)  # a bounded range: a random student cannot run away into an 18-digit number


def oracle(req):
    if "case" in req.task_input:
        return _filed(req)
    subject = req.task_input["ticket"]["subject"]
    answer = {
        "queue": "billing" if any(w in subject for w in ("refund", "charge", "invoice")) else "bug",
        "priority": 2,
    }
    return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=200, output_tokens=20))


@pytest.fixture
def app(tmp_path, tiny_base):
    teacher = FunctionModel(oracle, price_as="anthropic:claude-opus-4-5")
    a = Protege(
        db=f"sqlite:///{tmp_path}/app.db",
        teacher=teacher,
        replay=teacher,
        project_dir=tmp_path / ".protege",
        student_base=str(tiny_base),
    )
    yield a
    a.close()


def register(app, **policy):
    # ~3 eval answers: promotion is what these tests check, so the minimum eval split is lifted (see below)
    @app.task(policy=Policy(**{"min_traces": 10, "min_eval": 1, **policy}))
    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    for subject in SUBJECTS:
        triage(Ticket(subject=subject))
    app.wait()
    return triage


@pytest.mark.parametrize("method", ["full", "lora"])
def test_distill_trains_evaluates_records_and_promotes(app, method):
    """A passing gate promotes the student; its row points at its weights (full, or an adapter; hash pinned) and
    the dataset, its metrics carry retention and the training run; the task's calls then go to the student tier.
    The finished student keeps no training checkpoints (a new distill never resumes them)."""
    register(app, promote_at=0.0)
    report = app.distill("triage", config=CONFIG.model_copy(update={"method": method}))
    assert report.promoted and "≥ Policy.promote_at 0.000" in report.reason
    row = app.store.student(report.student_id)
    assert row.state == "promoted" and row.dataset_id == report.dataset_id and row.base == app.settings.student_base
    assert row.adapter_hash == dir_hash(Path(row.adapter_path)) and Path(row.adapter_path).is_dir()
    metrics = report.metrics
    assert 0.0 <= metrics["retention"] <= 1.0 and metrics["n"] >= 1
    assert metrics["parse_failure_rate"] == 0.0  # constrained decoding: even a random student answers valid JSON
    assert metrics["train"]["steps"] == 2 and metrics["train"]["final_loss"] > 0
    assert (report.retention, report.coverage, report.measured_on) == (metrics["retention"], 1.0, "eval split, no gate")
    assert metrics["headline"]["measured_on"] == "eval split, no gate"
    assert row.params["max_steps"] == 2 and row.params["method"] == method
    weights = {"full": "model.safetensors", "lora": "adapter_model.safetensors"}[method]
    assert (Path(row.adapter_path) / weights).is_file()
    assert [p.name for p in Path(row.adapter_path).parent.iterdir()] == ["adapter"]
    result = app.run("triage", {"ticket": {"subject": "refund again"}}, tier="student", escalate=False)
    assert result.tier == "student" and isinstance(result.output, Triage)
    assert result.model == f"local:{report.student_id}"
    assert (
        json.loads((Path(row.adapter_path) / "protege_answers.json").read_text())["fields"]["queue"]["kind"] == "enum"
    )
    assert metrics["field_kinds"] == {"queue": "enum", "priority": "enum"}


def test_a_student_below_the_gate_stays_a_candidate(app):
    """Retention under Policy.promote_at: the student is recorded, not promoted, and the report says why."""
    register(app, promote_at=1.0)
    report = app.distill("triage", config=CONFIG)
    assert not report.promoted and "< Policy.promote_at 1.000" in report.reason
    row = app.store.student(report.student_id)
    assert row.state == "candidate" and refused_because(row.metrics) == report.reason  # for who promotes by hand
    assert app.store.promoted_student("triage") is None


def test_a_student_judged_on_too_few_eval_answers_stays_a_candidate(app):
    """Retention 1.0 on a handful of eval answers says next to nothing: under Policy.min_eval the student is kept
    as a candidate, and the reason says how many answers it was judged on and what to do."""
    register(app, promote_at=0.0, min_eval=20)
    report = app.distill("triage", config=CONFIG)
    n = report.metrics["n"]
    assert n < 20 and not report.promoted and app.store.student(report.student_id).state == "candidate"
    assert f"judged on {n} eval answer" in report.reason and "fewer than Policy.min_eval 20" in report.reason
    assert "promote it by hand" in report.reason


def test_too_few_traces_is_a_user_error_unless_forced(app):
    """Below Policy.min_traces distillation refuses with the numbers and the way out; force=True goes ahead."""

    @app.task(policy=Policy(min_traces=50, promote_at=1.0))
    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    for subject in SUBJECTS[:6]:
        triage(Ticket(subject=subject))
    app.wait()
    with pytest.raises(UserError, match=r"has 6 teacher or imported traces to train on and Policy.min_traces is 50"):
        app.distill("triage")
    with app.store.session() as s:  # replay answers pass no gate: counted, they left a handful of rows to train on
        for t in app.store.traces("triage"):
            s.add(t.model_copy(update={"id": t.id + "r", "tier": "replay"}))
        s.commit()
    with pytest.raises(UserError, match=r"has 6 teacher or imported traces"):
        app.distill("triage")
    assert app.distill("triage", force=True, config=CONFIG, auto_promote=False).student_id


def test_a_student_trained_by_the_launch_script_is_adopted(app, tmp_path):
    """`python -m protege.distill.launch DATASET OUT` (what `accelerate launch` runs on several GPUs), then
    `app.distill(task, adapter=OUT)`: no training here; the student is copied into the project, evaluated on the
    held-out split, recorded with its training run, promoted by the gate and served."""
    from protege.distill.dataset import build_dataset
    from protege.distill.launch import main as launch

    triage = register(app, promote_at=0.0)
    built = build_dataset(app.store, "triage", instructions=triage.spec.instructions, out_dir=tmp_path / "ds")
    out = tmp_path / "launched"
    assert (
        launch(
            [
                str(built.path),
                str(out),
                "--base",
                app.settings.student_base,
                "--config",
                '{"max_steps": 2, "batch_size": 4, "torch_threads": 2}',
            ]
        )
        == 0
    )
    # a distill of this task killed mid-run (an auto-distill worker, say) left its folder: the next one sweeps it
    import socket
    import subprocess
    import sys

    from protege.distill.prune import IN_PROGRESS_FILE

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = app.settings.project_dir / "students" / "triage" / "killed-run"
    (dead / "adapter").mkdir(parents=True)
    (dead / IN_PROGRESS_FILE).write_text(f"{socket.gethostname()} {gone.stdout.strip()}")
    report = app.distill("triage", adapter=out)
    assert not dead.exists()
    row = app.store.student(report.student_id)
    assert report.promoted and Path(row.adapter_path).is_relative_to(app.settings.project_dir)
    assert row.adapter_hash == dir_hash(Path(row.adapter_path))  # the copy, with the answer profile learned here
    copied = {p.name for p in Path(row.adapter_path).iterdir()}
    assert copied == {p.name for p in (out / "adapter").iterdir()} | {"protege_answers.json"}
    assert report.metrics["train"]["steps"] == 2 and report.metrics["train"]["trained_elsewhere"] == str(out)
    assert row.params["batch_size"] == 4 and report.metrics["n"] >= 1
    assert row.params["prompt"] == "summary"  # the default style, served as it was trained
    result = app.run("triage", {"ticket": {"subject": "refund again"}}, tier="student", escalate=False)
    assert result.model == f"local:{report.student_id}"

    from protege.distill.pipeline import adopt_student

    older = tmp_path / "older"  # a student launched before the prompt styles: it saw the whole instructions
    shutil.copytree(out / "adapter", older)
    meta = json.loads((older / "protege_student.json").read_text())
    del meta["config"]["prompt"]
    (older / "protege_student.json").write_text(json.dumps(meta))
    assert adopt_student(older, app.base_dir(app.settings.student_base), tmp_path / "f")[1].prompt == "instructions"


def test_an_adapter_that_is_no_student_or_on_another_base_is_refused(app, tmp_path):
    """Before anything is recorded: a folder without protege's metadata, a student of another base, and
    adapter= together with config= are user errors that say what to do."""
    register(app)
    with pytest.raises(UserError, match="not a student protege trained.*protege.distill.launch"):
        app.distill("triage", adapter=tmp_path)
    other = tmp_path / "other" / "adapter"
    other.mkdir(parents=True)
    (other / "protege_student.json").write_text(json.dumps({"base": "/models/llama-3-8b", "metrics": {}}))
    with pytest.raises(UserError, match="trained on base '/models/llama-3-8b'"):
        app.distill("triage", adapter=other.parent)
    with pytest.raises(UserError, match="either adapter= .* or config="):
        app.distill("triage", adapter=other.parent, config=CONFIG)
    with pytest.raises(UserError, match="'/nonexistent' does not exist; pass the OUT folder"):
        app.distill("triage", adapter="/nonexistent")
    assert app.store.students("triage") == []
    assert app.store.datasets("triage") == []  # checked before a dataset is built and written


class Case(BaseModel):
    note: str


class Filed(BaseModel):
    ref: str
    queue: Literal["billing", "bug"]


def _filed(req):
    note = req.task_input["case"]["note"]
    answer = {"ref": note.split("ref ")[1].split()[0], "queue": "bug"}
    return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=200, output_tokens=20))


def _register_filed(app, **policy):
    @app.task(policy=Policy(**{"min_traces": 10, "min_eval": 1, **policy}))
    def file_case(case: Case) -> Filed:
        """File a case under its reference and queue."""

    for i in range(60):
        file_case(Case(note=f"{SUBJECTS[i % len(SUBJECTS)]} (ref CX-{1000 + 37 * i} from desk {i % 7})"))
    app.wait()


def test_a_student_is_judged_behind_the_programs_that_will_serve_with_it(app):
    """Where field programs decide fields, the student is judged a second time as the cascade serves it: programs
    induced without the eval split's traces fix those fields, the student answers the rest. Promotion and the
    headline go by that judgement; the student's own figures stay beside it."""
    _register_filed(app, promote_at=1.0)
    report = app.distill("file_case", config=CONFIG)
    served = report.metrics["served"]
    assert served["programs"] == ["queue", "ref"] and served["fields_fixed_mean"] == 2.0
    assert served["field_accuracy"] == {"ref": 1.0, "queue": 1.0} and served["retention"] == 1.0
    assert served["n"] == report.metrics["n"] and len(served["scores"]) == len(served["confidences"]) == served["n"]
    assert served["confidences"] == [None] * served["n"]  # every field fixed: the program tier's calls, ungated
    assert report.promoted and report.retention == 1.0 and report.reason.startswith("served behind its field programs")
    assert report.measured_on == "eval split, no gate, behind its field programs"


@pytest.mark.parametrize("policy", [{"program": False}, {"program_min_traces": 1000}])
def test_a_student_is_judged_alone_when_its_task_serves_no_programs(app, policy):
    """Policy(program=False), or no programs induced yet: the cascade serves none, so the student is judged by its
    own answers (a smaller induction without the eval split would find the same two programs)."""
    _register_filed(app, promote_at=0.0, **policy)
    report = app.distill("file_case", config=CONFIG)
    assert "served" not in report.metrics and report.measured_on == "eval split, no gate"


def test_the_programs_a_student_is_judged_behind_never_saw_its_eval_split(app):
    """`programs.without(task, held_out)` induces from the task's teacher traces minus those whose inputs hash to
    `held_out`: the student's eval answers are not judged by programs induced on them."""
    from protege.tasks import input_hash

    _register_filed(app)
    traces = app.store.traces("file_case", tier="teacher", limit=None)
    everything = app.programs.without("file_case", set())
    half = app.programs.without("file_case", {input_hash(t.input) for t in traces[:30]})
    nothing = app.programs.without("file_case", {input_hash(t.input) for t in traces})
    assert (everything.traces, half.traces, nothing.traces) == (len(traces), len(traces) - 30, 0)
    assert not nothing.served and sorted(everything.served) == ["queue", "ref"]


def test_promotion_and_its_gate_go_by_the_judgement_behind_the_programs():
    """A student whose own answers fail the bar but whose answers behind the programs pass it is promoted, behind
    a floor calibrated on the answers as served; without that judgement the same student is refused."""
    from protege.distill.pipeline import promotion_verdict

    alone = {"retention": 0.5, "scores": [1.0, 0.0] * 10, "confidences": [0.9] * 20}
    served = {"retention": 0.9, "scores": [1.0] * 18 + [0.0] * 2, "confidences": [0.9] * 18 + [0.2] * 2}
    metrics = {**alone, "served": served}
    passed, reason = promotion_verdict(metrics, Policy(promote_at=0.95))
    assert passed and reason.startswith("served behind its field programs, retention 0.900 < Policy.promote_at 0.950")
    assert " ungated; gated at confidence ≥ 0.900" in reason
    assert metrics["gate"]["min_confidence"] == 0.9 and metrics["gate"]["coverage"] == 0.9
    assert promotion_verdict(dict(alone), Policy(promote_at=0.95)) == (
        False,
        "retention 0.500 < Policy.promote_at 0.950, and no confidence floor reaches it",
    )


def test_an_interrupted_or_failed_distill_leaves_no_folder(app, monkeypatch):
    """Ctrl-C after epoch 1 left ~1 GB of weights and checkpoints in students/<task>/<id> with no row (prune never
    saw it); a distill that fails while evaluating left its weights too."""
    from types import SimpleNamespace

    import protege.distill.answer_kinds as answer_kinds
    import protege.distill.pipeline as pipeline
    import protege.distill.train as train
    from protege.distill.train import TrainResult

    register(app, promote_at=0.0)
    students = app.settings.project_dir / "students" / "triage"

    def interrupted(rows, base, folder, config, **kw):
        (folder / "checkpoints" / "checkpoint-5").mkdir(parents=True)
        (folder / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(b"w" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_student", interrupted)
    with pytest.raises(KeyboardInterrupt):
        app.distill("triage", config=CONFIG)
    assert list(students.iterdir()) == []

    def trained(rows, base, folder, config, **kw):
        (folder / "adapter").mkdir(parents=True)
        return TrainResult(
            adapter_path=folder / "adapter", base="b", method="full", loss_history=[], train_tokens=1,
            tokens_per_s=1.0, wall_s=1.0, steps=1, rows=1,
        )  # fmt: skip

    def evaluation_fails(*args, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(train, "train_student", trained)
    monkeypatch.setattr(answer_kinds, "learn_for_student", lambda *args, **kw: SimpleNamespace(kinds=dict))
    monkeypatch.setattr(pipeline, "_evaluate", evaluation_fails)
    with pytest.raises(RuntimeError, match="out of memory"):
        app.distill("triage", config=CONFIG)
    assert list(students.iterdir()) == [] and app.store.students("triage") == []


class BugsOnly(BaseModel):
    queue: Literal["bug"]  # the billing answers of earlier versions no longer fit
    priority: int = Field(ge=1, le=5)


def test_min_traces_counts_the_traces_the_dataset_will_use(app):
    """After a contract change min_traces counted every version's traces while the dataset dropped the stale ones:
    min_traces=60 with 80 traces of v1 and 2 of v2 trained on 1 row. Earlier versions with other instructions are
    not counted; those with the same instructions whose answers no longer fit the output model are checked on
    the built dataset."""
    register(app, min_traces=12)  # 12 traces of v1

    @app.task(name="triage", policy=Policy(min_traces=12, min_eval=1))
    def triage_v2(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent, 5 = whenever)."""

    for subject in SUBJECTS[:2]:
        triage_v2(Ticket(subject=subject))
    app.wait()
    with pytest.raises(UserError, match=r"has 2 teacher or imported traces .*min_traces is 12 \(12 traces of earlier"):
        app.distill("triage", config=CONFIG)
    assert app.store.datasets("triage") == []  # refused before a dataset was built

    for subject in SUBJECTS[2:]:  # v2: 6 billing answers, 6 bug ones
        triage_v2(Ticket(subject=subject))

    @app.task(name="triage", policy=Policy(min_traces=12, min_eval=1))
    def triage_v3(ticket: Ticket) -> BugsOnly:  # v3: v2's instructions, and v2's billing answers no longer fit
        """Route a support ticket to a queue and set its priority (1 = urgent, 5 = whenever)."""

    triage_v3(Ticket(subject="app crashes again"))
    app.wait()
    with pytest.raises(UserError, match=r"has 7 teacher or imported traces .*min_traces is 12 \(18 traces of earlier"):
        app.distill("triage", config=CONFIG)
    assert app.store.students("triage") == []


def test_without_a_gate_the_student_keeps_the_calls_it_answers_validly():
    """The headline said coverage 100% where 35.7% of the eval answers were invalid: those escalate."""
    from protege.distill.pipeline import headline

    figures = headline({"retention": 0.6, "parse_failure_rate": 0.357, "scores": [], "confidences": []}, Policy())
    assert figures["coverage"] == pytest.approx(0.643) and figures["measured_on"] == "eval split, no gate"
