"""Field programs in the app: induced in the background from teacher traces, stored as a skill version, served
per field (the program tier alone when every field has one), refusals escalate, the teacher is never overruled."""

from __future__ import annotations

import json
import random

from pydantic import BaseModel

from programs.test_induce import _changelog
from protege import Policy, Protege
from protege.agents import FunctionModel, ReferenceModel
from protege.agents.models.base import ModelResponse, Usage
from protege.programs.service import PROGRAMS_FILE, RENDERED_FILE


class Entry(BaseModel):
    text: str


class Changes(BaseModel):
    package: str
    maintainer: str
    bugs: list[int]
    changes: int
    summary: str


class Counted(BaseModel):
    package: str
    changes: int


def _data(n: int, seed: int) -> list[tuple[dict, dict]]:
    rng = random.Random(seed)
    return [_changelog(rng) for _ in range(n)]


def _app(tmp_path, examples, replay=None) -> Protege:
    teacher = ReferenceModel([{"input": i, "output": o} for i, o in examples], price_as="anthropic:claude-opus-4-5")
    return Protege(
        db=f"sqlite:///{tmp_path}/p.db",
        seed=1,
        teacher=teacher,
        replay=replay or FunctionModel(lambda req: "{}", price_as="anthropic:claude-haiku-4-5"),
    )


def _warm(app: Protege, name: str, examples) -> None:
    for inp, _ in examples:
        app.run(name, inp)
        app.wait()


ODD = {"entry": {"text": "nothing like a changelog"}}


def test_every_field_programmed_is_served_by_the_program_tier(tmp_path):
    examples = _data(130, seed=4)
    known = [(i, {"package": o["package"], "changes": o["changes"]}) for i, o in examples]
    app = _app(tmp_path, [*known, (ODD, {"package": "x", "changes": 0})])

    @app.task(policy=Policy(program_min_traces=60))
    def counted(entry: Entry) -> Counted:
        """Name the package and count its change items."""

    _warm(app, "counted", examples[:100])
    programs = app.programs.current("counted")
    assert programs is not None and set(programs.served) == {"package", "changes"}
    row = app.skill("counted")
    assert row.kind == "induced" and RENDERED_FILE in row.files and PROGRAMS_FILE in row.files
    # from the 60th teacher trace on, the programs serve every call: no model, no cost
    ledger = app.ledger("counted")
    assert ledger.calls_by_tier == {"teacher": 60, "program": 40} and ledger.spend_by_tier["program"] == 0
    inp, out = examples[120]
    res = app.run("counted", inp)
    assert res.tier == "program" and res.cost_usd == 0 and res.output.changes == out["changes"]
    assert res.program_fields == ["changes", "package"]
    assert app.store.trace(res.trace_ids[0]).skill_version == row.version  # the skill its programs came from
    # an input the programs do not apply to escalates to the teacher instead of getting a guess
    res = app.run("counted", ODD)
    assert res.tier == "teacher" and res.program_fields == [] and res.output.package == "x"
    app.close()


def test_partial_programs_fix_fields_for_the_next_tier_not_the_teacher(tmp_path):
    examples = _data(130, seed=6)
    seen: list[dict | None] = []

    def replay(req) -> ModelResponse:
        seen.append(req.fixed_output)
        answer = {"package": "guess", "maintainer": "guess", "bugs": [], "changes": 999, "summary": "a guess"}
        return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=100, output_tokens=20))

    app = _app(tmp_path, examples, replay=FunctionModel(replay, price_as="anthropic:claude-haiku-4-5"))

    @app.task(policy=Policy(program_min_traces=60))
    def changelog(entry: Entry) -> Changes:
        """Read a Debian changelog entry: package, maintainer, bug numbers closed, change count, a summary."""

    _warm(app, "changelog", examples[:100])
    teacher_requests = app.tiers.model(app.teacher_spec).requests
    assert all(r.fixed_output is None for r in teacher_requests)
    served = app.programs.current("changelog").served
    assert "summary" not in served and {"changes", "bugs", "maintainer"} <= set(served)
    app.approve_skill("changelog")
    inp, out = examples[110]
    res = app.run("changelog", inp)
    assert res.tier == "replay" and seen[-1] is not None and seen[-1]["changes"] == out["changes"]
    # the replay's own guesses for programmed fields are overruled; the rest is its answer
    assert res.output.changes == out["changes"] and res.output.bugs == out["bugs"]
    assert res.output.summary == "a guess" and set(res.program_fields) == set(served)
    app.close()


def test_programs_off_by_policy(tmp_path):
    examples = _data(80, seed=8)
    app = _app(tmp_path, [(i, {"package": o["package"], "changes": o["changes"]}) for i, o in examples])

    @app.task(policy=Policy(program=False, program_min_traces=20))
    def counted(entry: Entry) -> Counted:
        """Name the package and count its change items."""

    _warm(app, "counted", examples[:60])
    assert app.programs.current("counted") is None
    assert app.run("counted", examples[70][0]).tier == "teacher"
    app.close()


def test_programs_the_teacher_disagrees_with_in_shadow_are_demoted(tmp_path):
    from protege.tasks import input_hash

    examples = _data(140, seed=12)
    answers = {input_hash(i): {"package": o["package"], "changes": o["changes"]} for i, o in examples}
    drift = {"on": False}

    def teacher(req) -> ModelResponse:
        out = dict(answers[input_hash(req.task_input)])
        out["changes"] += 1 if drift["on"] else 0  # the workload's meaning moved: the programs are now wrong
        return ModelResponse(text=json.dumps(out), usage=Usage(input_tokens=900, output_tokens=40))

    app = Protege(
        db=f"sqlite:///{tmp_path}/d.db",
        seed=3,
        teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5"),
        replay=FunctionModel(lambda req: "{}", price_as="anthropic:claude-haiku-4-5"),
    )

    @app.task(policy=Policy(program_min_traces=60, shadow_rate=1.0, shadow_window=10))
    def counted(entry: Entry) -> Counted:
        """Name the package and count its change items."""

    _warm(app, "counted", examples[:61])
    assert app.run("counted", examples[61][0]).tier == "program"
    app.wait()
    drift["on"] = True
    tiers = []
    for inp, _ in examples[62:80]:
        tiers.append(app.run("counted", inp).tier)
        app.wait()
    assert tiers[0] == "program" and tiers[-1] == "teacher"
    newest = app.programs.current("counted")
    assert not newest.served and all("demoted: shadow agreement" in f.reason for f in newest.fields.values())
    app.close()


def test_a_fault_in_the_programs_never_fails_a_call(tmp_path, monkeypatch):
    examples = _data(10, seed=14)
    app = _app(tmp_path, [(i, {"package": o["package"], "changes": o["changes"]}) for i, o in examples])

    @app.task
    def counted(entry: Entry) -> Counted:
        """Name the package and count its change items."""

    class Broken:
        def apply(self, data):
            raise RuntimeError("a bug in a program")

    monkeypatch.setattr(app.programs, "current", lambda task: Broken())
    inp, out = examples[0]
    res = app.run("counted", inp)
    assert res.tier == "teacher" and res.output.changes == out["changes"] and res.program_fields == []
    app.close()


def test_a_field_the_student_gets_right_more_often_than_its_program_is_left_to_the_student():
    """A program right on 98% of held-out traces must not overrule a promoted student right on 100% of its eval
    split; a field where the program is the better (or the student has no figure) stays fixed."""
    from protege.agents.fixed_fields import defer_to_student
    from protege.programs.verify import FieldProgram, ProgramSet

    programs = ProgramSet(
        "t",
        {
            "package": FieldProgram("package", [], right=98, wrong=2, promoted=True),
            "changes": FieldProgram("changes", [], right=100, wrong=0, promoted=True),
            "bugs": FieldProgram("bugs", [], right=90, wrong=10, promoted=True),
        },
    )
    fixed = {"package": "zlib", "changes": 3, "bugs": [1]}
    assert defer_to_student(fixed, programs, {"package": 1.0, "changes": 0.4}) == {"changes": 3, "bugs": [1]}
    assert defer_to_student(fixed, programs, None) == fixed
    assert defer_to_student(fixed, programs, {}) == fixed


def test_a_program_set_narrowed_to_some_fields_serves_only_those():
    """`ProgramSet.only`: the other fields keep their programs and record, unserved, with the reason given; the
    set it came from is unchanged."""
    from protege.programs.verify import FieldProgram, ProgramSet

    programs = ProgramSet(
        "t",
        {
            "package": FieldProgram("package", [], right=98, wrong=2, promoted=True),
            "changes": FieldProgram("changes", [], right=100, wrong=0, promoted=True),
            "bugs": FieldProgram("bugs", [], reason="no program fits every training trace"),
        },
    )
    narrowed = programs.only(["changes", "bugs"], "not served now")
    assert sorted(narrowed.served) == ["changes"] and sorted(programs.served) == ["changes", "package"]
    assert narrowed.fields["package"].reason == "not served now" and narrowed.fields["package"].right == 98
    assert narrowed.fields["bugs"].reason == "no program fits every training trace"


def test_one_process_at_a_time_induces_a_tasks_programs_and_none_from_the_same_traces_again(tmp_path):
    """Background induction is claimed in the store (lease `programs:<task>`), not per process: four workers on one
    store each wrote an "induced" version at the same moment. Each fresh app here is another process's view."""
    import asyncio
    import os
    import socket

    from protege.programs.service import LEASE_PREFIX
    from protege.store import Store

    examples = _data(40, seed=9)
    lease, other = LEASE_PREFIX + "counted", f"{socket.gethostname()}:{os.getppid()}:another"  # a live process

    def fresh() -> Protege:
        app = _app(tmp_path, [(i, {"package": o["package"], "changes": o["changes"]}) for i, o in examples])

        @app.task(policy=Policy(program_min_traces=20))
        def counted(entry: Entry) -> Counted:
            """Name the package and count its change items."""

        return app

    def induced_by(app: Protege) -> list[str]:
        calls: list[str] = []
        app.programs.induce = calls.append  # type: ignore[method-assign]
        asyncio.run(app.programs.maybe_induce(app.handle("counted").runtime))
        app.close()
        return calls

    first = fresh()
    first.programs.background = False
    _warm(first, "counted", examples[:30])
    assert first.programs.current("counted") is None and first.programs.source_traces("counted") == 30
    first.close()
    store = Store(f"sqlite:///{tmp_path}/p.db")
    assert store.acquire_lease(lease, owner=other, ttl_s=60)
    assert induced_by(fresh()) == []  # another process is inducing now
    store.release_lease(lease, owner=other, info={"induced_from": 30})
    assert induced_by(fresh()) == []  # it induced from these very traces: nothing to do
    store.acquire_lease(lease, owner=other, ttl_s=60)
    store.release_lease(lease, owner=other, info={"induced_from": 12})
    last = fresh()
    asyncio.run(last.programs.maybe_induce(last.handle("counted").runtime))  # 30 >= 12 * 1.5: due, and done
    assert last.programs.current("counted") is not None
    held = last.store.lease(lease)
    assert held.info == {"induced_from": 30} and not last.store.lease_live(held)
    last.close()
