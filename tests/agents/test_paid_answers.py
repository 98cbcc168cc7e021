"""Answers a provider billed but that must not be served, or whose usage it did not report: through the cascade, the
teacher budget and the ledger, with the real SDKs against FakeProvider. Unfinished answers (a refusal, a content
filter, a full context window, the token limit) escalate with their reason on the trace; unreadable ones are charged
what they cost instead of $0; a missing usage is estimated, never free."""

from __future__ import annotations

import asyncio

import pytest
from triage_support import Ticket, Triage

from protege.agents.budget import ALL_TASKS, BudgetedModel
from protege.agents.cascade import Cascade, StudentPick, TaskRuntime
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.models.base import FINAL_TOOL, Usage
from protege.agents.models.openai import OpenAIModel
from protege.agents.pricing import cost_of, default_table
from protege.agents.tools import ToolBox
from protege.errors import AllTiersFailed, BudgetExceeded
from protege.store import Store
from protege.tasks import Policy, TaskSpec
from protege.testing import FakeProvider, Reply

ANSWER = {"queue": "billing", "priority": 2}
PAID = {"input_tokens": 1000, "output_tokens": 200}


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


class Tiers:
    """A TierSource with real prices: the teacher (and a replay model with its skill, when given)."""

    def __init__(self, teacher, replay=None):
        self._teacher, self._replay = teacher, replay

    def teacher(self, task):
        return self._teacher

    def replay(self, task):
        return self._replay

    def student(self, task, *, forced) -> StudentPick | None:
        return None

    def skill(self, task, *, forced):
        return ("Money words mean billing.", 1) if self._replay else None

    def prior_art(self, task):
        return []

    def cost(self, model, usage):
        return cost_of(model, usage)


@pytest.fixture
def fake():
    with FakeProvider() as server:
        yield server


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/paid.db")
    yield s
    s.close()


def claude(fake):
    return AnthropicModel("claude-opus-4-5", api_key="k", base_url=fake.anthropic_base_url, max_retries=0)


def gpt(fake):
    return OpenAIModel("gpt-4o", api_key="k", base_url=fake.openai_base_url, max_retries=0)


def budgeted(model, store, cap=1.0):
    return BudgetedModel(model, store, "triage", {"triage": cap, ALL_TASKS: None}, default_table())


def runtime(policy: Policy | None = None, tools=()) -> TaskRuntime:
    spec = TaskSpec(triage, policy=policy or Policy(shadow_rate=0, program=False), tools=list(tools))
    return TaskRuntime(spec=spec, version=1, tools=ToolBox(list(tools)))


def call(cascade: Cascade, task: TaskRuntime | None = None):
    task = task or runtime()
    inp = task.spec.parse_input((), {"ticket": {"subject": "refund please"}})
    return asyncio.run(cascade.run(task, inp))


@pytest.mark.parametrize("stop", ["refusal", "model_context_window_exceeded", "pause_turn", "max_tokens"])
def test_an_unfinished_teacher_answer_is_never_served_and_says_why(fake, store, stop):
    """An answer Claude did not finish was served and stored as a valid teacher trace when it parsed. Now the
    attempt is invalid with the stop reason in its errors, nothing is sent back to repair it, and it is charged."""
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason=stop, usage=PAID))
    teacher = claude(fake)
    with pytest.raises(AllTiersFailed) as caught:
        call(Cascade(store, Tiers(teacher)))
    attempt = caught.value.attempts[0]
    reason = "token limit" if stop == "max_tokens" else repr(stop)
    assert not attempt.valid and reason in " ".join(attempt.errors)
    assert attempt.cost_usd == pytest.approx(cost_of(teacher, Usage(**PAID)))
    trace = store.trace(attempt.trace_id)
    assert not trace.valid and trace.output is None and trace.raw[0]["stop_reason"] == stop
    assert len(fake.requests) == 1  # an unfinished answer is not one a repair turn can fix


def test_tool_calls_in_an_unfinished_reply_are_not_run(fake, store):
    """A reply cut at max_tokens may hold cut tool calls: the loop stops there instead of running them."""
    ran = []

    def lookup_account(email: str) -> dict:
        """Find the customer's plan."""
        ran.append(email)
        return {"plan": "pro"}

    fake.add_reply(Reply("tool_calls", calls=[("t1", "lookup_account", {"email": "a"})], stop_reason="max_tokens"))
    with pytest.raises(AllTiersFailed) as caught:
        call(Cascade(store, Tiers(claude(fake))), runtime(tools=[lookup_account]))
    assert ran == [] and len(fake.requests) == 1
    assert "token limit" in caught.value.attempts[0].errors[0]


def test_an_unfinished_replay_answer_escalates_to_the_teacher(fake, store):
    """OpenAI's content_filter answer from the replay model was served; now the call escalates to the teacher."""
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason="content_filter", usage=PAID))
    fake.add_final(ANSWER)
    res = call(Cascade(store, Tiers(claude(fake), replay=gpt(fake))))
    replay, teacher = res.attempts
    assert res.tier == "teacher" and teacher.valid and not replay.valid
    assert "'content_filter'" in replay.errors[0] and replay.cost_usd > 0
    assert not store.trace(replay.trace_id).valid


def test_a_cut_answer_names_the_policy_setting_and_max_tokens_sizes_the_reservation(fake, store):
    """'raise max_tokens' named no setting: Policy.max_tokens now sets the requests' limit and the budget's
    worst case alike. Under a $0.03 cap Opus's default 2,048 output tokens ($0.05) are refused before sending;
    with max_tokens=300 the call goes out asking for 300, and an answer cut there says what to raise."""
    with pytest.raises(BudgetExceeded):
        call(Cascade(store, Tiers(budgeted(claude(fake), store, cap=0.03))))
    assert fake.requests == []
    fake.add_reply(Reply("final", answer=ANSWER, stop_reason="max_tokens", usage={"output_tokens": 300}))
    with pytest.raises(AllTiersFailed) as caught:
        policy = Policy(shadow_rate=0, program=False, max_tokens=300)
        call(Cascade(store, Tiers(budgeted(claude(fake), store, cap=0.03))), runtime(policy))
    assert fake.requests[0].body["max_tokens"] == 300
    assert "(300 tokens)" in caught.value.attempts[0].errors[0]
    assert "Policy.max_tokens" in caught.value.attempts[0].errors[0]


def bad_tool_arguments(fake):  # Claude's tool input is an object; a string one cannot be read
    fake.add_tool_call("lookup_account", '{"email": "ann@', usage=PAID)
    return claude(fake)


def two_final_answers(fake):
    fake.add_tool_calls([(FINAL_TOOL, ANSWER), (FINAL_TOOL, {**ANSWER, "priority": 5})], usage=PAID)
    return claude(fake)


@pytest.mark.parametrize("unreadable", [bad_tool_arguments, two_final_answers])
def test_an_unreadable_answer_is_charged_on_the_trace_the_run_and_the_budget(fake, store, unreadable):
    """A paid answer that could not be read cost $0 in the ledger and released its budget reservation, so the
    daily cap could be overspent without bound. Its reported usage is now charged everywhere."""
    teacher = unreadable(fake)
    with pytest.raises(AllTiersFailed) as caught:
        call(Cascade(store, Tiers(budgeted(teacher, store))))
    cost = cost_of(teacher, Usage(**PAID))
    attempt = caught.value.attempts[0]
    assert "BadResponse" in attempt.errors[0] and attempt.cost_usd == pytest.approx(cost)
    trace = store.trace(attempt.trace_id)
    assert trace.cost_usd == pytest.approx(cost) and trace.input_tokens == 1000 and trace.output_tokens == 200
    assert trace.raw[0]["error"] and store.run(caught.value.run_id).cost_usd == pytest.approx(cost)
    assert store.spent("triage") == pytest.approx(cost)  # settled at the cost, not released


def test_an_unreadable_turn_after_a_tool_call_adds_its_cost_to_the_attempt(fake, store):
    """In a tool loop, a later turn that cannot be read is charged beside the turns before it."""

    def lookup_account(email: str) -> dict:
        """Find the customer's plan."""
        return {"plan": "pro"}

    fake.add_tool_call("lookup_account", {"email": "ann@example.com"}, usage={"input_tokens": 500, "output_tokens": 20})
    fake.add_tool_call("lookup_account", "{not json", usage=PAID)  # a string input: Claude's answer is unreadable
    teacher = claude(fake)
    with pytest.raises(AllTiersFailed) as caught:
        call(Cascade(store, Tiers(budgeted(teacher, store))), runtime(tools=[lookup_account]))
    assert "BadResponse" in caught.value.attempts[0].errors[0]
    cost = cost_of(teacher, Usage(input_tokens=1500, output_tokens=220))
    assert caught.value.attempts[0].cost_usd == pytest.approx(cost)
    assert store.spent("triage") == pytest.approx(cost)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_an_answer_without_usage_is_served_and_charged_its_estimate(fake, store, provider):
    """No `usage` in the reply: Claude's valid answer was thrown away, OpenAI's cost $0 and escaped the cap. Both
    are served now, and the trace, the ledger and the budget charge the same estimate."""
    fake.add_reply(Reply("final", answer=ANSWER, omit_usage=True))
    teacher = claude(fake) if provider == "anthropic" else gpt(fake)
    res = call(Cascade(store, Tiers(budgeted(teacher, store))))
    trace = store.trace(res.trace_ids[0])
    assert res.tier == "teacher" and res.output == Triage(**ANSWER) and trace.valid
    assert trace.raw[0]["usage_estimated"] is True and trace.input_tokens > 50 and trace.output_tokens > 5
    assert res.cost_usd > 0 and store.spent("triage") == pytest.approx(res.cost_usd)
