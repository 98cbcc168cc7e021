"""The teacher budget reservation is atomic under concurrency, and the ledger sums what the traces cost."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from protege.store import RunRow, Store, TraceRow


def test_reserve_spend_respects_the_cap(store):
    """Reservations pass until the next would exceed the cap; releases (negative amounts) free room again."""
    assert store.reserve_spend("t", 0.6, 1.0, day="d")
    assert not store.reserve_spend("t", 0.6, 1.0, day="d")
    assert store.reserve_spend("t", 0.4, 1.0, day="d")  # exactly at the cap is allowed
    assert store.spent("t", day="d") == pytest.approx(1.0)
    assert store.reserve_spend("t", -0.5, None, day="d")
    assert store.reserve_spend("t", 0.5, 1.0, day="d")
    assert store.reserve_spend("t", 100.0, None, day="d")  # no cap: always reserved
    assert store.spent("t", day="other") == 0.0
    assert not store.reserve_spend("u", 2.0, 1.0, day="d")  # a first reservation over the cap fails too
    assert store.spent("u", day="d") == 0.0


def test_reserve_spend_is_atomic_across_threads_and_stores(store_url):
    """Sixteen threads over two Store objects (two pools) race 400 reservations at a cap of 50: exactly 50 pass."""
    stores = [Store(store_url), Store(store_url)]
    try:

        def reserve(i: int) -> bool:
            return stores[i % 2].reserve_spend("race", 1.0, 50.0, day="d")

        with ThreadPoolExecutor(16) as pool:
            granted = sum(pool.map(reserve, range(400)))
        assert granted == 50
        assert stores[0].spent("race", day="d") == pytest.approx(50.0)
    finally:
        for s in stores:
            s.close()


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
