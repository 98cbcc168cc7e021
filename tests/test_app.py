"""The public API of DESIGN §3 end to end: registration, calls (sync, async, threads), results, the ledger,
the budget guard, and durability of paid answers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import threading

import pytest
from pydantic import BaseModel, Field
from triage_support import Ticket, Triage

from protege import AllTiersFailed, BudgetExceeded, Policy, Protege, RunResult, UserError
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage


class Rated(BaseModel):
    queue: str
    priority: int = Field(ge=1, le=5)


def oracle(req):
    """Answers from the structured input, reporting usage so costs and budgets are real numbers."""
    subject = req.task_input["ticket"]["subject"]
    answer = {"queue": "billing" if "refund" in subject else "bug", "priority": 2}
    return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=2000, output_tokens=500))


@pytest.fixture
def app(tmp_path):
    a = Protege(
        db=f"sqlite:///{tmp_path}/app.db",
        teacher=FunctionModel(oracle, price_as="anthropic:claude-opus-4-5"),
        replay=FunctionModel(oracle, price_as="anthropic:claude-haiku-4-5"),
        project_dir=tmp_path / ".protege",
    )
    yield a
    a.close()


def register(app, **kw):
    @app.task(**kw)
    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    return triage


def test_sync_call_returns_output_model_and_records_everything(app):
    """A sync call returns the output model; app.run returns a RunResult whose trace and run are in the store."""
    triage = register(app)
    assert triage(Ticket(subject="refund please")) == Triage(queue="billing", priority=2)
    res = app.run("triage", {"ticket": {"subject": "it crashes"}})
    assert isinstance(res, RunResult) and res.output.queue == "bug" and res.tier == "teacher"
    assert res.cost_usd > 0 and res.latency_s > 0 and res.model.startswith("function:")
    assert [t.id for t in app.traces("triage", limit=1)] == res.trace_ids
    assert app.store.task("triage").instructions.startswith("Route a support ticket")


def test_async_twin_and_many_threads(app):
    """acall works from another event loop, and sync calls from 16 threads at once all succeed."""
    triage = register(app)
    assert asyncio.run(triage.acall(Ticket(subject="refund"))).queue == "billing"
    outs: list = []
    threads = [threading.Thread(target=lambda: outs.append(triage(Ticket(subject="x")))) for _ in range(16)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(outs) == 16 and app.store.count_traces("triage") == 17


def test_changed_contract_is_a_new_version(app):
    """Re-registering the same contract keeps the version; a changed docstring makes version 2."""
    register(app)
    register(app)
    assert app.store.task("triage").version == 1

    @app.task(name="triage")
    def other(ticket: Ticket) -> Triage:
        """Route a ticket; priority 5 is lowest."""

    assert app.store.task("triage").version == 2 and other.runtime.version == 2


@pytest.mark.parametrize(
    "source, message",
    [
        ("def t(x: Ticket):\n    'doc'", "return annotation"),
        ("def t(x: Ticket) -> dict:\n    'doc'", "BaseModel subclass"),
        ("def t(x) -> Triage:\n    'doc'", "type annotation"),
        ("class Socket: pass\ndef t(x: Socket) -> Triage:\n    'doc'", "pydantic-compatible"),
        ("def t(x: Ticket) -> Triage:\n    pass", "docstring"),
        ("def t(*xs: Ticket) -> Triage:\n    'doc'", r"\*args"),
    ],
)
def test_invalid_task_definitions_are_user_errors(app, source, message):
    """A task without a usable contract is refused at registration with a message that says what to fix."""
    ns: dict = {"Ticket": Ticket, "Triage": Triage}
    exec(source, ns)
    with pytest.raises(UserError, match=message):
        app.task(ns["t"])


def test_bad_input_and_unknown_task_are_user_errors(app):
    """Bad inputs fail before any model is called."""
    register(app)
    with pytest.raises(UserError, match="bad input for task 'triage'"):
        app.run("triage", {"ticket": {"body": "no subject"}})
    with pytest.raises(UserError, match="bad input for task 'triage': 'priority' is not a parameter of the task"):
        app.run("triage", {"ticket": {"subject": "refund"}, "priority": 1})  # no such parameter: not dropped
    with pytest.raises(UserError, match="no task 'nope'"):
        app.run("nope", {})
    assert app.store.count_traces("triage") == 0


def test_reading_an_unknown_task_is_a_user_error_not_an_empty_answer(app):
    """A misspelt task name must not read as a task with no skill, no traces and no spend; a task the store knows
    from another process (not registered here) reads as usual."""
    register(app)
    for read in (app.skill, app.ledger, app.traces, app.approve_skill, app.reject_skill):
        with pytest.raises(UserError, match=r"no task 'triag' in this app or its store \(tasks: triage\)"):
            read("triag")
    app.store.insert_traces([{"task_name": "imported_only", "tier": "import", "input": {}, "output": {}}])
    assert len(app.traces("imported_only")) == 1  # a task known by its imported traces alone reads too
    other = Protege(db=app.settings.db_url, teacher=FunctionModel(oracle), project_dir=app.settings.project_dir)
    try:
        assert other.skill("triage") is None and other.ledger("triage").calls == 0 and other.traces("triage") == []
    finally:
        other.close()


def test_a_skill_imported_into_a_fresh_store_can_be_read_and_approved(app, tmp_path):
    """A store that knows a task only by the skill imported into it reads and approves it (was: no task)."""
    register(app)(Ticket(subject="refund"))
    app.wait()  # the teacher's first success leaves a draft skill
    app.approve_skill("triage")
    (folder,) = app.export_skills(tmp_path / "skills")
    fresh = Protege(db=f"sqlite:///{tmp_path}/fresh.db", teacher=FunctionModel(oracle), project_dir=tmp_path / ".f")
    try:
        fresh.import_skills(folder.parent)
        assert fresh.skill("triage").text == app.skill("triage").text
        assert fresh.reject_skill("triage").status == "rejected"
    finally:
        fresh.close()


@pytest.mark.parametrize("name", ["日本", "_"])
def test_a_task_name_without_an_ascii_letter_or_digit_is_refused_at_registration(app, name):
    """Its skill is named from its ASCII letters and digits: `日本` registered, then failed in the background."""

    def fn(ticket: Ticket) -> Triage:
        """Route a support ticket."""

    with pytest.raises(UserError, match="ASCII letter or digit"):
        app.task(name=name)(fn)


@pytest.mark.parametrize("repairs", [1, 0])
def test_an_invalid_teacher_answer_is_sent_back_once_with_its_errors(tmp_path, repairs):
    """The teacher's answer is paid for: one that fails validation (a priority of 0 where the schema says >= 1)
    goes back with the errors, and the corrected answer is served — both turns in the trace and its cost; with
    Policy(repair_turns=0) the call fails as before."""
    asked: list = []

    def teacher(req):
        asked.append(req.messages)
        fixed = any("not valid" in m.content for m in req.messages if m.role == "user")
        answer = {"queue": "bug", "priority": 2 if fixed else 0}
        return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=100, output_tokens=10))

    app = Protege(
        db=f"sqlite:///{tmp_path}/r.db",
        teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5"),
        project_dir=tmp_path / ".p",
    )
    try:

        @app.task(policy=Policy(repair_turns=repairs, program=False))
        def triage(ticket: Ticket) -> Rated:
            """Route a support ticket (priority 1-5)."""

        if not repairs:
            with pytest.raises(AllTiersFailed, match="priority"):
                triage(Ticket(subject="crash"))
            assert len(asked) == 1
            return
        result = app.run("triage", {"ticket": {"subject": "crash"}})
        assert result.tier == "teacher" and result.output.priority == 2 and len(asked) == 2
        feedback = asked[1][-1].content
        assert "priority" in feedback and "greater than or equal to 1" in feedback
        (trace,) = app.store.traces(run_id=result.run_id)
        assert trace.valid and [m["role"] for m in trace.messages][-3:] == ["assistant", "user", "assistant"]
        assert trace.output_tokens == 20 and result.cost_usd == pytest.approx(trace.cost_usd)
    finally:
        app.close()


def test_a_teacher_that_fails_after_a_paid_tool_turn_is_charged_for_that_turn(tmp_path):
    """The teacher's first turn (a tool call, 100k tokens) is paid for; its next request fails: the attempt, the
    trace and the ledger recorded $0 and 0 tokens."""
    from protege.agents.models.base import ToolCall
    from protege.errors import ModelError

    def teacher(req):
        if any(m.role == "tool" for m in req.messages):
            raise ModelError("provider down", status=500)
        call = ToolCall(id="c1", name="plan_of", arguments={"email": "a@b.example"})
        return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=100_000, output_tokens=1_000))

    def plan_of(email: str) -> str:
        """The customer's plan."""
        return "free"

    app = Protege(
        db=f"sqlite:///{tmp_path}/t.db",
        teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5"),
        project_dir=tmp_path / ".p",
    )
    try:

        @app.task(tools=[plan_of], policy=Policy(program=False))
        def triage(ticket: Ticket) -> Triage:
            """Route a support ticket; look the plan up first."""

        with pytest.raises(AllTiersFailed, match="provider down") as failed:
            triage(Ticket(subject="refund"))
        (attempt,) = failed.value.attempts
        (trace,) = app.store.traces("triage")
        assert attempt.cost_usd > 0.5 and trace.cost_usd == attempt.cost_usd and trace.input_tokens == 100_000
        assert app.ledger("triage").total_usd == pytest.approx(attempt.cost_usd)
        assert isinstance(failed.value.__cause__, ModelError) and failed.value.__cause__.status == 500
    finally:
        app.close()


def test_missing_api_key_is_a_user_error_naming_the_env_var(tmp_path, monkeypatch):
    """The default Anthropic teacher without a key fails with the env var and the offline alternative."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    app = Protege(db=f"sqlite:///{tmp_path}/k.db")
    triage = register(app)
    with pytest.raises(UserError, match="ANTHROPIC_API_KEY"):
        triage(Ticket(subject="x"))
    app.close()


def test_an_approved_skill_without_a_usable_replay_model_leaves_calls_to_the_teacher(tmp_path, monkeypatch, caplog):
    """An app given only a teacher gets the default replay model (Anthropic): once a skill is approved, its missing
    key must not fail calls the teacher answers. They go to the teacher, a warning says why once, and a forced
    replay tier fails naming the replay model and the way out."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("PROTEGE_REPLAY", raising=False)
    app = Protege(
        db=f"sqlite:///{tmp_path}/r.db",
        teacher=FunctionModel(oracle, price_as="anthropic:claude-opus-4-5"),
        project_dir=tmp_path / ".protege",
    )
    triage = register(app)
    triage(Ticket(subject="refund"))
    app.wait()
    app.approve_skill("triage", reviewer="ana")
    with caplog.at_level("WARNING", logger="protege.agents.cascade"):
        tiers = [app.run("triage", {"ticket": {"subject": "refund"}}).tier for _ in range(3)]
    assert tiers == ["teacher"] * 3
    warnings = [r.getMessage() for r in caplog.records if "not replayed" in r.getMessage()]
    assert len(warnings) == 1 and "the replay model 'anthropic:claude-haiku-4-5'" in warnings[0]
    with pytest.raises(UserError, match=r"replay model 'anthropic:claude-haiku-4-5'.*Protege\(replay=\.\.\.\)"):
        app.run("triage", {"ticket": {"subject": "refund"}}, tier="replay", escalate=False)
    app.close()


def test_a_teacher_that_is_not_a_model_fails_every_call_and_a_swapped_teacher_answers(app):
    """The tiers check a teacher object once, not per call: a non-model is refused on every call all the same,
    and a model set in its place afterwards serves."""
    triage = register(app)
    app.teacher_spec = object()
    for _ in range(2):
        with pytest.raises(UserError, match="neither a model spec string nor a Model"):
            triage(Ticket(subject="refund please"))
    app.teacher_spec = FunctionModel(oracle, price_as="anthropic:claude-opus-4-5")
    assert triage(Ticket(subject="refund please")).queue == "billing"


def test_ledger_counts_savings_once_replay_serves(app):
    """With an approved skill, replay serves and the ledger shows savings against teacher-only."""
    triage = register(app)
    triage(Ticket(subject="refund"))
    app.wait()  # the skill author runs in the background after the first teacher success
    assert app.skill("triage") is not None and app.skill("triage").status == "draft"
    app.approve_skill("triage", reviewer="ana")
    for _ in range(4):
        assert app.run("triage", {"ticket": {"subject": "refund"}}).tier == "replay"
    ledger = app.ledger("triage")
    assert ledger.calls == 5 and ledger.calls_by_tier == {"teacher": 1, "replay": 4}
    assert ledger.savings_usd > 0 and 0 < ledger.savings_ratio < 1


def test_budget_cap_refuses_before_spending(app):
    """A per-task teacher cap refuses calls whose worst case would pass it, and spend never exceeds it."""
    triage = register(app, policy=Policy(teacher_budget_usd=0.12))
    served, refused = 0, 0
    for i in range(10):
        try:
            triage(Ticket(subject=f"crash {i}"))
            served += 1
        except BudgetExceeded as exc:
            refused += 1
            assert exc.cap == 0.12 and "Raise the cap" in str(exc)
    assert served >= 1 and refused >= 1
    assert app.store.spent("triage") <= 0.12
    assert sum(t.cost_usd for t in app.traces("triage", tier="teacher")) <= 0.12


def test_budget_cap_holds_under_concurrent_calls(app):
    """50 concurrent calls against a small cap: the spend reserved and the spend recorded stay under it."""
    register(app, policy=Policy(teacher_budget_usd=0.2))

    async def main():
        return await asyncio.gather(
            *(app.arun("triage", {"ticket": {"subject": f"s{i}"}}) for i in range(50)), return_exceptions=True
        )

    results = asyncio.run(main())
    assert any(isinstance(r, BudgetExceeded) for r in results) and any(isinstance(r, RunResult) for r in results)
    assert sum(t.cost_usd for t in app.traces("triage", limit=None)) <= 0.2 + 1e-9


def test_all_tiers_failed_is_one_error_with_attempts(tmp_path):
    """When the only tier answers invalid JSON, one AllTiersFailed says so and carries the attempt."""
    app = Protege(db=f"sqlite:///{tmp_path}/f.db", teacher=FunctionModel(lambda r: "I don't know"))
    triage = register(app)
    with pytest.raises(AllTiersFailed) as err:
        triage(Ticket(subject="x"))
    assert err.value.attempts[0].tier == "teacher" and "protege trace" in str(err.value)
    app.close()


def test_a_call_after_close_opens_the_app_again_and_its_background_work_is_done(tmp_path):
    """close() then a call: the call is served and the app is open again, so its background work (the skill the
    teacher's first answer drafts) runs and is drained at close or exit — closed, it was silently dropped."""
    app = Protege(db=f"sqlite:///{tmp_path}/c.db", teacher=FunctionModel(oracle), project_dir=tmp_path / ".p")
    triage = register(app)
    app.close()
    assert triage(Ticket(subject="refund")).queue == "billing"
    assert asyncio.run(app.arun("triage", {"ticket": {"subject": "bug"}})).output.queue == "bug"
    app.close()  # drains what the calls started
    reopened = Protege(db=f"sqlite:///{tmp_path}/c.db", teacher=FunctionModel(oracle), project_dir=tmp_path / ".p")
    try:
        assert reopened.store.skill("triage") is not None and reopened.store.count_traces("triage") == 2
    finally:
        reopened.close()


def test_a_model_that_raises_anything_fails_its_tier_and_the_call_escalates(tmp_path):
    """A model object's own exception (a dropped connection, not a ModelError) is that tier's failure: recorded as
    a trace with the error, and the next tier answers; where no tier is left, AllTiersFailed carries it."""

    def down(req):
        raise ConnectionError("replay server down")

    teacher = FunctionModel(oracle, price_as="anthropic:claude-opus-4-5")
    app = Protege(db=f"sqlite:///{tmp_path}/e.db", teacher=teacher, replay=FunctionModel(down))
    triage = register(app)
    triage(Ticket(subject="refund"))
    app.wait()
    app.approve_skill("triage", reviewer="ana")
    result = app.run("triage", {"ticket": {"subject": "refund"}})
    assert [(a.tier, a.valid) for a in result.attempts] == [("replay", False), ("teacher", True)]
    failed = app.store.trace(result.attempts[0].trace_id)
    assert failed.errors == ["ConnectionError: replay server down"] and not failed.valid
    app.teacher_spec = FunctionModel(down)
    with pytest.raises(AllTiersFailed) as err:
        app.run("triage", {"ticket": {"subject": "bug"}})
    assert [a.tier for a in err.value.attempts] == ["replay", "teacher"]
    assert "ConnectionError: replay server down" in err.value.attempts[-1].errors[0]
    assert app.ledger("triage").calls == 3  # every call recorded, the failed one too
    app.close()


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pydantic import BaseModel
    from protege import Protege
    from protege.agents import FunctionModel

    class Q(BaseModel):
        text: str

    class A(BaseModel):
        answer: str

    app = Protege(db=sys.argv[1], teacher=FunctionModel(lambda r: {"answer": "paid for"}))
    record = app.store.record_attempt

    def record_then_die(trace, **kw):
        record(trace, **kw)
        os.kill(os.getpid(), signal.SIGKILL)  # the process dies the instant the attempt is recorded

    app.store.record_attempt = record_then_die

    @app.task
    def solve(q: Q) -> A:
        "Answer the question."

    solve(Q(text="hi"))
    """
)


def test_process_killed_after_teacher_answer_keeps_the_trace(tmp_path):
    """SIGKILL right after the teacher's answer was recorded, before the caller got it: the trace and the run's
    outcome are in the store (one transaction), so nothing paid for is lost and nothing is half-written."""
    url = f"sqlite:///{tmp_path}/crash.db"
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), url], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    from protege.store import Store

    store = Store(url)
    (trace,) = store.traces("solve")
    assert trace.valid and trace.output == {"answer": "paid for"} and trace.tier == "teacher"
    assert store.run(trace.run_id).status == "ok" and store.run(trace.run_id).output == {"answer": "paid for"}


class Lookup(BaseModel):
    user_id: int = Field(alias="userId")


class Profile(BaseModel):
    user_name: str = Field(alias="userName")
    nick_name: str | None = Field(default=None, alias="nickName")


def test_aliased_fields_are_stored_and_sent_as_the_schema_names_them(tmp_path):
    """The schemas models see and validation read fields by alias (`userName`); traces stored them by Python name
    (`user_name`), so a stored answer no longer validated (evaluation, skill evidence), field programs saw the
    alias missing from every answer, and datasets taught keys the serving grammar forbids."""
    seen: list[dict] = []

    def teacher(req):
        seen.append(req.task_input)
        return json.dumps({"userName": f"user{req.task_input['q']['userId']}", "nickName": None})

    app = Protege(db=f"sqlite:///{tmp_path}/a.db", teacher=FunctionModel(teacher), project_dir=tmp_path / ".p")
    try:

        @app.task
        def profile(q: Lookup) -> Profile:
            """Look the user up."""

        res = app.run("profile", {"q": {"userId": 5}})
        assert res.output.user_name == "user5" and profile(Lookup(userId=6)).user_name == "user6"
        assert seen == [{"q": {"userId": 5}}, {"q": {"userId": 6}}]
        trace = app.store.trace(res.attempts[-1].trace_id)
        assert trace.input == {"q": {"userId": 5}} and trace.output == {"userName": "user5", "nickName": None}
        assert profile.spec.parse_output(trace.output).user_name == "user5"  # a stored answer validates again
    finally:
        app.close()


def test_a_task_whose_tools_are_refused_is_not_registered(app):
    """The task reached the store before its tools were checked: `protege tasks` listed a task that could
    never run."""

    def final_answer(answer: str) -> str:
        """Clashes with the internal final-answer tool."""
        return answer

    with pytest.raises(UserError, match="reserved"):

        @app.task(tools=[final_answer])
        def clash(text: str) -> Triage:
            """Triage the text."""

    assert app.store.task("clash") is None and "clash" not in app.tasks


def test_every_app_setting_the_readme_names_is_an_argument_too(tmp_path):
    app = Protege(project_dir=tmp_path, cache_dir=tmp_path / "models", local_cost_per_hour=0.5, drain_timeout_s=3)
    try:
        assert app.settings.cache_dir == (tmp_path / "models").absolute()
        assert (app.settings.local_cost_per_hour, app.settings.drain_timeout_s) == (0.5, 3)
    finally:
        app.close()


def test_rate_limited_is_public_for_a_service_to_pass_on():
    import protege
    from protege.errors import ModelError

    assert issubclass(protege.RateLimited, ModelError)


def test_replay_is_shown_the_approved_skills_name_description_and_body_not_its_metadata(app):
    """The replay tier sent the whole SKILL.md: protege's trace ids and author model (and a skill's own notes of
    any size) on every paid call."""
    seen = []

    def replay(req):
        seen.append(req.messages)
        return oracle(req)

    app.replay_spec = FunctionModel(replay, price_as="anthropic:claude-haiku-4-5")
    register(app)(Ticket(subject="refund"))
    app.wait()
    row = app.approve_skill("triage")
    assert "traces:" in row.text  # protege's own bookkeeping is in the stored text
    assert app.run("triage", {"ticket": {"subject": "refund it"}}, tier="replay").tier == "replay"
    block = seen[-1][1].content
    assert "name: triage" in block and "description:" in block and "traces:" not in block
