"""Where a protege call's time goes: wall-clock time per component, and a cProfile of the event-loop thread.

Components are timed by wrapping the app's own objects in this process (nothing in src/ is changed): the store's
writes (which run in worker threads via `asyncio.to_thread`), the cascade graph's `ainvoke` around the tier nodes, the
model call, answer validation and the row constructors. cProfile only sees the thread it is enabled in, so it is
switched on inside the portal's event-loop thread, where the cascade runs; store writes show up there as time the
loop waits.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import time
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from bench.common import Context, Table, ticket

BACKGROUND = ("trace", "skill", "traces", "search_skills", "add_skill")  # lifecycle hooks' store reads/writes
FOREGROUND = ("record_attempt",)  # the one store write of a one-attempt call
PACKAGES = (
    "langgraph",
    "langchain_core",
    "pydantic",
    "pydantic_core",
    "sqlmodel",
    "sqlalchemy",
    "orjson",
    "anthropic",
    "httpx",
    "httpcore",
)


def profile_calls(ctx: Context, make_app: Callable[[Context, Any], Any], model: Any, n: int) -> dict[str, Any]:
    """Component breakdown with the default hooks and with them off, then cProfile of the loop thread."""
    per_call = {
        "hooks on": _breakdown(ctx, make_app, model, n, hooks=True),
        "hooks off": _breakdown(ctx, make_app, model, n, hooks=False),
    }
    app = make_app(ctx, model)
    try:
        _warm(app)
        prof = _profile_loop_thread(app, n)
    finally:
        app.close()
    on, off = _breakdown_rows(per_call["hooks on"]), dict((r[0], r[1]) for r in _breakdown_rows(per_call["hooks off"]))
    rows = [[name, ms, off.get(name), share] for name, ms, share in on]
    return {
        "tables": [
            Table(
                "Where one protege call's time goes (FunctionModel path, ms per call, wall clock)",
                ["component", "ms/call (default app)", "ms/call (lifecycle hooks off)", "share (default)"],
                rows,
            ),
            Table(
                "cProfile of the event-loop thread: own time by package (ms per call)",
                ["package", "ms/call", "share"],
                _package_table(prof, n),
            ),
            Table(
                "cProfile of the event-loop thread: top functions by own time",
                ["function", "calls/call", "own ms/call", "cumulative ms/call"],
                _top_functions(prof, n),
            ),
        ],
        "notes": [
            "Breakdown: each component is timed around the app's own objects; 'cascade graph (machinery)' is "
            "the graph's ainvoke minus the tier node inside it; store writes run in worker threads "
            "(asyncio.to_thread), so a 'rest of ...' row holds the thread hops around them. 'background' rows are "
            "the lifecycle hook's store reads after every teacher success: off the caller's path, but on the same "
            "cores and GIL, which is what the 'hooks off' column shows. cProfile adds its own cost to every "
            "function call, so its milliseconds are inflated; read its shares, not its totals.",
        ],
        "data": {"per_call_ms": per_call},
    }


def _warm(app: Any) -> None:
    for i in range(50):  # first calls compile graphs, open connections, write the skill
        app.run("triage", {"ticket": ticket(-i - 1)})
    app.wait()


def _breakdown(
    ctx: Context, make_app: Callable[[Context, Any], Any], model: Any, n: int, *, hooks: bool
) -> dict[str, float]:
    from protege.agents.cascade import Hooks

    app = make_app(ctx, model)
    try:
        if not hooks:
            app.cascade.hooks = Hooks()
        _warm(app)
        wall: Counter = Counter()
        with _timed_components(app, model, wall):
            for i in range(n):
                t0 = time.perf_counter()
                app.run("triage", {"ticket": ticket(i)})
                wall["app.run"] += time.perf_counter() - t0
            app.wait()
    finally:
        app.close()
    return {k: v / n * 1e3 for k, v in wall.items()}


@contextmanager
def _timed_components(app: Any, model: Any, wall: Counter):
    import protege.agents.cascade as cascade

    patches: list[tuple[Any, str, Any, bool]] = []

    def patch(obj: Any, name: str, key: str, is_async: bool) -> None:
        original = getattr(obj, name)
        patches.append((obj, name, original, name in vars(obj)))
        setattr(obj, name, _async_timer(original, wall, key) if is_async else _sync_timer(original, wall, key))

    for name in FOREGROUND:
        patch(app.store, name, f"store.{name}", False)
    for name in BACKGROUND:
        patch(app.store, name, f"background: store.{name}", False)
    patch(app.cascade, "run", "cascade.run", True)
    patch(app.cascade, "_attempt", "tier attempt", True)
    patch(app.cascade, "_finish", "finish (RunResult)", True)
    patch(model, "request", "model.request", True)
    patch(cascade, "validate_answer", "validate answer (pydantic)", False)
    patch(cascade, "run_loop", "agent loop (one turn, incl. model)", True)
    patch(app.cascade, "graph", "", False)  # recorded for restore; replaced by the timing proxy below
    app.cascade.graph = _GraphTimer(patches[-1][2], wall)
    try:
        yield
    finally:
        for obj, name, original, own in reversed(patches):
            if own or isinstance(obj, type(cascade)):
                setattr(obj, name, original)
            else:
                delattr(obj, name)  # it came from the class: drop the instance-level wrapper


class _GraphTimer:
    def __init__(self, graph: Any, wall: Counter):
        self.graph, self.wall = graph, wall

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await self.graph.ainvoke(*args, **kwargs)
        finally:
            self.wall["graph.ainvoke"] += time.perf_counter() - t0


def _sync_timer(fn: Callable, wall: Counter, key: str) -> Callable:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            wall[key] += time.perf_counter() - t0

    return timed


def _async_timer(fn: Callable, wall: Counter, key: str) -> Callable:
    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            wall[key] += time.perf_counter() - t0

    return timed


def _breakdown_rows(ms: dict[str, float]) -> list[list[Any]]:
    g = ms.get
    total = g("app.run", 0.0)
    attempt = g("tier attempt", 0.0)
    derived = {
        "portal hop (sync app.run → event loop → back)": total - g("cascade.run", 0.0),
        "cascade graph (machinery)": g("graph.ainvoke", 0.0) - attempt,
        "model.request (FunctionModel)": g("model.request", 0.0),
        "agent loop minus model": g("agent loop (one turn, incl. model)", 0.0) - g("model.request", 0.0),
        "validate answer (pydantic)": g("validate answer (pydantic)", 0.0),
        "store.record_attempt: run + trace + outcome, one transaction (worker thread)": g("store.record_attempt", 0.0),
        "rest of the attempt (prompt, trace dict, thread hop)": attempt
        - sum(
            g(k, 0.0)
            for k in ("agent loop (one turn, incl. model)", "validate answer (pydantic)", "store.record_attempt")
        ),
        "finish (RunResult)": g("finish (RunResult)", 0.0),
        "rest of cascade.run (plan, input dump)": g("cascade.run", 0.0)
        - g("graph.ainvoke", 0.0)
        - g("finish (RunResult)", 0.0),
    }
    rows = [[k, v, v / total if total else None] for k, v in derived.items()]
    rows.append(["= app.run total", total, 1.0 if total else None])
    rows += [[k, v, None] for k, v in sorted(ms.items()) if k.startswith("background")]
    return rows


def _profile_loop_thread(app: Any, n: int) -> pstats.Stats:
    prof = cProfile.Profile()

    async def switch(on: bool) -> None:
        prof.enable() if on else prof.disable()  # sys.setprofile is per thread: this is the loop's thread

    app.portal.call(switch(True))
    for i in range(n):
        app.run("triage", {"ticket": ticket(10**6 + i)})
    app.portal.call(switch(False))
    app.wait()
    return pstats.Stats(prof)


def _package_of(filename: str, func: str) -> str:
    if filename == "~":
        if "poll" in func or "select" in func:
            return "(event loop waiting: store writes in worker threads, the caller)"
        return "builtins"
    path = filename.replace("\\", "/")
    if "site-packages/" in path:
        top = path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        return top if top in PACKAGES else f"other: {top}"
    if "/protege/" in path:
        return "protege"
    return "python stdlib (asyncio, threading, ...)"


def _package_table(stats: pstats.Stats, n: int) -> list[list[Any]]:
    own: Counter = Counter()
    for (filename, _line, func), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        own[_package_of(filename, func)] += tt
    total = sum(own.values()) or 1.0
    return [[pkg, t / n * 1e3, t / total] for pkg, t in own.most_common(12)]


def _top_functions(stats: pstats.Stats, n: int, limit: int = 12) -> list[list[Any]]:
    items = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:limit]  # type: ignore[attr-defined]
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in items:
        where = filename.rsplit("site-packages/", 1)[-1].rsplit("/src/", 1)[-1]
        rows.append([f"{func} ({where}:{line})", nc / n, tt / n * 1e3, ct / n * 1e3])
    return rows
