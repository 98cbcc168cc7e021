"""Many processes x many calls against one store (SQLite file, PostgreSQL): nothing lost, nothing mixed up."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from protege.store import RunRow, Store, TraceRow

from .common import answer_for, phase_file, start_script, wait_for

FIGURES: dict[str, str] = {}


def run_workers(
    urls: list[str],
    tmp: Path,
    procs: int,
    calls: int,
    threads: int = 4,
    capped: int = 0,
    budget: float | None = None,
    timeout: float = 600,
) -> list[tuple[list[dict], float]]:
    """Start `procs` worker processes once; for each store in turn, release them together and collect every call's
    outcome. One start-up serves every store (start-up, not the calls, is most of the cost on a small machine).
    Returns (outcomes, wall seconds of the calls) per store."""
    for url in urls:
        Store(url).close()  # migrate once up front, as a deployment would
    out, go = tmp / "out", tmp / "go"
    extra = [a for url in urls[1:] for a in ("--then", url)]
    extra += ["--capped", str(capped), "--budget", str(budget)] if capped else []
    logs = [open(tmp / f"worker{i}.err", "wb") for i in range(procs)]  # files, not pipes: nobody reads mid-run
    workers = [
        start_script(
            "calls.py",
            urls[0],
            calls,
            threads,
            f"{out}{i}",
            go,
            "--tag",
            f"p{i}",
            *extra,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for i, log in enumerate(logs)
    ]
    results = []
    try:
        for k in range(len(urls)):
            outs = [Path(phase_file(f"{out}{i}", k)) for i in range(procs)]
            wait_workers(workers, [Path(f"{o}.ready") for o in outs], 120, "open the store")
            started = time.perf_counter()
            Path(phase_file(go, k)).touch()
            wait_workers(workers, outs, timeout, "finish their calls")
            wall = time.perf_counter() - started
            results.append(([o for path in outs for o in json.loads(path.read_text())["outcomes"]], wall))
        for i, w in enumerate(workers):
            assert w.wait(60) == 0, (tmp / f"worker{i}.err").read_bytes().decode()[-3000:]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        for log in logs:
            log.close()
    return results


def wait_workers(workers: list[subprocess.Popen], files: list[Path], timeout: float, what: str) -> None:
    """Wait until each worker wrote its file; fail at once if one exits without it."""

    def dead() -> list[int]:
        return [i for i, (w, f) in enumerate(zip(workers, files)) if w.poll() is not None and not f.exists()]

    wait_for(lambda: all(f.exists() for f in files) or dead(), timeout, f"workers to {what}")
    assert not dead(), f"worker(s) {dead()} exited before they could {what} (see worker<i>.err)"


def check_consistent(url: str, outcomes: list[dict], task: str = "triage") -> dict[str, int]:
    """Every reported run is in the store, ok, with exactly its own traces; no run or trace without a caller."""
    outcomes = [o for o in outcomes if o["task"] == task]
    errors = [o for o in outcomes if "error" in o]
    assert not errors, f"{len(errors)} calls failed, e.g. {errors[:3]}"
    with Store(url) as store, store.engine.connect() as conn:
        runs = {
            r.id: r
            for r in conn.execute(
                select(RunRow.id, RunRow.status, RunRow.tier, RunRow.output, RunRow.input, RunRow.input_hash).where(
                    RunRow.task_name == task
                )
            )
        }
        traces = list(
            conn.execute(
                select(TraceRow.id, TraceRow.run_id, TraceRow.valid, TraceRow.tier, TraceRow.input_hash).where(
                    TraceRow.run_id.is_not(None), TraceRow.task_name == task
                )
            )
        )
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
    FIGURES[name] = (
        f"{procs} processes x {calls} calls, {backend}: {counts['runs']:,} runs / {counts['traces']:,} "
        f"traces, 0 errors, {wall:.1f} s ({n / wall:.0f} calls/s)"
    )
    print(FIGURES[name])


CAP = 0.5  # the capped task's budget: about 20 calls' worth


@pytest.fixture(scope="module")
def fleet(request, tmp_path_factory) -> dict[str, tuple[str, list[dict], float]]:
    """4 processes (4 threads each) on one SQLite file, 50 calls of an uncapped task and 40 of a capped one each;
    then the same processes, 50 calls each, on one fresh PostgreSQL database (when that test is selected and the
    server answers). Per backend: (URL, outcomes, wall)."""
    tmp = tmp_path_factory.mktemp("fleet")
    urls = {"sqlite": f"sqlite:///{tmp / 'fleet.db'}"}
    pg = _postgres_database(request) if _selected(request, "test_processes_share_postgres_store") else None
    if pg is not None:
        urls["postgres"] = pg
    results = run_workers(list(urls.values()), tmp, 4, 50, capped=40, budget=CAP)
    return {name: (url, *result) for (name, url), result in zip(urls.items(), results)}


def _selected(request, test_name: str) -> bool:
    return any(item.name == test_name for item in request.session.items)


def _postgres_database(request) -> str | None:
    """A fresh PostgreSQL database for this module (dropped after it), or None when no server answers."""
    try:
        admin_url = request.getfixturevalue("pg_admin_url")  # skips without the server (or psycopg)
    except pytest.skip.Exception:
        return None
    import psycopg

    name = f"protege_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    request.addfinalizer(drop)
    return f"{admin_url.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def test_processes_share_sqlite_store(fleet):
    """4 processes x 50 calls (4 threads each) on one SQLite file: every run ok with exactly its one trace."""
    url, outcomes, wall = fleet["sqlite"]
    counts = check_consistent(url, outcomes)
    assert counts["runs"] == 200
    _figure("sqlite", 4, 50, "SQLite (+ 160 capped calls)", counts, wall)


@pytest.mark.postgres
def test_processes_share_postgres_store(fleet):
    """4 processes x 50 calls (4 threads each) on one PostgreSQL database: every run ok with its one trace."""
    if "postgres" not in fleet:
        pytest.skip("no PostgreSQL server answers at 127.0.0.1:5432")
    url, outcomes, wall = fleet["postgres"]
    counts = check_consistent(url, outcomes)
    assert counts["runs"] == 200
    _figure("postgres", 4, 50, "PostgreSQL", counts, wall)


@pytest.mark.soak
def test_soak_processes_share_sqlite_store(tmp_path, sqlite_url):
    """Soak: 8 processes x 500 calls on one SQLite file; no lock error reaches a caller, nothing is lost."""
    ((outcomes, wall),) = run_workers([sqlite_url], tmp_path, 8, 500)
    counts = check_consistent(sqlite_url, outcomes)
    assert counts["runs"] == 4000 and Counter(o["tier"] for o in outcomes) == {"teacher": 4000}
    _figure("soak-sqlite", 8, 500, "SQLite", counts, wall)


@pytest.mark.soak
def test_soak_processes_share_postgres_store(tmp_path, pg_url):
    """Soak: 8 processes x 500 calls on one PostgreSQL database; nothing lost, nothing mixed up."""
    ((outcomes, wall),) = run_workers([pg_url], tmp_path, 8, 500)
    counts = check_consistent(pg_url, outcomes)
    assert counts["runs"] == 4000
    _figure("soak-postgres", 8, 500, "PostgreSQL", counts, wall)


def test_budget_cap_holds_across_processes_on_one_sqlite_store(fleet):
    """The same 4 processes' 160 calls of a task capped at $0.50 a day: together they never pass the cap, each
    refusal is a BudgetExceeded, and the store's reservations settle to exactly the recorded teacher cost."""
    from .test_budget import check_books, recorded_cost

    url, outcomes, _ = fleet["sqlite"]
    capped = [o for o in outcomes if o["task"] == "triage_capped"]
    with Store(url) as store:
        served, refused = check_books(store, "triage_capped", CAP, capped, recorded_cost(store, "triage_capped"))
        for o in capped:
            if "error" not in o:
                assert store.run(o["run_id"]).output == answer_for({"ticket": {"subject": o["subject"]}})
    FIGURES["budget-processes"] = f"4 processes x 40 capped calls: {served} served, {refused} refused, cap held"
    print(FIGURES["budget-processes"])
