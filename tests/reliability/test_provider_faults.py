"""Provider failures through the real SDKs (AnthropicModel, OpenAIModel) talking HTTP to the FakeProvider, seen
from the app: retried by the SDK, or recorded as a failed attempt and escalated; one AllTiersFailed at the end."""

from __future__ import annotations

import time

import pytest

from protege import AllTiersFailed, Policy, Protege
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.models.base import FINAL_TOOL
from protege.agents.models.openai import OpenAIModel
from protege.skills import Skill
from protege.testing import FakeProvider, Reply

from .common import BAD, GOOD, register_triage

KEY = "sk-test-fault-0000"
RETRIES = 1  # SDK retries per request: small, so exhausted retries are quick
SLOW_TIMEOUT = 0.5  # client timeout where every request is slow; the fake stays silent for 5 s
RECOVER_TIMEOUT = 1.0  # client timeout where a slow request is followed by one that must answer in time

# (fault kwargs, the ModelError subclass recorded, whether the SDK retries it)
FAULTS = {
    "429": ({"status": 429, "retry_after": 0}, "RateLimited", True),
    "500": ({"status": 500, "retry_after": 0}, "ModelError", True),
    "overloaded": ({"status": 529, "retry_after": 0}, "Overloaded", True),
    "timeout": ({"slow": 5.0}, "ModelTimeout", True),
    "malformed": ({"malformed": True}, "BadResponse", False),
    "truncated": ({"truncated": True}, "Unfinished", False),
}


def fallback(provider: str, body: dict) -> Reply | str:
    """Requests not scripted by a test (the skill author's, in the background) get plain prose."""
    return "I have nothing to add."


@pytest.fixture
def fake():
    with FakeProvider(api_key=KEY, handler=fallback) as server:
        yield server


def sdk_model(fake: FakeProvider, provider: str, tier: str, timeout: float = 30.0):
    if provider == "anthropic":
        name = "claude-opus-4-5" if tier == "teacher" else "claude-haiku-4-5"
        return AnthropicModel(name, api_key=KEY, base_url=fake.anthropic_base_url, max_retries=RETRIES, timeout=timeout)
    name = "gpt-4o" if tier == "teacher" else "gpt-4o-mini"
    return OpenAIModel(name, api_key=KEY, base_url=fake.openai_base_url, max_retries=RETRIES, timeout=timeout)


def make_app(tmp_path, fake, teacher: str, replay: str | None = None, timeout: float = 30.0) -> Protege:
    app = Protege(
        db=f"sqlite:///{tmp_path}/faults.db",
        teacher=sdk_model(fake, teacher, "teacher", timeout),
        replay=sdk_model(fake, replay or teacher, "replay", timeout),
        project_dir=tmp_path / ".protege",
    )
    register_triage(app, policy=Policy(shadow_rate=0))  # no background teacher call may take a scripted reply
    if replay is not None:  # an approved skill makes replay the first tier
        app.skills.add(
            "triage",
            Skill(
                name="triage",
                description="Route support tickets to a queue.",
                body="# Triage\n\nRefunds and charges are billing.",
            ),
        )
        app.approve_skill("triage")
    return app


def task_requests(fake: FakeProvider, provider: str | None = None) -> list:
    """Requests made for task attempts (not the skill author's): they carry the structured-answer contract."""

    def is_task(body: dict) -> bool:
        return "response_format" in body or any(t.get("name") == FINAL_TOOL for t in body.get("tools", []))

    return [r for r in fake.requests if is_task(r.body) and (provider is None or r.provider == provider)]


def fault_for(provider: str, name: str) -> dict:
    kwargs = dict(FAULTS[name][0])
    if provider == "openai" and kwargs.get("status") == 529:
        kwargs["status"] = 503  # OpenAI says "overloaded" with a 503
    return kwargs


def call(app: Protege, subject: str = "refund please"):
    try:
        return app.run("triage", {"ticket": {"subject": subject}})
    finally:
        app.wait()  # let background skill work finish before the next scripted call


def matrix(faults: list[str], default: list[tuple[str, str]]) -> list:
    """Every (fault, provider) pair: `default` in the normal suite, the rest under `make soak`."""
    return [
        pytest.param(f, p, marks=() if (f, p) in default else pytest.mark.soak)
        for f in faults
        for p in ("anthropic", "openai")
    ]


@pytest.mark.parametrize(
    "fault, provider",
    matrix(
        ["429", "500", "overloaded", "timeout"],
        [
            ("429", "anthropic"),
            ("429", "openai"),
            ("500", "openai"),
            ("overloaded", "anthropic"),
            ("timeout", "openai"),
        ],
    ),
)
def test_transient_fault_is_retried_by_the_sdk(tmp_path, fake, provider, fault):
    """One transient fault (429 with retry-after, 500, overloaded, timeout) is retried inside the SDK: the call
    succeeds on the teacher with a single valid trace, and the retry cost one extra request, no escalation."""
    app = make_app(tmp_path, fake, provider, timeout=RECOVER_TIMEOUT if fault == "timeout" else 30.0)
    fake.add_fault(**fault_for(provider, fault))
    fake.add_final(GOOD)
    t0 = time.perf_counter()
    res = call(app)
    elapsed = time.perf_counter() - t0
    assert res.tier == "teacher" and res.output.model_dump() == GOOD and len(res.attempts) == 1
    assert len(task_requests(fake, provider)) == 2
    (trace,) = app.store.traces("triage", limit=None, tier="teacher")
    assert trace.valid and trace.run_id == res.run_id and trace.raw
    assert elapsed < (RECOVER_TIMEOUT + 4 if fault == "timeout" else 4), elapsed  # retry-after 0 is honoured
    app.close()


@pytest.mark.parametrize(
    "fault, provider",
    matrix(
        list(FAULTS),
        [
            ("429", "openai"),
            ("500", "anthropic"),
            ("overloaded", "openai"),
            ("timeout", "anthropic"),
            ("malformed", "openai"),
            ("truncated", "anthropic"),
        ],
    ),
)
def test_teacher_fault_past_retries_is_one_all_tiers_failed(tmp_path, fake, provider, fault):
    """A fault that outlasts the SDK's retries (or is not retryable) ends the call in one AllTiersFailed that
    carries the attempt; the attempt is a trace holding the error class, and the run is marked failed."""
    app = make_app(tmp_path, fake, provider, timeout=SLOW_TIMEOUT if fault == "timeout" else 30.0)
    kwargs, error, retried = FAULTS[fault]
    for _ in range(RETRIES + 1 if retried else 1):
        fake.add_fault(**fault_for(provider, fault))
    with pytest.raises(AllTiersFailed) as caught:
        call(app)
    assert fake.pending == 0 and len(task_requests(fake, provider)) == (RETRIES + 1 if retried else 1)
    (attempt,) = caught.value.attempts
    assert attempt.tier == "teacher" and not attempt.valid and attempt.errors[0].startswith(f"{error}: ")
    (trace,) = app.store.traces("triage", limit=None)
    assert trace.id == attempt.trace_id and trace.run_id == caught.value.run_id
    assert not trace.valid and trace.errors == attempt.errors and trace.output is None
    run = app.store.run(caught.value.run_id)
    assert run.status == "failed" and error in run.error
    app.close()


ESCALATIONS = [  # (fault, replay provider, teacher provider): each SDK fails as replay in half of them by default
    ("429", "anthropic", "openai"),
    ("500", "openai", "anthropic"),
    ("overloaded", "anthropic", "openai"),
    ("timeout", "openai", "anthropic"),
    ("malformed", "anthropic", "openai"),
    ("truncated", "openai", "anthropic"),
    ("schema", "anthropic", "openai"),
    ("schema", "openai", "anthropic"),
]
ESCALATIONS += [pytest.param(f, t, r, marks=pytest.mark.soak) for f, r, t in ESCALATIONS[:6]]  # the other way round


@pytest.mark.parametrize("fault, replay, teacher", ESCALATIONS)
def test_replay_fault_escalates_to_teacher(tmp_path, fake, replay, teacher, fault):
    """A replay attempt that fails (any provider fault, or a schema-invalid answer) is recorded with its error and
    the call escalates to the teacher on the other provider, which serves it; both traces belong to the run."""
    app = make_app(tmp_path, fake, teacher, replay=replay, timeout=RECOVER_TIMEOUT if fault == "timeout" else 30.0)
    if fault == "schema":
        fake.add_final(BAD)
    else:
        for _ in range(RETRIES + 1 if FAULTS[fault][2] else 1):
            fake.add_fault(**fault_for(replay, fault))
    fake.add_final(GOOD)
    res = call(app)
    assert [a.tier for a in res.attempts] == ["replay", "teacher"] and res.tier == "teacher"
    failed, served = (app.store.trace(i) for i in res.trace_ids)
    assert failed.run_id == served.run_id == res.run_id and failed.skill_version == 1
    assert not failed.valid and served.valid and served.model.startswith(teacher)
    if fault == "schema":
        assert "queue" in failed.errors[0] and failed.output_text  # the invalid answer is kept for review
    else:
        assert failed.errors[0].startswith(f"{FAULTS[fault][1]}: ")
    assert app.store.run(res.run_id).status == "ok"
    app.close()


def test_every_tier_failing_is_one_error_carrying_every_attempt(tmp_path, fake):
    """Replay overloaded, then the teacher rate limited past its retries: one AllTiersFailed names both, each
    attempt is a trace with its error, and the run row records the failure."""
    app = make_app(tmp_path, fake, "anthropic", replay="openai")
    for _ in range(RETRIES + 1):
        fake.add_fault(503, retry_after=0)
    for _ in range(RETRIES + 1):
        fake.add_fault(429, retry_after=0)
    with pytest.raises(AllTiersFailed) as caught:
        call(app)
    err = caught.value
    assert [(a.tier, a.errors[0].split(":")[0]) for a in err.attempts] == [
        ("replay", "Overloaded"),
        ("teacher", "RateLimited"),
    ]
    assert "replay (openai:gpt-4o-mini)" in str(err) and "teacher (anthropic:claude-opus-4-5)" in str(err)
    traces = {t.id: t for t in app.store.traces("triage", limit=None)}
    assert set(traces) == {a.trace_id for a in err.attempts}
    assert all(not t.valid and t.run_id == err.run_id for t in traces.values())
    assert app.store.run(err.run_id).status == "failed"
    app.close()
