"""Many processes x many calls against one store (SQLite file, PostgreSQL): nothing lost, nothing mixed up."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from protege.store import RunRow, Store, TraceRow

from .common import answer_for, start_script, wait_for

FIGURES: dict[str, str] = {}


def run_workers(url: str, tmp: Path, procs: int, calls: int, threads: int = 4, capped: int = 0,
                budget: float | None = None, timeout: float = 600) -> tuple[list[dict], float]:
    """Start `procs` worker processes, release them together, and collect every call's outcome."""
    Store(url).close()  # migrate once up front, as a deployment would
    go = tmp / "go"
    outs = [tmp / f"out{i}.json" for i in range(procs)]
    extra = ["--capped", str(capped), "--budget", str(budget)] if capped else []
    workers = [start_script("calls.py", url, calls, threads, out, go, "--tag", f"p{i}", *extra)
               for i, out in enumerate(outs)]
    try:
        wait_for(lambda: all(Path(str(o) + ".ready").exists() for o in outs) or
                 any(w.poll() is not None for w in workers), 120, "workers to open the store")
        started = time.perf_counter()
        go.touch()
        for w in workers:
            _, err = w.communicate(timeout=timeout)
            assert w.returncode == 0, err.decode()[-3000:]
        wall = time.perf_counter() - started
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    outcomes = [o for out in outs for o in json.loads(out.read_text())["outcomes"]]
    return outcomes, wall


def check_consistent(url: str, outcomes: list[dict], task: str = "triage") -> dict[str, int]:
    """Every reported run is in the store, ok, with exactly its own traces; no run or trace without a caller."""
    outcomes = [o for o in outcomes if o["task"] == task]
    errors = [o for o in outcomes if "error" in o]
    assert not errors, f"{len(errors)} calls failed, e.g. {errors[:3]}"
    with Store(url) as store, store.engine.connect() as conn:
        runs = {r.id: r for r in conn.execute(select(RunRow.id, RunRow.status, RunRow.tier, RunRow.output,
                                                     RunRow.input, RunRow.input_hash).where(RunRow.task_name == task))}
        traces = list(conn.execute(select(TraceRow.id, TraceRow.run_id, TraceRow.valid, TraceRow.tier,
                                          TraceRow.input_hash)
                                   .where(TraceRow.run_id.is_not(None), TraceRow.task_name == task)))
        stray = conn.execute(select(func.count()).select_from(TraceRow).where(TraceRow.run_id.is_(None))).scalar()
    by_run: dict[str, list] = {}
    for t in traces:
        by_run.setdefault(t.run_id, []).append(t)
    assert len(runs) == len(outcomes) == len({o["run_id"] for o in outcomes})
    for o in outcomes:
        run = runs[o["run_id"]]
        assert (run.status, run.tier) == ("ok", "teacher"), run
        assert run.output == answer_for(run.input) == o["output"]
        mine = by_run.get(o["run_id"], [])
        assert [t.id for t in mine] == o["trace_ids"] and len(mine) == 1
        assert mine[0].valid and mine[0].input_hash == run.input_hash
    assert set(by_run) <= set(runs)
    return {"runs": len(runs), "traces": len(traces), "author_traces": int(stray)}


def _figure(name: str, procs: int, calls: int, backend: str, counts: dict[str, int], wall: float) -> None:
    n = procs * calls
    FIGURES[name] = (f"{procs} processes x {calls} calls, {backend}: {counts['runs']:,} runs / {counts['traces']:,} "
                     f"traces, 0 errors, {wall:.1f} s ({n / wall:.0f} calls/s)")
    print(FIGURES[name])


CAP = 0.5  # the capped task's budget: about 20 calls' worth


@pytest.fixture(scope="module")
def sqlite_fleet(tmp_path_factory):
    """4 processes (4 threads each) on one SQLite file: 50 calls of an uncapped task and 40 of a capped one each."""
    tmp = tmp_path_factory.mktemp("fleet")
    url = f"sqlite:///{tmp / 'fleet.db'}"
    outcomes, wall = run_workers(url, tmp, 4, 50, capped=40, budget=CAP)
    return url, outcomes, wall


def test_processes_share_sqlite_store(sqlite_fleet):
    """4 processes x 50 calls (4 threads each) on one SQLite file: every run ok with exactly its one trace."""
    url, outcomes, wall = sqlite_fleet
    counts = check_consistent(url, outcomes)
    assert counts["runs"] == 200
    _figure("sqlite", 4, 50, "SQLite (+ 160 capped calls)", counts, wall)


def test_processes_share_postgres_store(tmp_path, pg_url):
    """4 processes x 50 calls (4 threads each) on one PostgreSQL database: every run ok with its one trace."""
    outcomes, wall = run_workers(pg_url, tmp_path, 4, 50)
    counts = check_consistent(pg_url, outcomes)
    assert counts["runs"] == 200
    _figure("postgres", 4, 50, "PostgreSQL", counts, wall)


@pytest.mark.soak
def test_soak_processes_share_sqlite_store(tmp_path, sqlite_url):
    """Soak: 8 processes x 500 calls on one SQLite file; no lock error reaches a caller, nothing is lost."""
    outcomes, wall = run_workers(sqlite_url, tmp_path, 8, 500)
    counts = check_consistent(sqlite_url, outcomes)
    assert counts["runs"] == 4000 and Counter(o["tier"] for o in outcomes) == {"teacher": 4000}
    _figure("soak-sqlite", 8, 500, "SQLite", counts, wall)


@pytest.mark.soak
def test_soak_processes_share_postgres_store(tmp_path, pg_url):
    """Soak: 8 processes x 500 calls on one PostgreSQL database; nothing lost, nothing mixed up."""
    outcomes, wall = run_workers(pg_url, tmp_path, 8, 500)
    counts = check_consistent(pg_url, outcomes)
    assert counts["runs"] == 4000
    _figure("soak-postgres", 8, 500, "PostgreSQL", counts, wall)


def test_budget_cap_holds_across_processes_on_one_sqlite_store(sqlite_fleet):
    """The same 4 processes' 160 calls of a task capped at $0.50 a day: together they never pass the cap, each
    refusal is a BudgetExceeded, and the store's reservations settle to exactly the recorded teacher cost."""
    from .test_budget import check_books, recorded_cost

    url, outcomes, _ = sqlite_fleet
    capped = [o for o in outcomes if o["task"] == "triage_capped"]
    with Store(url) as store:
        served, refused = check_books(store, "triage_capped", CAP, capped, recorded_cost(store, "triage_capped"))
        for o in capped:
            if "error" not in o:
                assert store.run(o["run_id"]).output == answer_for({"ticket": {"subject": o["subject"]}})
    FIGURES["budget-processes"] = f"4 processes x 40 capped calls: {served} served, {refused} refused, cap held"
    print(FIGURES["budget-processes"])
