"""Review console speed on a big store: open time and trace paging/scrolling/sorting at 100k traces.

`python -m bench.tui_bench [--traces N] [--db URL]` prints the numbers; as a `bench` module (TITLE, run) it
reports them against the same console on a 1k-trace store measured in the same run, so the ratio says how much
the store's size costs. The console is driven headless through Textual's Pilot at 80x24, so each time includes
the query, the table rebuild and the render — what a reviewer waits for.

The 100k store is built once (about a minute) under bench/results/tmp/tui and reused while it has the right size.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Context, Headline, Result, Table, latency_summary

TITLE = "Review console on a 100k-trace store"
TASKS = ("triage", "extract_order", "summarize", "classify_intent")
TIERS = (("teacher", 0.15, 0.012), ("replay", 0.45, 0.0008), ("student", 0.40, 0.00002))
SIZE = (80, 24)
DAYS = 60


def build_store(url: str, n_traces: int, *, seed: int = 7) -> None:
    """A store of `n_traces` attempts over 60 days in 4 tasks, with runs, escalations, shadows and skills."""
    from protege.store import RunRow, ShadowRow, Store

    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with Store(url) as store:
        for name in TASKS:
            store.register_task(
                name=name, contract_hash=f"h-{name}", input_schema={}, output_schema={}, instructions=name, policy={}
            )
        runs, traces, shadows = [], [], []
        for i in range(n_traces):
            at = t0 + timedelta(seconds=DAYS * 86400 * (i / n_traces) ** 0.7)
            task = TASKS[i % len(TASKS)]
            tier, cost = _pick_tier(rng)
            valid = rng.random() > 0.04
            run_id = f"{i:032x}"
            traces.append(_trace(i, run_id, task, tier, cost, valid, at))
            runs.append(
                {
                    "id": run_id,
                    "task_name": task,
                    "tier": tier if valid else None,
                    "status": "ok" if valid else "failed",
                    "cost_usd": cost,
                    "latency_s": 1.0,
                    "created_at": at,
                    "finished_at": at,
                    "input": {"q": i},
                    "input_hash": f"{i:x}",
                }
            )
            if tier != "teacher" and i % 97 == 0:
                shadows.append(
                    ShadowRow(
                        task_name=task,
                        run_id=run_id,
                        tier=tier,
                        trace_id=f"t{i:031x}",
                        teacher_trace_id=f"t{i:031x}",
                        agreement=1.0 if valid else 0.0,
                        created_at=at,
                    )
                )
        store.insert_traces(traces)
        with store.engine.begin() as conn:
            for start in range(0, len(runs), 5000):
                conn.execute(insert(RunRow), runs[start : start + 5000])
        with store.session() as s:
            s.add_all(shadows)
            s.commit()


def _pick_tier(rng: random.Random) -> tuple[str, float]:
    r, acc = rng.random(), 0.0
    for tier, share, cost in TIERS:
        acc += share
        if r < acc:
            return tier, cost
    return TIERS[-1][0], TIERS[-1][2]


def _trace(i: int, run_id: str, task: str, tier: str, cost: float, valid: bool, at: datetime) -> dict:
    question = f"Request #{i}: please look into order {10_000 + i} which arrived damaged and refund the customer."
    answer = '{"label": "refund", "priority": 2}'
    return {
        "id": f"t{i:031x}",
        "run_id": run_id,
        "task_name": task,
        "tier": tier,
        "model": {
            "teacher": "anthropic:claude-opus-4-5",
            "replay": "anthropic:claude-haiku-4-5",
            "student": "local:smollm2-135m+lora",
        }[tier],
        "input": {"q": question},
        "input_hash": f"{i:x}",
        "messages": [
            {"role": "system", "content": "You label customer requests. " * 8},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "output": {"label": "refund", "priority": 2} if valid else None,
        "output_text": answer,
        "valid": valid,
        "errors": None if valid else ["priority: Input should be a valid integer"],
        "input_tokens": 310,
        "output_tokens": 24,
        "cost_usd": cost,
        "latency_s": 0.5,
        "created_at": at,
    }


def ensure_store(folder: Path, n_traces: int, log: Any = print) -> str:
    """The path of a built store with exactly `n_traces` traces (built now if missing or of another size)."""
    from protege.store import Store

    path = folder / f"console-{n_traces}.db"
    url = f"sqlite:///{path}"
    if path.exists():
        with Store(url) as store:
            if store.count_traces() == n_traces:
                return url
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    log(f"[tui] building a {n_traces:,}-trace store at {path} ...")
    started = time.perf_counter()
    build_store(url, n_traces)
    log(f"[tui] built in {time.perf_counter() - started:.1f}s")
    return url


# -- measuring -------------------------------------------------------------------------------------------------------


async def _until(pilot: Any, done: Any, timeout: float = 60.0, *, idle: bool = True) -> None:
    """Let the app run until `done()` holds (and, with `idle`, no worker is pending), then let it repaint once."""
    deadline = time.perf_counter() + timeout
    busy = lambda: idle and any(w.is_running or w.state.name == "PENDING" for w in pilot.app.workers)  # noqa: E731
    while not _holds(done) or busy():
        if time.perf_counter() > deadline:
            raise TimeoutError("the console did not finish in time")
        await asyncio.sleep(0.001)
    await pilot.pause(0)  # pending messages (the repaint) are handled, without Pilot's idle-detection sleeps


def _holds(done: Any) -> bool:
    """`done()`, False while the widgets it asks about are not mounted yet (a screen still composing)."""
    from textual.css.query import NoMatches

    try:
        return bool(done())
    except NoMatches:
        return False


async def _key(pilot: Any, key: str, done: Any) -> float:
    """Seconds from a key press to `done()` on screen. The key goes in as the terminal driver would send it;
    Pilot.press is not used because it sleeps (>= 40 ms) for idle detection after every key."""
    from textual import events

    started = time.perf_counter()
    char = {"right_square_bracket": "]", "right_curly_bracket": "}"}.get(key, key if len(key) == 1 else None)
    pilot.app.post_message(events.Key(key, char))
    await _until(pilot, done)
    return time.perf_counter() - started


def _dashboard_ready(app: Any) -> bool:
    """The first task's row, summary and chart are on screen."""
    from textual.css.query import NoMatches

    try:
        return bool(app.screen.query_one("#tasks").row_count and app.screen.query_one("#chart").series)
    except NoMatches:  # the dashboard is not mounted yet
        return False


async def measure_console(url: str, *, pages: int = 15, scroll: int = 60) -> dict[str, Any]:
    """Seconds for each reviewer action on the console over `url` (one fresh app, driven headless)."""
    from textual.widgets import DataTable, Select

    from protege.tui.app import make_app

    out: dict[str, Any] = {}
    started = time.perf_counter()
    app = make_app(db=url, reviewer="bench")  # builds a Protege (imports the cascade, opens the store)
    out["make_app_s"] = time.perf_counter() - started
    started = time.perf_counter()
    async with app.run_test(size=SIZE) as pilot:
        table = lambda: app.screen.query_one(DataTable)  # noqa: E731 - the current screen's table
        await _until(pilot, lambda: _dashboard_ready(app), 60, idle=False)  # other tasks' rows still loading
        out["dashboard_first_task_s"] = time.perf_counter() - started
        await _until(pilot, lambda: table().row_count == len(TASKS))
        out["dashboard_all_tasks_s"] = time.perf_counter() - started
        out["open_traces_s"] = await _key(pilot, "3", lambda: table().id == "traces" and table().row_count == 100)
        screen = app.screen
        steps = []
        for _ in range(min(pages, (screen.total - 1) // 100 - 1)):  # leave a page to sort into later
            target = screen.page + 1
            steps.append(await _key(pilot, "right_square_bracket", lambda t=target: screen.page == t))
        out["next_page"] = latency_summary(steps)
        steps = []
        for _ in range(scroll):
            target = table().cursor_row + 1
            steps.append(await _key(pilot, "down", lambda t=target: table().cursor_row == t))
        out["cursor_step"] = latency_summary(steps)
        last = (screen.total - 1) // 100
        out["last_page_s"] = await _key(pilot, "right_curly_bracket", lambda: screen.page == last)
        out["sort_by_cost_s"] = await _key(pilot, "s", lambda: screen.query_state.sort == "cost" and screen.page == 0)
        out["sort_cost_next_page_s"] = await _key(pilot, "right_square_bracket", lambda: screen.page == 1)
        started = time.perf_counter()
        screen.query_one("#tier", Select).value = "replay"
        await _until(
            pilot,
            lambda: (
                screen.query_state.tier == "replay"
                and screen.page_rows
                and all(r.tier == "replay" for r in screen.page_rows.values())
            ),
        )
        out["filter_tier_s"] = time.perf_counter() - started
        out["open_trace_s"] = await _key(pilot, "enter", lambda: getattr(app.screen, "trace", None) is not None)
        out["back_to_table_s"] = await _key(pilot, "escape", lambda: app.screen is screen)
        out["total_traces"] = app.protege.store.count_traces()
    return out


def measure_queries(url: str) -> dict[str, float]:
    """The store queries under the table, alone (median of 5), to tell the database's share from the UI's."""
    from protege.store import Store
    from protege.tui.queries import TraceQuery, count_traces, task_stats, trace_page

    with Store(url) as store:
        total = store.count_traces()
        cases = {
            "count_all_ms": lambda: count_traces(store, TraceQuery()),
            "page_first_ms": lambda: trace_page(store, TraceQuery(), limit=100, offset=0),
            "page_last_ms": lambda: trace_page(store, TraceQuery(), limit=100, offset=max(0, total - 100), total=total),
            "page_last_by_offset_ms": lambda: store.traces(limit=100, offset=max(0, total - 100)),
            "page_by_cost_ms": lambda: trace_page(store, TraceQuery(sort="cost"), limit=100, offset=0),
            "dashboard_stats_ms": lambda: [task_stats(store, t) for t in TASKS],
        }
        return {name: _median_ms(fn) for name, fn in cases.items()}


def _median_ms(fn: Any, n: int = 5) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[n // 2] * 1e3


def measure(url: str) -> dict[str, Any]:
    return {"console": asyncio.run(measure_console(url)), "queries": measure_queries(url)}


# -- as a bench module -------------------------------------------------------------------------------------------------


def run(ctx: Context) -> Result:
    folder = ctx.folder("tui")
    big_n = ctx.pick(20_000, 100_000)
    small, big = measure(ensure_store(folder, 1_000, ctx.log)), measure(ensure_store(folder, big_n, ctx.log))
    sc, bc = small["console"], big["console"]
    rows = [[name, _cell(sc[name]), _cell(bc[name])] for name in sc if name != "total_traces"]
    rows += [[name, f"{small['queries'][name]:.1f} ms", f"{big['queries'][name]:.1f} ms"] for name in big["queries"]]
    open_s, page_ms = bc["dashboard_all_tasks_s"] + bc["open_traces_s"], bc["next_page"]["p50_ms"]
    return Result(
        headlines=[
            Headline(
                "dashboard + trace table open",
                open_s,
                "s",
                sc["dashboard_all_tasks_s"] + sc["open_traces_s"],
                "1k-trace store",
                "< 1.5 s",
                open_s < 1.5,
            ),
            Headline(
                "next page of 100 traces (p50)",
                page_ms,
                "ms",
                sc["next_page"]["p50_ms"],
                "1k-trace store",
                "< 250 ms",
                page_ms < 250,
            ),
        ],
        tables=[
            Table(
                f"Console actions, 1k vs {big_n:,} traces (80x24, headless Pilot)",
                ["action", "1k traces", f"{big_n:,} traces"],
                rows,
            )
        ],
        data={"small": small, "big": big},
    )


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return f"p50 {value['p50_ms']:.0f} ms, p99 {value['p99_ms']:.0f} ms"
    return f"{value * 1e3:.0f} ms" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000, help="size of the big store (default 100k)")
    parser.add_argument("--db", help="measure this existing store instead of building one")
    args = parser.parse_args(argv)
    ctx = Context()
    url = args.db or ensure_store(ctx.folder("tui"), args.traces, ctx.log)
    result = measure(url)
    console, queries = result["console"], result["queries"]
    print(f"review console on {console['total_traces']:,} traces ({url}), {SIZE[0]}x{SIZE[1]}, headless Pilot")
    for name, value in console.items():
        if name != "total_traces":
            print(f"  {name:<24} {_cell(value)}")
    print("store queries alone (median of 5):")
    for name, value in queries.items():
        print(f"  {name:<24} {value:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
