"""The teacher spend cap under concurrency: threads, asyncio tasks and processes sharing one store never spend past
it together, and every reservation is settled (spent == the recorded cost) once the calls are over."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sqlalchemy import func, select

from protege import BudgetExceeded, Policy, Protege, RunResult
from protege.agents import FunctionModel
from protege.agents.budget import ALL_TASKS
from protege.agents.models.base import ModelResponse, Usage
from protege.store import RunRow, Store, TraceRow

from .common import OPUS, Ticket, Triage, oracle, register_triage

CAP = 0.5  # about 20 calls' worth of $0.0225 each; the worst-case reservation is about $0.05


def recorded_cost(store: Store, task: str | None = None) -> float:
    stmt = select(func.coalesce(func.sum(TraceRow.cost_usd), 0.0))
    if task is not None:
        stmt = stmt.where(TraceRow.task_name == task)
    with store.engine.connect() as conn:
        return float(conn.execute(stmt).scalar())


def check_books(store: Store, scope: str, cap: float, outcomes: list, cost_of_scope: float) -> tuple[int, int]:
    """Served and refused counts; the cap held, and the ledger of reservations equals the recorded spend."""
    served = sum(isinstance(o, RunResult) or (isinstance(o, dict) and "error" not in o) for o in outcomes)
    refused = [o for o in outcomes if isinstance(o, BudgetExceeded) or (isinstance(o, dict) and o.get("error"))]
    assert all(isinstance(o, BudgetExceeded) or o["error"] == "BudgetExceeded" for o in refused), refused[:3]
    assert served + len(refused) == len(outcomes) and served >= 1 and refused
    assert cost_of_scope <= cap + 1e-9 and store.spent(scope) <= cap + 1e-9
    assert store.spent(scope) == pytest.approx(cost_of_scope, abs=1e-9)  # nothing left reserved or double-counted
    return served, len(refused)


@pytest.fixture
def app(tmp_path):
    a = Protege(
        db=f"sqlite:///{tmp_path}/b.db", teacher=FunctionModel(oracle, price_as=OPUS), project_dir=tmp_path / ".p"
    )
    yield a
    a.close()


def test_cap_holds_under_threads_and_asyncio_at_once(app):
    """16 threads of sync calls and 48 concurrent async calls on one app and one cap: the cap holds, every refusal is
    a BudgetExceeded, and the reserved spend settles to exactly the recorded cost."""
    register_triage(app, policy=Policy(teacher_budget_usd=CAP))
    outcomes: list = []
    lock = threading.Lock()

    def sync_caller(t: int) -> None:
        for i in range(4):
            try:
                out = app.run("triage", {"ticket": {"subject": f"thread {t} call {i}"}})
            except BudgetExceeded as exc:
                out = exc
            with lock:
                outcomes.append(out)

    async def async_callers() -> list:
        return await asyncio.gather(
            *(app.arun("triage", {"ticket": {"subject": f"async {i}"}}) for i in range(48)), return_exceptions=True
        )

    threads = [threading.Thread(target=sync_caller, args=(t,)) for t in range(16)]
    for t in threads:
        t.start()
    outcomes += asyncio.run(async_callers())
    for t in threads:
        t.join()
    app.wait()
    served, refused = check_books(app.store, "triage", CAP, outcomes, recorded_cost(app.store, "triage"))
    assert served + refused == 112
    print(
        f"threads+asyncio, 112 calls, cap ${CAP}: {served} served, {refused} refused, "
        f"spent ${app.store.spent('triage'):.4f}"
    )
    with app.store.engine.connect() as conn:
        failed = conn.execute(select(RunRow.id).where(RunRow.status == "failed")).scalars().all()
        traced = conn.execute(select(TraceRow.run_id).where(TraceRow.run_id.in_(failed))).scalars().all()
    assert len(failed) == refused and traced == []  # a refused call spent nothing and recorded no attempt


def test_daily_cap_across_tasks_holds_under_threads(tmp_path):
    """The all-tasks daily cap (teacher_budget_usd_per_day) holds when two tasks spend against it at once."""
    app = Protege(
        db=f"sqlite:///{tmp_path}/d.db",
        teacher=FunctionModel(oracle, price_as=OPUS),
        project_dir=tmp_path / ".p",
        teacher_budget_usd_per_day=CAP,
    )
    register_triage(app)
    app.task(name="triage_two")(_triage)
    outcomes: list = []
    lock = threading.Lock()

    def caller(t: int) -> None:
        for i in range(6):
            try:
                out = app.run("triage" if t % 2 else "triage_two", {"ticket": {"subject": f"{t}-{i}"}})
            except BudgetExceeded as exc:
                out = exc
            with lock:
                outcomes.append(out)

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    app.wait()
    served, refused = check_books(app.store, ALL_TASKS, CAP, outcomes, recorded_cost(app.store))
    print(f"daily cap, 2 tasks x 12 threads, 72 calls: {served} served, {refused} refused")
    assert {type(o).__name__ for o in outcomes} == {"RunResult", "BudgetExceeded"}
    assert {o.scope for o in outcomes if isinstance(o, BudgetExceeded)} == {ALL_TASKS}
    app.close()


def _triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


def test_cancelled_call_releases_its_reservation(app):
    """A caller that gives up (asyncio timeout) while the teacher is still answering gets its reservation back."""

    async def slow(req):
        await asyncio.sleep(2)
        return ModelResponse(text='{"queue": "bug", "priority": 1}', usage=Usage(input_tokens=10, output_tokens=10))

    app.teacher_spec = FunctionModel(slow, price_as=OPUS)
    register_triage(app, policy=Policy(teacher_budget_usd=CAP))

    async def give_up():
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(app.arun("triage", {"ticket": {"subject": "x"}}), 0.3)

    asyncio.run(give_up())
    deadline = time.monotonic() + 5
    while app.store.spent("triage") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.store.spent("triage") == 0.0
