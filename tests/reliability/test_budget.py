"""The teacher spend cap under concurrency: threads, asyncio tasks and processes sharing one store never spend past
it together, and every reservation is settled (spent == the recorded cost) once the calls are over."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from protege import BudgetExceeded, Policy, Protege, RunResult
from protege.agents import FunctionModel
from protege.agents.budget import ALL_TASKS
from protege.agents.models.base import ModelResponse, Usage
from protege.cli import app as cli_app
from protege.store import RunRow, Store, TraceRow

from .common import HERE, OPUS, Ticket, Triage, oracle, register_triage, script_env

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
    for exc in (o for o in refused if isinstance(o, BudgetExceeded)):  # the figures it was refused on pass the cap
        committed, worst = _figures(str(exc))
        assert committed + worst > cap - 1e-4, str(exc)  # 1e-4: the message rounds to 4 places
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


KILLED_CALLER = """
import asyncio, sys
from common import OPUS, register_triage
from protege import Policy, Protege
from protege.agents import FunctionModel

async def never_answers(req):
    await asyncio.sleep(120)

app = Protege(db=sys.argv[1], teacher=FunctionModel(never_answers, price_as=OPUS), project_dir=sys.argv[2])
register_triage(app, policy=Policy(teacher_budget_usd=100.0))
app.run("triage", {"ticket": {"subject": "killed mid-call"}})
"""


def test_a_killed_callers_reservation_is_released_for_the_next_callers(app, tmp_path, caplog):
    """kill -9 during a teacher call left its reservation counted all day: fresh workers were refused with
    BudgetExceeded while `protege stats` showed $0 spent. `stats` now shows the reservation, and the next
    reservation releases it (a warning says how much)."""
    worker = subprocess.Popen(
        [sys.executable, "-c", KILLED_CALLER, app.store.url, str(tmp_path / ".killed")],
        env=script_env(),
        cwd=HERE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while app.store.spent("triage") == 0 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        reserved = app.store.spent("triage")
        assert reserved > 0, worker.stderr.read().decode() if worker.poll() is not None else "no reservation"
    finally:
        worker.kill()  # SIGKILL: no handler, atexit or finally of the worker runs
        worker.wait()
    shown = CliRunner().invoke(cli_app, ["--db", app.store.url, "stats"], env={"COLUMNS": "200"})
    assert re.search(rf"triage +\$0 +\${reserved:.4f} +1 ", shown.output), shown.output  # visible to an operator
    register_triage(app, policy=Policy(teacher_budget_usd=1.5 * reserved))  # room for one call, not two
    with caplog.at_level(logging.WARNING, logger="protege"):
        result = app.run("triage", {"ticket": {"subject": "killed mid-call"}})
    assert result.tier == "teacher"
    assert f"released a teacher budget reservation of ${reserved:.4f}" in caplog.text
    assert app.store.spent("triage") == pytest.approx(recorded_cost(app.store, "triage"), abs=1e-9)


def test_a_refusal_reports_the_figures_it_was_refused_on(tmp_path, monkeypatch):
    """The message re-read the spend after the refusal, when other calls had settled below their worst cases: "cap
    $0.5000 ... $0.4284 is spent or reserved; this call could cost up to $0.0528", figures under the cap. It now
    reports what the cap was checked against, under the lock that refused."""
    from protege.agents.budget import BudgetedModel
    from protege.agents.models.base import Message, ModelRequest
    from protege.agents.pricing import default_table

    store = Store(f"sqlite:///{tmp_path}/r.db")
    other = store.reserve_budget(0.48, {"triage": CAP})  # another call in flight, about to settle for less
    reserve = store.reserve_budget

    def others_settle_right_after(amount, caps, **kw):
        outcome = reserve(amount, caps, **kw)
        store.settle_budget(other, 0.01)
        return outcome

    monkeypatch.setattr(store, "reserve_budget", others_settle_right_after)
    model = BudgetedModel(FunctionModel(oracle, price_as=OPUS), store, "triage", {"triage": CAP}, default_table())
    request = ModelRequest(messages=[Message(role="user", content="refund please")], max_tokens=1000)
    with pytest.raises(BudgetExceeded) as caught:
        asyncio.run(model.request(request))
    committed, worst = _figures(str(caught.value))
    assert committed + worst > CAP and caught.value.spent == pytest.approx(0.48), str(caught.value)
    store.close()


def _figures(message: str) -> tuple[float, float]:
    """The spent-or-reserved figure and the call's worst case a BudgetExceeded message names."""
    committed = re.search(r"\$(\d+\.\d+) is spent or reserved", message)
    worst = re.search(r"could cost up to \$(\d+\.\d+)", message)
    assert committed and worst, message
    return float(committed[1]), float(worst[1])
