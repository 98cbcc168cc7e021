"""Teacher-written programs in the program tier: written in the background once enough teacher traces exist,
verified per field in the real sandbox, stored as a skill version, served per field (the better of induced and
authored), contained when they misbehave at serving time. The author is `code_author` (fixed code, offline): these
tests measure the wiring, verification and the sandbox, not a model's authoring.
"""

from __future__ import annotations

import json
import random
from typing import Literal

import pytest
from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel, ReferenceModel
from protege.agents.models.base import ModelResponse, Usage
from protege.errors import UserError
from protege.programs.authored import RECORD_FILE, AuthoredProgram, choose
from protege.programs.verify import FieldProgram, ProgramSet
from protege.skills.program_author import PROGRAM_FILE, code_author
from protege.tasks import input_hash


class Invoice(BaseModel):
    text: str


class Summary(BaseModel):
    customer: str
    items: int
    total: float
    priority: Literal["low", "high"]


CORRECT = """
import re

def solve(invoice):
    text = invoice["text"]
    lines = re.findall(r"^(\\d+) x .+ @ ([\\d.]+)$", text, flags=re.M)
    return {
        "customer": re.search(r"^Customer: (.+)$", text, flags=re.M).group(1).strip(),
        "items": len(lines),
        "total": round(sum(int(q) * float(p) for q, p in lines), 2),
        "priority": "high" if "urgent" in text.lower() else "low",
    }
"""
# ignores quantities: the total is right only when every quantity is 1
WRONG_TOTAL = CORRECT.replace("sum(int(q) * float(p) for q, p in lines)", "sum(float(p) for _, p in lines)")
# right on every trace it is verified on; loops forever on an input marked HANG (none of the traces are)
HANGS = CORRECT.replace(
    '    text = invoice["text"]\n', '    text = invoice["text"]\n    while "HANG" in text:\n        pass\n'
)


def invoices(n: int, seed: int, *, mark: str = "") -> list[tuple[dict, dict]]:
    rng = random.Random(seed)
    names = ["Ada Park", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Fox", "Flo Gray", "Gus Hill", "Ida Jones"]
    goods = ["Widget", "Gear", "Bolt pack", "Cable 2m", "Lamp"]
    out = []
    for i in range(n):
        lines = [
            (rng.choice([1, 1, 2, 3]), rng.choice(goods), rng.choice([1.5, 3.25, 10.0, 99.99]))
            for _ in range(rng.randint(1, 4))
        ]
        urgent = rng.random() < 0.3
        name = rng.choice(names)
        text = "\n".join(
            [
                f"Invoice {seed * 1000 + i} {mark}".strip(),
                f"Customer: {name}",
                *[f"{q} x {g} @ {p}" for q, g, p in lines],
                "URGENT please" if urgent else "Thanks",
            ]
        )
        answer = {
            "customer": name,
            "items": len(lines),
            "total": round(sum(q * p for q, _, p in lines), 2),
            "priority": "high" if urgent else "low",
        }
        out.append(({"invoice": {"text": text}}, answer))
    return out


def _app(tmp_path, examples, *, author=None, replay=None) -> Protege:
    teacher = ReferenceModel([{"input": i, "output": o} for i, o in examples], price_as="anthropic:claude-opus-4-5")
    return Protege(
        db=f"sqlite:///{tmp_path}/p.db",
        seed=1,
        teacher=teacher,
        program_author=author,
        replay=replay or FunctionModel(lambda req: "{}", price_as="anthropic:claude-haiku-4-5"),
    )


def _register(app: Protege, **policy):
    @app.task(policy=Policy(program_min_traces=30, **policy))
    def summarize(invoice: Invoice) -> Summary:
        """Summarize an invoice: customer name, number of line items, total amount, priority (high if urgent)."""

    return summarize


def _warm(app: Protege, examples) -> None:
    for inp, _ in examples:
        app.run("summarize", inp)
        app.wait()


def test_a_verified_authored_program_serves_calls_through_the_program_tier(tmp_path):
    examples = invoices(60, seed=1)
    app = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(app)
    _warm(app, examples[:40])
    authored = app.authored.current("summarize")
    assert authored is not None and set(authored.verified) == set(Summary.model_fields)
    assert authored.held_out >= 5 and authored.author == "function:code-author"
    row = app.skill("summarize")
    assert row.kind == "authored" and row.files[PROGRAM_FILE] == authored.source and RECORD_FILE in row.files
    # every author call is a recorded trace of tier "author"
    assert [t.model for t in app.traces("summarize", tier="author")] == ["function:code-author"]
    # the total (a sum of products) has no induced program: the sandbox serves it
    choice = choose(app.programs.current("summarize"), authored)
    assert choice["total"] == "authored" and set(choice) == set(Summary.model_fields)
    for inp, out in examples[40:50]:
        res = app.run("summarize", inp)
        assert res.tier == "program" and res.cost_usd == 0 and res.output.model_dump() == out
    sandbox = app.authored._sandbox
    app.close()
    assert sandbox.closed and app.authored._sandbox is None


def test_fields_an_authored_program_gets_wrong_are_left_to_the_next_tier(tmp_path):
    examples = invoices(60, seed=2)
    answers = {input_hash(i): o for i, o in examples}
    fixed_seen: list[dict | None] = []

    def replay(req) -> ModelResponse:
        fixed_seen.append(req.fixed_output)
        answer = {**answers[input_hash(req.task_input)], "customer": "a guess"}
        return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=100, output_tokens=20))

    app = _app(
        tmp_path,
        examples,
        author=code_author(WRONG_TOTAL),
        replay=FunctionModel(replay, price_as="anthropic:claude-haiku-4-5"),
    )
    _register(app)
    _warm(app, examples[:40])
    authored = app.authored.current("summarize")
    assert authored is not None and "total" not in authored.verified and authored.field_agreement["total"] < 0.95
    app.approve_skill("summarize")
    inp, out = examples[45]
    res = app.run("summarize", inp)
    # the replay fills the total; the fields programs decided (customer among them) are fixed, its guess overruled
    assert res.tier == "replay" and res.output.model_dump() == out
    assert "total" not in fixed_seen[-1] and fixed_seen[-1]["customer"] == out["customer"]
    assert "total" not in res.program_fields
    app.close()


def test_a_program_that_hangs_at_serving_time_is_contained_recorded_and_escalated(tmp_path):
    examples = invoices(60, seed=3)
    hang_in, hang_out = invoices(1, seed=99, mark="HANG")[0]
    app = _app(tmp_path, [*examples, (hang_in, hang_out)], author=code_author(HANGS))
    _register(app)
    _warm(app, examples[:40])
    assert app.authored.current("summarize") is not None
    res = app.run("summarize", hang_in)
    first = res.attempts[0]
    assert first.tier == "program" and not first.valid and "timeout" in " ".join(first.errors)
    assert res.tier == "teacher" and res.output.model_dump() == hang_out
    stored = app.store.trace(first.trace_id)
    assert stored.tier == "program" and not stored.valid and "timeout" in json.dumps(stored.errors)
    # the worker was replaced: the next call is served by the program tier again
    inp, out = examples[50]
    res = app.run("summarize", inp)
    assert res.tier == "program" and res.output.model_dump() == out
    app.close()


def test_a_program_that_verifies_no_field_is_not_stored_and_a_warning_says_so(tmp_path, caplog):
    """A written program that answers no field right (here one that also patches json's encoder, which the
    sandbox refuses) is paid for, recorded, and not served; the operator hears of it without debug logs."""
    poison = "import json\n\ndef solve(invoice):\n    json.JSONEncoder.encode = lambda self, o: '{}'\n    return {}\n"
    examples = invoices(45, seed=4)
    app = _app(tmp_path, examples, author=code_author(poison))
    _register(app)
    with caplog.at_level("WARNING", logger="protege"):
        _warm(app, examples[:40])
    assert app.authored.current("summarize") is None
    assert "verifies no field and is not served" in caplog.text
    assert app.store.count_traces("summarize", tier="author") >= 1
    app.close()


def test_paid_authoring_is_off_unless_the_app_opts_in(tmp_path):
    examples = invoices(40, seed=4)
    app = _app(tmp_path, examples)
    _register(app)
    _warm(app, examples[:40])
    assert app.authored.current("summarize") is None and app.traces("summarize", tier="author") == []
    assert app.authored._sandbox is None  # nothing to run: no worker was started
    app.close()
    with pytest.raises(UserError, match="program_author=42"):
        Protege(db=f"sqlite:///{tmp_path}/q.db", program_author=42)


def _field(name: str, right: int, wrong: int, promoted: bool = True) -> FieldProgram:
    return FieldProgram(name, [], heldout=right + wrong, right=right, wrong=wrong, promoted=promoted)


def test_each_field_goes_to_the_program_that_verified_better():
    induced = ProgramSet(
        "t",
        {"a": _field("a", 100, 0), "b": _field("b", 96, 4), "c": _field("c", 50, 50, False), "d": _field("d", 99, 1)},
    )
    authored = AuthoredProgram(
        source="def solve(**kw): ...",
        verified=["a", "b", "c"],
        field_agreement={"a": 1.0, "b": 1.0, "c": 0.97, "d": 0.5},
    )
    # a tie goes to the induced program (no arbitrary code); a better authored one wins; unverified never serves
    assert choose(induced, authored) == {"a": "induced", "b": "authored", "c": "authored", "d": "induced"}
    assert choose(None, authored) == {"a": "authored", "b": "authored", "c": "authored"}
    assert choose(induced, None) == {"a": "induced", "b": "induced", "d": "induced"}


def test_cli_tui_and_skill_folders_show_and_carry_the_authored_program(tmp_path):
    from typer.testing import CliRunner

    from protege.cli import app as cli
    from protege.tui.screens.skills import _programs_markdown

    examples = invoices(40, seed=5)
    app = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(app)
    _warm(app, examples)
    app.approve_skill("summarize")
    files = dict(app.skill("summarize").files)
    app.close()
    url, runner, env = f"sqlite:///{tmp_path}/p.db", CliRunner(), {"COLUMNS": "220"}
    shown = runner.invoke(cli, ["--db", url, "programs", "summarize"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "written by function:code-author (a function)" in shown.output and "scripts/solve.py" in shown.output
    assert "4 of 4 fields served" in shown.output and "0 sandbox failures" in shown.output
    data = json.loads(runner.invoke(cli, ["--db", url, "programs", "summarize", "--json"]).output)
    assert "total" in data["authored"]["serves"] and data["authored"]["field_agreement"]["total"] == 1.0
    terminal = {**env, "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # redirected, skill show writes the bare SKILL.md
    skill = runner.invoke(cli, ["--db", url, "skill", "show", "summarize"], env=terminal)
    assert skill.exit_code == 0 and "written by function:code-author" in skill.output
    assert "Authored program (scripts/solve.py)" in _programs_markdown(files)
    # export and import carry scripts/solve.py and its record; the importing store serves it
    assert runner.invoke(cli, ["--db", url, "skill", "export", str(tmp_path / "out")]).exit_code == 0
    folder = next((tmp_path / "out").iterdir())
    assert (folder / PROGRAM_FILE).read_text() == files[PROGRAM_FILE] and (folder / RECORD_FILE).exists()
    other = Protege(db=f"sqlite:///{tmp_path}/q.db", teacher=FunctionModel(lambda req: "{}"))
    _register(other)
    other.import_skills(tmp_path / "out")
    assert other.authored.current("summarize").source == files[PROGRAM_FILE]
    other.close()


def test_where_no_sandbox_can_start_authored_programs_are_skipped_and_calls_still_served(tmp_path, monkeypatch, caplog):
    from protege.sandbox import Sandbox, SandboxUnavailable

    examples = invoices(50, seed=6)
    app = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(app)
    _warm(app, examples[:40])
    assert app.authored.current("summarize") is not None
    app.close()

    def refuse(self):  # a kernel without Landlock/seccomp, simulated: the real start is what raises this
        raise SandboxUnavailable("Landlock is not available on this kernel")

    monkeypatch.setattr(Sandbox, "start", refuse)
    again = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(again)
    with caplog.at_level("WARNING", logger="protege"):
        results = [again.run("summarize", inp) for inp, _ in examples[40:43]]
    # the authored fields are ineligible: the induced ones cannot answer every field, so the teacher does
    assert [r.tier for r in results] == ["teacher"] * 3
    assert [r.output.model_dump() for r in results] == [o for _, o in examples[40:43]]
    assert sum("not served or written" in m for m in caplog.messages) == 1
    again.close()


def test_an_authored_program_the_teacher_disagrees_with_in_shadow_is_taken_out_of_service(tmp_path):
    """Shadowing and demotion work for authored programs as for induced ones and students: once the workload's
    meaning moves (the teacher now adds 1 to every total), shadow disagreement takes the program out of service,
    and calls go back to the teacher."""
    examples = invoices(100, seed=5)
    answers = {input_hash(i): o for i, o in examples}
    moved = {"on": False}

    def teacher(req) -> ModelResponse:
        out = dict(answers[input_hash(req.task_input)])
        out["total"] = round(out["total"] + (1 if moved["on"] else 0), 2)
        return ModelResponse(text=json.dumps(out), usage=Usage(input_tokens=900, output_tokens=40))

    app = Protege(
        db=f"sqlite:///{tmp_path}/p.db",
        seed=1,
        program_author=code_author(CORRECT),
        teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5"),
        replay=FunctionModel(lambda req: "{}", price_as="anthropic:claude-haiku-4-5"),
    )

    @app.task(policy=Policy(program_min_traces=30, shadow_rate=1.0, shadow_window=10))
    def summarize(invoice: Invoice) -> Summary:
        """Summarize an invoice: customer name, number of line items, total amount, priority (high if urgent)."""

    _warm(app, examples[:40])
    assert app.authored.current("summarize").verified and app.run("summarize", examples[40][0]).tier == "program"
    app.wait()
    moved["on"] = True
    tiers = []
    for inp, _ in examples[41:70]:
        tiers.append(app.run("summarize", inp).tier)
        app.wait()
    assert tiers[0] == "program" and tiers[-1] == "teacher"
    demoted = app.authored.current("summarize")
    assert demoted.verified == [] and demoted.reason.startswith("demoted: shadow agreement")
    demotion = next(r for r in app.store.skills("summarize") if r.kind == "authored")  # an induced one may follow
    assert app.skills.to_skill(demotion).metadata["program-fields"] == ""
    app.close()


def _versions(app: Protege) -> dict[int, tuple[str, str]]:
    return {r.version: (r.status, r.kind) for r in app.store.skills("summarize")}


def test_rejecting_the_version_that_wrote_the_program_takes_it_out_of_service_after_an_induction(tmp_path):
    """The reviewer's documented way out (`protege skill reject TASK -v N`) holds after field-program induction
    stored a version on top of the authored one: the induced version does not carry the program, rejecting takes it
    out at once in the running app, and it is not written again on the next call, here or in another process."""
    from protege.programs.service import PROGRAMS_FILE, save_programs

    examples = invoices(60, seed=7)
    app = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(app)
    _warm(app, examples[:40])
    written = app.skill("summarize")
    assert written.kind == "authored" and app.run("summarize", examples[40][0]).tier == "program"
    induced = app.programs.current("summarize")
    stacked = save_programs(app.store, "summarize", induced, instructions="", source_trace_ids=[])
    assert PROGRAMS_FILE in stacked.files and PROGRAM_FILE not in stacked.files and RECORD_FILE not in stacked.files
    assert "program-fields" not in app.skills.to_skill(stacked).metadata
    app.reject_skill("summarize", written.version)
    assert app.authored.current("summarize") is None
    res = app.run("summarize", examples[41][0])  # only the authored program serves the total
    assert res.tier == "teacher" and "total" not in res.program_fields
    app.wait()
    assert _versions(app)[written.version] == ("rejected", "authored") and max(_versions(app)) == stacked.version
    app.close()
    again = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(again)
    assert again.authored.current("summarize") is None
    assert not again.authored.due(again.handle("summarize").runtime)  # written again once the traces double
    again.close()


def _record(source: str, created_at: str) -> dict[str, str]:
    program = AuthoredProgram(source=source, field_agreement={"total": 1.0}, verified=["total"], created_at=created_at)
    return {PROGRAM_FILE: source, RECORD_FILE: program.record()}


def _store_version(app: Protege, kind: str, files: dict[str, str]):
    from protege.skills.skill import Skill

    body = f"# summarize\n\nA {kind} version.\n"
    skill = Skill(name="summarize", description="Summarizes invoices. Use for the summarize task.", body=body)
    return app.skills.add("summarize", skill.model_copy(update={"files": files}), kind=kind)


def test_a_copy_of_an_authored_program_serves_only_while_the_version_that_wrote_it_does(tmp_path):
    """Provenance decides, not where copies went (a store written before induced versions left the program out, an
    edit that carried the files over): rejecting or retiring the writing version takes every copy out; an approved
    version carrying the program is a reviewer's approval of it and serves."""
    app = _app(tmp_path, [])
    _register(app)
    first = _record(CORRECT, "2026-01-01T00:00:00+00:00")
    writer = _store_version(app, "authored", first)
    _store_version(app, "induced", {**first, "scripts/fields.json": "{}"})  # an older store's copy
    _store_version(app, "edited", first)
    assert app.authored.current("summarize").source == CORRECT
    app.reject_skill("summarize", writer.version)
    assert app.authored.current("summarize") is None
    # a program written afterwards serves; approving a version that carries it retires that one, and still serves
    second = _record(WRONG_TOTAL, "2026-01-02T00:00:00+00:00")
    written = _store_version(app, "authored", second)
    app.approve_skill("summarize", written.version)
    carrier = _store_version(app, "edited", second)
    app.approve_skill("summarize", carrier.version)
    assert _versions(app)[written.version] == ("retired", "authored")
    assert app.authored.current("summarize").source == WRONG_TOTAL
    app.skills.retire("summarize", by="reviewer")  # a reviewer retires it: out
    app.tiers.invalidate("summarize")
    assert app.authored.current("summarize") is None
    app.close()


def test_a_demotion_takes_the_program_out_even_when_the_version_it_builds_on_lacks_it(tmp_path, monkeypatch):
    """A demotion's version is built on the approved skill; one approved before the program was written has no
    scripts/solve.py, and a record without its source is not read: the older program served on."""
    import protege.programs.authored as authored

    app = _app(tmp_path, [])
    _register(app)
    approved = _store_version(app, "exemplar", {})
    app.approve_skill("summarize", approved.version)
    _store_version(app, "authored", _record(CORRECT, "2026-01-01T00:00:00+00:00"))
    assert app.authored.current("summarize").verified == ["total"]
    monkeypatch.setattr(authored, "shadow_verdict", lambda store, task, created_at: "demoted: in a test")
    assert app.authored.demote_if_disagreeing(app.handle("summarize").runtime)
    demoted = app.authored.current("summarize")
    assert demoted.verified == [] and demoted.reason == "demoted: in a test" and demoted.source == CORRECT
    app.close()


def test_approving_a_later_version_of_the_skill_leaves_the_authored_program_serving(tmp_path):
    """Induced versions no longer carry the program, so approving one retires the approved authored version: that is
    a verdict on the skill's text, not on the program, which serves on."""
    app = _app(tmp_path, [])
    _register(app)
    writer = _store_version(app, "authored", _record(CORRECT, "2026-01-01T00:00:00+00:00"))
    app.approve_skill("summarize", writer.version)
    later = _store_version(app, "induced", {"scripts/fields.json": "{}"})
    app.approve_skill("summarize", later.version)
    app.tiers.invalidate("summarize")
    assert _versions(app)[writer.version] == ("retired", "authored")
    assert app.authored.current("summarize").source == CORRECT
    app.close()


def test_with_program_review_an_authored_program_waits_for_a_reviewer(tmp_path):
    """`Policy(program_review=True)`: verified on the traces is not enough; it serves once its version is approved,
    and keeps serving when a later approval retires that version."""
    examples = invoices(60, seed=3)
    app = _app(tmp_path, examples, author=code_author(CORRECT))
    _register(app, program_review=True)
    _warm(app, examples[:40])
    written = app.skill("summarize")
    assert written.kind == "authored" and written.status == "draft"
    assert app.authored.current("summarize") is None
    assert "total" not in app.run("summarize", examples[40][0]).program_fields
    app.approve_skill("summarize", written.version)
    app.tiers.invalidate("summarize")
    assert app.authored.current("summarize").source.strip() == CORRECT.strip()
    res = app.run("summarize", examples[41][0])
    assert res.tier == "program" and "total" in res.program_fields
    app.close()
