"""`protege demo`'s stages on small numbers, offline: the reference teacher, the written and approved skill, replay
with escalation, accumulation, the closing table — and the store checks around a second run. Distillation (which
trains the real base model) is left to the end-to-end run."""

from __future__ import annotations

import pytest
from cli.cli_support import assert_one_line_error, make_project

from protege.agents import FunctionModel
from protege.demo.report import Call, field_accuracy, savings, tier_rows
from protege.demo.run import REVIEWER, TASK, Demo, DemoOptions
from protege.demo.workload import load_examples
from protege.errors import UserError
from protege.tasks import input_hash

LABELS = {input_hash(ex["input"]): ex["output"] for ex in load_examples()}


def flaky_replay() -> FunctionModel:
    """Stands in for the local base model: right on every other call, unparseable on the rest."""
    calls = {"n": 0}

    def answer(req):
        calls["n"] += 1
        return "I think it is an order." if calls["n"] % 2 else dict(LABELS[input_hash(req.task_input)])

    return FunctionModel(answer, name="function:flaky-replay")


def small_demo(tmp_path, **kw) -> Demo:
    opts = DemoOptions(project_dir=tmp_path / "proj", replay_model=flaky_replay(), traces=10, serve=2, **kw)
    demo = Demo(opts)
    demo.prepare()
    return demo


def test_stages_before_distillation(tmp_path):
    """Teacher calls write a skill, the demo approves it, replay escalates its bad answers, traces accumulate,
    and the table grades every call against the reference labels."""
    demo = small_demo(tmp_path)
    try:
        demo.teach(demo.pool[:3])
        demo.review_skill()
        skill = demo.app.store.skill(TASK, version=1)
        assert (skill.kind, skill.status, skill.reviewed_by) == ("exemplar", "approved", REVIEWER)
        demo.replay(demo.pool[3:7])
        demo.accumulate(demo.pool[7:10])
        tiers = [c.tier for c in demo.calls]
        assert tiers[:3] == ["teacher"] * 3 and tiers[7:] == ["teacher"] * 3
        assert sorted(tiers[3:7]) == ["replay", "replay", "teacher", "teacher"]  # the bad answers escalated
        assert all(c.exact for c in demo.calls)  # the reference teacher and the good replays are right
        assert [c.escalated for c in demo.calls[3:7]].count(True) == 2
        ledger = demo.app.ledger(TASK)
        assert ledger.calls == 10 and ledger.calls_by_tier == {"teacher": 8, "replay": 2}
        assert demo.app.store.count_traces(TASK, tier="replay", valid=False) == 2
        out = demo.summary()["all"]
        rows = {r["tier"]: r for r in out["tiers"]}
        assert rows["all calls"]["calls"] == 10 and rows["replay"]["exact"] == 1.0
        assert out["teacher_only_usd"] > out["spent_usd"] > 0  # replays cost less than the teacher (priced as Opus)
    finally:
        demo.close()


def test_programs_are_induced_from_every_teacher_trace_before_distilling(tmp_path):
    """Background induction runs at Policy.program_min_traces (50) and again when the traces have grown by half,
    reading however many are in by then; the programs beside the demo's student have seen all 100."""
    demo = small_demo(tmp_path)
    try:
        demo.teach(demo.pool[:100])
        demo.app.wait()
        assert demo.app.programs.from_every_trace(TASK).traces == 100
    finally:
        demo.close()


def test_second_run_needs_reset_and_reset_starts_clean(tmp_path):
    """A store with a demo run is kept unless --reset, which removes it (and only it)."""
    demo = small_demo(tmp_path)
    demo.teach(demo.pool[:1])
    demo.close()
    with pytest.raises(UserError, match="already holds a demo run"):
        small_demo(tmp_path)
    again = small_demo(tmp_path, reset=True)
    try:
        assert again.app.store.count_traces(TASK) == 0
    finally:
        again.close()


def test_reset_refuses_a_store_with_other_tasks(tmp_path, monkeypatch):
    """--reset never deletes a store that holds other tasks' work."""
    project = make_project(tmp_path, monkeypatch)
    project.run_task()
    monkeypatch.delenv("PROTEGE_DB")
    demo = Demo(DemoOptions(project_dir=tmp_path / ".protege", replay_model=flaky_replay(), traces=10))
    demo.prepare()
    demo.teach(demo.pool[:1])
    demo.close()
    with pytest.raises(UserError, match=r"also holds other tasks \(triage\)"):
        Demo(DemoOptions(project_dir=tmp_path / ".protege", reset=True)).prepare()
    assert (tmp_path / ".protege" / "protege.db").exists()


def test_promote_stage_acts_as_operator_below_the_gate(tmp_path):
    """A student short of the gate is promoted by the demo, acting as the operator."""
    from protege.distill.pipeline import DistillReport
    from protege.store import StudentRow

    demo = small_demo(tmp_path)
    try:
        row = demo.app.store.add_student(StudentRow(task_name=TASK, base="smollm2-135m", adapter_path="/x"))
        demo.report = DistillReport(
            task=TASK,
            student_id=row.id,
            dataset_id="d",
            metrics={"retention": 0.8},
            promoted=False,
            reason="retention 0.800 < Policy.promote_at 0.950",
        )
        demo.promote()
        assert demo.app.store.promoted_student(TASK).id == row.id
    finally:
        demo.close()


def test_report_functions():
    """Tier rows, field accuracy and savings are computed from the calls as stated."""
    calls = [
        Call("s", "student", 0.0, 0.5, True, 1.0),
        Call("s", "student", 0.0, 1.5, False, 0.5),
        Call("s", "teacher", 0.01, 0.1, True, 1.0, escalated=True),
    ]
    rows = {r.tier: r for r in tier_rows(calls)}
    assert rows["student"].calls == 2 and rows["student"].exact == 0.5 and rows["student"].fields == 0.75
    assert rows["student"].p50_latency_s == 1.0 and rows["all calls"].escalated == 1
    assert field_accuracy({"a": 1, "b": 2}, {"a": 1, "b": 3}) == 0.5 and field_accuracy(None, {"a": 1}) == 0.0
    money = savings(calls, teacher_cost_per_call=0.01)
    assert money["teacher_only_usd"] == pytest.approx(0.03) and money["saved_ratio"] == pytest.approx(2 / 3)


def test_demo_command_checks_its_numbers(tmp_path, monkeypatch):
    """`protege demo` refuses more traces than the workload holds, before doing anything."""
    project = make_project(tmp_path, monkeypatch)
    assert_one_line_error(project.cli("demo", "--traces", "901"), 2, "900 pool inputs")
    assert not (tmp_path / ".protege").exists()
