"""The teacher budget: reservations are atomic under concurrency, each scope's or none, released when their process
dies; the ledger sums what the traces cost."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from protege.store import BudgetHold, BudgetRefusal, RunRow, Store, TraceRow


def test_reservations_respect_the_cap(store):
    """Reservations pass until the next would exceed the cap; settling and releasing free room again."""
    first = store.reserve_budget(0.6, {"t": 1.0}, day="d")
    assert isinstance(first, BudgetHold)
    assert isinstance(store.reserve_budget(0.6, {"t": 1.0}, day="d"), BudgetRefusal)
    second = store.reserve_budget(0.4, {"t": 1.0}, day="d")  # exactly at the cap is allowed
    assert isinstance(second, BudgetHold) and store.spent("t", day="d") == pytest.approx(1.0)
    store.settle_budget(first, 0.1)  # billed less than its worst case
    assert store.spent("t", day="d") == pytest.approx(0.5)
    store.release_budget(second)
    assert isinstance(store.reserve_budget(0.9, {"t": 1.0}, day="d"), BudgetHold)
    assert isinstance(store.reserve_budget(100.0, {"t": None}, day="d"), BudgetHold)  # no cap: always reserved
    assert store.spent("t", day="other") == 0.0
    assert isinstance(store.reserve_budget(2.0, {"u": 1.0}, day="d"), BudgetRefusal)  # a first one over the cap too
    assert store.spent("u", day="d") == 0.0


def test_a_reservation_takes_every_scope_or_none(store):
    """A call reserves against its task's cap and the all-tasks cap together: refused by either, it holds neither."""
    assert isinstance(store.reserve_budget(0.5, {"a": 1.0, "*": 0.8}, day="d"), BudgetHold)
    refused = store.reserve_budget(0.5, {"b": 1.0, "*": 0.8}, day="d")
    assert isinstance(refused, BudgetRefusal) and refused.scope == "*"
    assert (store.spent("b", day="d"), store.spent("*", day="d")) == (0.0, pytest.approx(0.5))
    assert len(store.budget_holds()) == 2  # the granted one, once per scope


def test_a_refusal_reports_the_figures_it_was_decided_on(store):
    """The refusal's spent and reserved are read under the lock that refused it: with what was asked they pass the
    cap (a message re-reading `spent` after others settled printed figures that fit under it)."""
    held = store.reserve_budget(0.3, {"t": 0.5}, day="d")
    store.settle_budget(store.reserve_budget(0.1, {"t": 0.5}, day="d"), 0.1)
    refused = store.reserve_budget(0.2, {"t": 0.5}, day="d")
    assert isinstance(held, BudgetHold) and isinstance(refused, BudgetRefusal)
    assert (refused.cap, refused.spent, refused.reserved, refused.amount) == pytest.approx((0.5, 0.1, 0.3, 0.2))
    assert refused.committed + refused.amount > refused.cap


def test_a_dead_processs_reservation_is_released_by_the_next_one(store, caplog):
    """A process killed mid-call (kill -9) kept its reservation counted against the cap for the rest of the day, and
    no later process could release it. Now its hold row names the owner: the next reservation releases it, and
    says so once, with the amount."""
    dead = _dead_owner()
    assert isinstance(store.reserve_budget(0.8, {"t": 1.0, "*": 5.0}, owner=dead), BudgetHold)
    assert store.spent("t") == pytest.approx(0.8)
    with caplog.at_level(logging.WARNING, logger="protege"):
        assert isinstance(store.reserve_budget(0.8, {"t": 1.0}), BudgetHold)
        assert isinstance(store.reserve_budget(0.1, {"t": 1.0}), BudgetHold)
    released = [r.getMessage() for r in caplog.records if "released a teacher budget reservation" in r.getMessage()]
    assert len(released) == 1 and "$0.8000" in released[0] and "process is gone" in released[0], released
    assert "task 't'" in released[0] and "all tasks" in released[0]
    assert store.spent("t") == pytest.approx(0.9) and store.spent("*") == 0.0


def test_a_reservation_past_its_lease_is_released_and_a_late_settle_still_counts(store, caplog):
    """A hold of a live owner on another host is released once its lease runs out; should that call still settle,
    its cost is counted once and the reserved total is not taken down twice."""
    elsewhere = "another-host:1:token"
    slow = store.reserve_budget(0.5, {"t": 1.0}, owner=elsewhere, lease_s=-1)  # already past its lease
    assert isinstance(store.reserve_budget(0.9, {"t": 1.0}), BudgetHold)
    assert "lease ran out" in caplog.text
    store.settle_budget(slow, 0.05)
    (state,) = store.budget()
    assert (state.spent_usd, state.reserved_usd, state.holds) == pytest.approx((0.05, 0.9, 1))


def test_reservations_are_atomic_across_threads_and_stores(store_url):
    """Sixteen threads over two Store objects (two pools) race 400 reservations at a cap of 50: exactly 50 pass,
    and settling them all leaves nothing reserved."""
    stores = [Store(store_url), Store(store_url)]
    try:

        def reserve(i: int) -> BudgetHold | BudgetRefusal:
            return stores[i % 2].reserve_budget(1.0, {"race": 50.0, "*": None}, day="d")

        with ThreadPoolExecutor(16) as pool:
            granted = [h for h in pool.map(reserve, range(400)) if isinstance(h, BudgetHold)]
        assert len(granted) == 50
        assert stores[0].spent("race", day="d") == pytest.approx(50.0)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda h: stores[1].settle_budget(h, 0.5), granted))
        states = {s.scope: s for s in stores[0].budget(day="d")}
        assert (states["race"].spent_usd, states["race"].reserved_usd, states["race"].holds) == pytest.approx(
            (25.0, 0.0, 0)
        )
        assert states["*"].spent_usd == pytest.approx(25.0) and stores[0].budget_holds() == []
    finally:
        for s in stores:
            s.close()


def _dead_owner() -> str:
    """The owner id of a process of this host that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return f"{socket.gethostname()}:{int(proc.stdout)}:deadbeef"


def test_ledger_sums_match_the_traces(store):
    """Spend by tier sums every attempt; teacher-only = calls x mean valid non-shadow teacher cost."""
    runs = [RunRow(id=f"r{i}", task_name="t") for i in range(4)]
    for run in runs:
        store.insert_run(run)
    attempts = [
        ("r0", "teacher", 0.10, True, False),
        ("r1", "replay", 0.01, False, False),
        ("r1", "teacher", 0.30, True, False),
        ("r2", "replay", 0.02, True, False),
        ("r2", "teacher", 0.50, True, True),  # shadow: counted in spend only
        ("r3", "student", 0.0, True, False),
    ]
    for run_id, tier, cost, valid, shadow in attempts:
        store.insert_trace(TraceRow(run_id=run_id, task_name="t", tier=tier, cost_usd=cost, valid=valid, shadow=shadow))
    store.insert_trace(TraceRow(task_name="other", tier="teacher", cost_usd=9.0, valid=True))
    for run_id, tier in [("r0", "teacher"), ("r1", "teacher"), ("r2", "replay"), ("r3", "student")]:
        store.finish_run(run_id, status="ok", tier=tier)
    ledger = store.ledger("t")
    assert ledger.calls == 4
    assert ledger.calls_by_tier == {"teacher": 2, "replay": 1, "student": 1}
    assert ledger.spend_by_tier == pytest.approx({"teacher": 0.90, "replay": 0.03, "student": 0.0})
    assert ledger.total_usd == pytest.approx(0.93)
    assert ledger.teacher_only_usd == pytest.approx(4 * 0.20)
    assert ledger.savings_usd == pytest.approx(0.80 - 0.93)
    assert ledger.savings_ratio == pytest.approx((0.80 - 0.93) / 0.80)


def test_failed_and_refused_calls_are_no_savings(store):
    """Teacher-only prices the served calls: a call the provider failed (or the budget refused) would not have
    been answered for the teacher's price either; counted, one failure in three read as 33% saved."""
    for i, status in enumerate(["failed", "ok", "ok"]):
        store.insert_run(RunRow(id=f"r{i}", task_name="t"))
        store.insert_trace(
            TraceRow(run_id=f"r{i}", task_name="t", tier="teacher", cost_usd=0.0 if i == 0 else 0.1, valid=i > 0)
        )
        store.finish_run(f"r{i}", status=status, tier=None if i == 0 else "teacher")
    ledger = store.ledger("t")
    assert ledger.calls == 3 and ledger.calls_by_tier == {"teacher": 2}
    assert ledger.teacher_only_usd == pytest.approx(0.2) and ledger.savings_usd == pytest.approx(0.0)
    # a call whose paid teacher answer stayed invalid costs the same without protege: no loss either (was -33%)
    store.insert_run(RunRow(id="r3", task_name="t"))
    store.insert_trace(TraceRow(run_id="r3", task_name="t", tier="teacher", cost_usd=0.1, valid=False))
    store.finish_run("r3", status="failed", tier=None)
    # imported logs' costs were spent before protege: apart, in neither figure
    store.insert_traces([{"task_name": "t", "tier": "import", "input": {}, "output": {}, "cost_usd": 0.5}])
    ledger = store.ledger("t")
    assert (ledger.total_usd, ledger.teacher_only_usd, ledger.imported_usd) == pytest.approx((0.3, 0.3, 0.5))
    assert ledger.savings_usd == pytest.approx(0.0) and "import" not in ledger.spend_by_tier


def test_ledger_without_teacher_answers(store):
    """Before the teacher has answered, the counterfactual and savings are unknown (None), not zero."""
    store.insert_run(RunRow(task_name="t"))
    ledger = store.ledger("t")
    assert (ledger.calls, ledger.teacher_only_usd, ledger.savings_usd, ledger.savings_ratio) == (1, None, None, None)
