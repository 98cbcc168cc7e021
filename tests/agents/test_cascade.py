"""The cascade on its own: routing, validation, escalation and recording, with scripted tier models."""

from __future__ import annotations

import asyncio

import pytest
from triage_support import Ticket, Triage

from protege.agents.cascade import END, Cascade, StudentPick, TaskRuntime, TierGraph
from protege.agents.models.base import ModelRequest, ModelResponse, Usage
from protege.agents.tools import ToolBox
from protege.errors import AllTiersFailed, UserError, ValidationFailed
from protege.store import Store
from protege.tasks import Policy, TaskSpec


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


class Scripted:
    """A tier model answering with a fixed JSON text (or a function of the request); counts its calls."""

    price_as = None
    writes_prose = False

    def __init__(
        self,
        name: str,
        answer,
        usage=(100, 20),
        confidence: float | None = None,
        field_confidences: dict[str, float] | None = None,
    ):
        self.name, self.answer, self.calls, self.confidence = name, answer, 0, confidence
        self.field_confidences = field_confidences
        self.usage = Usage(input_tokens=usage[0], output_tokens=usage[1])

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.calls += 1
        text = self.answer(req) if callable(self.answer) else self.answer
        return ModelResponse(
            text=text,
            usage=self.usage,
            model=self.name,
            confidence=self.confidence,
            field_confidences=self.field_confidences,
        )


GOOD = '{"queue": "billing", "priority": 2}'
BAD = '{"queue": "sales", "priority": 2}'


class Tiers:
    def __init__(self, teacher, replay=None, student=None, skill=None, gate=None):
        self._t, self._r, self._s, self._skill, self._gate = teacher, replay, student, skill, gate

    def teacher(self, task):
        return self._t

    def replay(self, task):
        return self._r

    def student(self, task, *, forced):
        return StudentPick(self._s, "stu-1", self._gate) if self._s else None

    def skill(self, task, *, forced):
        return self._skill

    def prior_art(self, task):
        return []

    def cost(self, model, usage):  # $1 per M input, $5 per M output for every model: easy sums
        return usage.input_tokens * 1e-6 + usage.output_tokens * 5e-6


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/c.db")
    yield s
    s.close()


def runtime(policy: Policy | None = None, check=None, tools=()) -> TaskRuntime:
    # no shadow runs unless a test asks: a random shadow would call the teacher behind a routing test's back
    spec = TaskSpec(triage, policy=policy or Policy(shadow_rate=0), check=check, tools=list(tools))
    return TaskRuntime(spec=spec, version=1, tools=ToolBox(list(tools)))


def call(cascade: Cascade, task: TaskRuntime, **kw):
    inp = task.spec.parse_input((), {"ticket": {"subject": "refund please"}})
    return asyncio.run(cascade.run(task, inp, **kw))


def test_new_task_goes_to_teacher(store):
    """With no skill and no student, the teacher serves, and its trace and run are recorded."""
    teacher = Scripted("t", GOOD)
    res = call(Cascade(store, Tiers(teacher)), runtime())
    assert res.tier == "teacher" and res.output == Triage(queue="billing", priority=2)
    trace = store.trace(res.trace_ids[0])
    assert trace.valid and trace.tier == "teacher" and trace.output == {"queue": "billing", "priority": 2}
    assert store.run(res.run_id).status == "ok"


def test_approved_skill_routes_to_replay(store):
    """An approved skill makes replay the first tier, with the skill text in its prompt."""
    replay, teacher = Scripted("r", GOOD), Scripted("t", GOOD)
    res = call(Cascade(store, Tiers(teacher, replay, skill=("# SKILL body", 3))), runtime())
    assert (res.tier, teacher.calls, replay.calls) == ("replay", 0, 1)
    trace = store.trace(res.trace_ids[0])
    assert trace.skill_version == 3 and any("SKILL body" in m["content"] for m in trace.messages)


def test_failed_replay_escalates_and_both_traces_survive(store):
    """A schema-invalid replay answer escalates to the teacher; both attempts are in the store."""
    res = call(Cascade(store, Tiers(Scripted("t", GOOD), Scripted("r", BAD), skill=("s", 1))), runtime())
    assert [a.tier for a in res.attempts] == ["replay", "teacher"] and res.tier == "teacher"
    replay_trace, teacher_trace = (store.trace(i) for i in res.trace_ids)
    assert not replay_trace.valid and "queue" in replay_trace.errors[0]
    assert teacher_trace.valid and res.escalated


def test_promoted_student_serves_and_invalid_answer_escalates(store):
    """The student serves first; when its answer is invalid the next tier answers."""
    good = call(Cascade(store, Tiers(Scripted("t", GOOD), student=Scripted("s", GOOD))), runtime())
    assert good.tier == "student" and good.attempts[0].student_id == "stu-1"
    bad = call(Cascade(store, Tiers(Scripted("t", GOOD), student=Scripted("s", "not json"))), runtime())
    assert [a.tier for a in bad.attempts] == ["student", "teacher"]


def test_the_students_confidence_gate_escalates_unsure_answers(store):
    """A student promoted with a gate keeps the answers it is sure of and escalates the others (recorded as
    invalid, with the reason); Policy.min_confidence, when set, overrides the student's own floor."""

    def run(confidence, gate, policy=None):
        tiers = Tiers(Scripted("t", GOOD), student=Scripted("s", GOOD, confidence=confidence), gate=gate)
        return call(Cascade(store, tiers), runtime(policy=policy or Policy(shadow_rate=0)))

    assert run(0.9, gate=0.8).tier == "student"
    unsure = run(0.7, gate=0.8)
    assert [a.tier for a in unsure.attempts] == ["student", "teacher"]
    assert "low confidence: answer 0.700" in store.trace(unsure.trace_ids[0]).errors[0]
    assert run(0.7, gate=None).tier == "student"  # no gate: every valid answer stands
    assert run(0.7, gate=0.8, policy=Policy(min_confidence=0.6, shadow_rate=0)).tier == "student"
    assert run(0.9, gate=None, policy=Policy(min_confidence=0.95, shadow_rate=0)).tier == "teacher"


def test_one_unsure_field_escalates_the_call(store):
    """The gate goes by the least-sure field: a sure answer (mean 0.98) with one unsure field escalates, and the
    reason names the field; the attempts and RunResult carry the per-field confidences."""

    def run(fields):
        student = Scripted("s", GOOD, confidence=0.98, field_confidences=fields)
        return call(
            Cascade(store, Tiers(Scripted("t", GOOD), student=student, gate=0.8)), runtime(policy=Policy(shadow_rate=0))
        )

    sure = run({"queue": 0.99, "priority": 0.95})
    assert sure.tier == "student" and sure.field_confidences == {"queue": 0.99, "priority": 0.95}
    assert sure.confidence == 0.98 and sure.attempts[0].gate_confidence == 0.95
    unsure = run({"queue": 0.99, "priority": 0.41})
    assert [a.tier for a in unsure.attempts] == ["student", "teacher"]
    assert unsure.attempts[0].field_confidences == {"queue": 0.99, "priority": 0.41}
    assert "low confidence: field 'priority' 0.410 < the student's floor 0.800" in unsure.attempts[0].errors[0]
    assert unsure.field_confidences is None  # the teacher served it and gives none
    # the traces keep them: the escalated student's trace says which field it was unsure of
    assert store.trace(unsure.attempts[0].trace_id).field_confidences == {"queue": 0.99, "priority": 0.41}
    assert store.trace(unsure.attempts[1].trace_id).field_confidences is None


def test_check_failure_escalates(store):
    """A parseable answer that fails the task's check is invalid and escalates."""
    task = runtime(check=lambda inp, out: out.priority == 1)
    tiers = Tiers(Scripted("t", '{"queue": "bug", "priority": 1}'), Scripted("r", GOOD), skill=("s", 1))
    res = call(Cascade(store, tiers), task)
    assert res.tier == "teacher" and "rejected" in res.attempts[0].errors[0]


def test_forced_tier_and_escalate_false(store):
    """tier= forces the first tier; escalate=False turns its failure into a ValidationFailed naming the errors."""
    tiers = Tiers(Scripted("t", GOOD), Scripted("r", BAD), skill=("s", 1))
    cascade = Cascade(store, tiers)
    assert call(cascade, runtime(), tier="teacher").tier == "teacher"
    with pytest.raises(ValidationFailed) as err:
        call(cascade, runtime(), tier="replay", escalate=False)
    assert err.value.tier == "replay" and err.value.errors
    assert store.run(err.value.run_id).status == "failed"
    with pytest.raises(UserError, match="has no student"):
        call(cascade, runtime(), tier="student")
    with pytest.raises(UserError, match="not one of"):
        call(cascade, runtime(), tier="oracle")


def test_all_tiers_failing_raises_with_attempts(store):
    """When every tier fails, one AllTiersFailed carries every attempt; each is recorded."""
    with pytest.raises(AllTiersFailed) as err:
        call(Cascade(store, Tiers(Scripted("t", BAD), Scripted("r", BAD), skill=("s", 1))), runtime())
    assert [a.tier for a in err.value.attempts] == ["replay", "teacher"]
    assert store.count_traces("triage", valid=False) == 2


def test_tool_loop_runs_tools_and_records_transcript(store):
    """The agent loop runs a tool the model calls and feeds the result back before the final answer."""
    from protege.agents.models.base import ToolCall

    def lookup_account(email: str) -> dict:
        """Find the customer's plan."""
        return {"plan": "pro"}

    class ToolUser(Scripted):
        async def request(self, req):
            self.calls += 1
            if req.messages[-1].role != "tool":
                return ModelResponse(tool_calls=[ToolCall(id="c1", name="lookup_account", arguments={"email": "a@b"})])
            assert '"pro"' in req.messages[-1].content
            return ModelResponse(text=GOOD)

    res = call(Cascade(store, Tiers(ToolUser("t", None))), runtime(tools=[lookup_account]))
    roles = [m["role"] for m in store.trace(res.trace_ids[0]).messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]


def test_ledger_sums_match_traces(store):
    """The ledger's spend by tier equals the traces' costs; teacher-only is calls × mean teacher cost."""
    cascade = Cascade(store, Tiers(Scripted("t", GOOD, usage=(1000, 100)), Scripted("r", BAD), skill=("s", 1)))
    for _ in range(3):
        call(cascade, runtime())
    ledger = store.ledger("triage")
    traces = store.traces("triage", limit=None)
    for tier in ("teacher", "replay"):
        assert ledger.spend_by_tier[tier] == pytest.approx(sum(t.cost_usd for t in traces if t.tier == tier))
    assert ledger.teacher_only_usd == pytest.approx(3 * (1000e-6 + 100 * 5e-6))
    assert ledger.calls == 3 and ledger.calls_by_tier == {"teacher": 3}


def test_concurrent_async_calls_all_recorded(store):
    """200 concurrent calls on one SQLite store: every run and trace is written, none lost."""
    task = runtime()
    cascade = Cascade(store, Tiers(Scripted("t", GOOD)))

    async def main():
        inputs = [task.spec.parse_input((), {"ticket": {"subject": f"s{i}"}}) for i in range(200)]
        return await asyncio.gather(*(cascade.run(task, i) for i in inputs))

    results = asyncio.run(main())
    assert len({r.run_id for r in results}) == 200
    assert store.count_traces("triage") == 200 and len(store.runs("triage", limit=500)) == 200
    assert all(r.status == "ok" for r in store.runs("triage", limit=500))


async def _record_tier(tier, state):
    return {"attempts": [*state["attempts"], tier]}


def test_tier_graph_runs_each_routed_tier_and_leaves_its_input_as_it_was():
    """Entry edge, node, edge after it, until END: each node's update replaces its keys in a new state."""
    after = {"replay": "teacher", "teacher": END}
    graph = TierGraph(entry=lambda s: "replay", node=_record_tier, after=lambda s: after[s["attempts"][-1]])
    start = {"attempts": [], "output": None}
    assert asyncio.run(graph.ainvoke(start)) == {"attempts": ["replay", "teacher"], "output": None}
    assert start == {"attempts": [], "output": None}


def test_tier_graph_stops_a_route_longer_than_the_tiers():
    """A route that never reaches END (a bug in a plan) stops with an error after one step per tier."""
    graph = TierGraph(entry=lambda s: "teacher", node=_record_tier, after=lambda s: "teacher")
    with pytest.raises(RuntimeError, match="'teacher' after 4 tier"):
        asyncio.run(graph.ainvoke({"attempts": []}))


def route(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue.

    Refunds and invoices go to billing; an outage is priority 1."""


def test_a_student_is_asked_in_the_prompt_style_it_was_trained_with(store):
    """A student trained on the instructions' summary gets the summary; one trained on all of them, all of them."""
    spec = TaskSpec(route, policy=Policy(shadow_rate=0))
    task = TaskRuntime(spec=spec, version=1, tools=ToolBox([]))
    for prompt, system in (("summary", "Route a support ticket to a queue."), ("instructions", spec.instructions)):
        student = Scripted("s", GOOD)
        tiers = Tiers(Scripted("t", GOOD), student=student)
        tiers.student = lambda task, forced, s=student, p=prompt: StudentPick(s, "stu-1", prompt=p)
        res = call(Cascade(store, tiers), task)
        assert res.tier == "student"
        assert store.trace(res.trace_ids[0]).messages[0] == {"role": "system", "content": system}
    assert "\n\n" in spec.instructions  # the two styles differ here
