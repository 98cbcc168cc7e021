"""Trace ingest rate: `Store.insert_traces` in bulk, one writer and 4 concurrent writer processes, on SQLite and on
PostgreSQL (a scratch database on 127.0.0.1:5432, created and dropped here; skipped with a note if unreachable).

Baseline, same run and same rows: the database driver's own `executemany` of a plain multi-column INSERT with the
JSON already encoded, in one transaction per batch. `insert_traces` also checks and encodes each row inside its
timing, and on PostgreSQL writes by COPY, so it can beat the baseline there.
Traces are real-shaped: the bundled order emails as teacher traces (input, transcript, output, usage).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import statistics
import time
import uuid
from typing import Any

from bench.common import Context, Headline, Result, Table

TITLE = "Trace ingest rate"
TARGET_PER_S = 20_000
WRITERS = 4
ROUNDS = 3  # each rate is the median of this many inserts
PG_HOST = "127.0.0.1:5432"
PG_ADMIN_CANDIDATES = [
    os.environ.get("PROTEGE_TEST_PG", ""),
    f"postgresql://postgres@{PG_HOST}/postgres",
    f"postgresql://root@{PG_HOST}/postgres",
]


def run(ctx: Context, n: int | None = None, postgres: bool = True, sqlite: bool = True) -> Result:
    n = n or ctx.pick(10_000, 100_000)
    result = Result(data={"n": n, "backends": {}})
    backends = [("SQLite (WAL)", lambda: _sqlite_url(ctx), None)] if sqlite else []
    admin, why = pg_admin_url() if postgres else (None, "left out by the caller")
    if admin:
        backends.append(("PostgreSQL", lambda: create_pg_db(admin), admin))
    else:
        result.notes.append(f"PostgreSQL not measured: {why}")
    rows = []
    for label, make_url, pg_admin in backends:
        m = measure_backend(ctx, make_url, pg_admin, n)
        result.data["backends"][label] = m
        rows.append(
            [
                label,
                n,
                m["raw_per_s"],
                m["single_per_s"],
                m["single_per_s"] / m["raw_per_s"],
                m["concurrent_per_s"],
                m["concurrent_per_s"] / m["single_per_s"],
            ]
        )
        for kind in ("single", "concurrent"):
            writers = "1 writer" if kind == "single" else f"{WRITERS} writer processes"
            result.headlines.append(
                Headline(
                    metric=f"{label}, {writers}",
                    value=m[f"{kind}_per_s"],
                    unit="traces/s",
                    baseline=m["raw_per_s"],
                    baseline_label="driver executemany, traces/s",
                    target=f"≥ {TARGET_PER_S:,} traces/s",
                    met=m[f"{kind}_per_s"] >= TARGET_PER_S,
                )
            )
    result.tables.append(
        Table(
            "Ingest rate (traces/s)",
            [
                "store",
                "traces",
                "driver executemany (baseline)",
                "insert_traces, 1 writer",
                "vs baseline",
                f"insert_traces, {WRITERS} processes",
                "vs 1 writer",
            ],
            rows,
        )
    )
    result.notes.append(
        f"Each trace is one of the bundled order emails as a teacher trace: ~{_mean_bytes(ctx):,} bytes of JSON "
        f"(input, 3-message transcript, output) plus usage columns. Rates are traces / wall seconds of the insert "
        f"only (rows are built beforehand); {WRITERS} writer processes insert {n:,} traces in total, timed from the "
        f"first one's start to the last one's end. Each rate is the median of {ROUNDS} rounds, the kinds alternating."
    )
    result.notes.append(
        "The bulk path (protege/store/bulk.py): each row encoded once by the columns' own bind processors, then one "
        "executemany per batch on SQLite and one COPY on PostgreSQL, rows made while COPY streams the ones before. "
        "New SQLite files use 16 KB pages (a ~4 KB trace fits in one; with 4 KB pages the database's share of an "
        "insert was ~1.8× as long), and PostgreSQL compresses the large trace columns with lz4 where the server has "
        "it (pglz was most of its work: 6.3k traces/s by COPY against 10.7k). The 2026-11-29 run, before these: "
        "SQLite 17.9k/s one writer and 21.9k/s four, PostgreSQL 12.2k/s and 14.8k/s."
    )
    return result


def measure_backend(ctx: Context, make_url: Any, pg_admin: str | None, n: int) -> dict[str, float]:
    """Baseline, single writer and concurrent writers, each on a fresh database, in ROUNDS alternating rounds:
    the median of each (one insert of 10,000 rows varied by ±25% on a quiet 2-core machine)."""
    from protege.store import Store

    rates: dict[str, list[float]] = {"raw": [], "single": [], "concurrent": []}
    measure = {"raw": raw_rate, "single": single_rate, "concurrent": concurrent_rate}
    for _ in range(ROUNDS):
        for kind in rates:
            url = make_url()
            try:
                Store(url).close()  # migrate once, before any timing
                rates[kind].append(measure[kind](ctx, url, n))
            finally:
                if pg_admin:
                    drop_pg_db(pg_admin, url)
    return {f"{kind}_per_s": statistics.median(values) for kind, values in rates.items()}


def traces(ctx: Context, n: int, offset: int = 0) -> list[dict[str, Any]]:
    from bench.data import orders, teacher_trace

    w = orders(quick=False)
    rows = w.pool + w.heldout
    instructions = w.task.__doc__ or ""
    return [
        teacher_trace(rows[(offset + i) % len(rows)], w.task_name, instructions, id=uuid.uuid4().hex) for i in range(n)
    ]


def _mean_bytes(ctx: Context) -> int:
    import json

    sample = traces(ctx, 50)
    return int(
        sum(len(json.dumps(t["input"])) + len(json.dumps(t["messages"])) + len(json.dumps(t["output"])) for t in sample)
        / len(sample)
    )


def single_rate(ctx: Context, url: str, n: int) -> float:
    from protege.store import Store

    rows = traces(ctx, n)
    with Store(url, migrate=False) as store:
        start = time.perf_counter()
        store.insert_traces(rows)
        return n / (time.perf_counter() - start)


def raw_rate(ctx: Context, url: str, n: int, batch: int = 2000) -> float:
    """The driver's executemany with pre-encoded JSON: the floor for a bulk insert on this database."""
    from protege.store import Store, TraceRow
    from protege.store.engine import json_dumps
    from protege.store.store import _from_dict

    columns = [c.name for c in TraceRow.__table__.columns]  # type: ignore[attr-defined]
    json_cols = {c.name for c in TraceRow.__table__.columns if c.type.__class__.__name__ == "JSON"}  # type: ignore[attr-defined]
    full = [_from_dict(TraceRow, dict(t)) for t in traces(ctx, n)]
    params = [tuple(json_dumps(r[c]) if c in json_cols and r[c] is not None else r[c] for c in columns) for r in full]
    with Store(url, migrate=False) as store:
        sqlite = store.dialect == "sqlite"
        mark = "?" if sqlite else "%s"
        sql = f"INSERT INTO trace ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
        if sqlite:  # the sqlite3 module stores datetimes as text, like SQLAlchemy's SQLite dialect
            params = [tuple(v.isoformat(sep=" ") if hasattr(v, "isoformat") else v for v in p) for p in params]
        conn = store.engine.raw_connection()
        try:
            start = time.perf_counter()
            for i in range(0, len(params), batch):
                cur = conn.cursor()
                cur.executemany(sql, params[i : i + batch])
                conn.commit()
            return n / (time.perf_counter() - start)
        finally:
            conn.close()


def concurrent_rate(ctx: Context, url: str, n: int, writers: int = WRITERS) -> float:
    """`writers` processes build their share of the rows, wait at a barrier, insert, and report when they started
    and finished: from the first start to the last finish (each clock read in its writer, after the barrier — a
    parent scheduled late could read its clock after a quick writer had finished)."""
    spawn = mp.get_context("spawn")
    barrier, done = spawn.Barrier(writers + 1), spawn.Queue()
    share = n // writers
    procs = [spawn.Process(target=_writer, args=(url, share, i * share, barrier, done)) for i in range(writers)]
    for p in procs:
        p.start()
    try:
        barrier.wait(timeout=600)
        spans = [done.get(timeout=600) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
    failures = [e for e in spans if isinstance(e, str)]
    if failures:
        raise RuntimeError(f"a writer process failed: {failures[0]}")
    return share * writers / (max(end for _, end in spans) - min(start for start, _ in spans))


def _writer(url: str, n: int, offset: int, barrier: Any, done: Any) -> None:
    try:
        from protege.store import Store

        rows = traces(Context(), n, offset)
        with Store(url, migrate=False) as store:
            store.insert_traces(rows[:1])  # open the connection before the clock starts
            barrier.wait(timeout=600)
            start = time.perf_counter()  # CLOCK_MONOTONIC: one clock for every process of the machine
            store.insert_traces(rows[1:])
            done.put((start, time.perf_counter()))
    except BaseException as exc:  # report it to the parent instead of hanging it
        try:
            barrier.abort()
        finally:
            done.put(f"{type(exc).__name__}: {exc}")


# -- databases -------------------------------------------------------------------------------------------------------


def _sqlite_url(ctx: Context) -> str:
    return f"sqlite:///{ctx.folder('store') / uuid.uuid4().hex[:8]}.db"


def pg_admin_url() -> tuple[str | None, str]:
    """An admin URL of the PostgreSQL server that can create databases, or None and why not."""
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed"
    errors = []
    for url in filter(None, PG_ADMIN_CANDIDATES):
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return url, ""
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
    return None, f"no PostgreSQL server answered at {PG_HOST} ({'; '.join(errors)}); set PROTEGE_TEST_PG"


def create_pg_db(admin: str) -> str:
    import psycopg

    name = f"protege_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"


def drop_pg_db(admin: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def plot(ax: Any, record: dict[str, Any]) -> None:
    """Grouped bars per store: driver baseline, 1 writer, 4 writers; the target as a line."""
    backends = record["data"]["backends"]
    kinds = [
        ("raw_per_s", "driver executemany", "#999999"),
        ("single_per_s", "insert_traces, 1 writer", "#3b75af"),
        ("concurrent_per_s", f"insert_traces, {WRITERS} processes", "#6aa84f"),
    ]
    for j, (key, label, color) in enumerate(kinds):
        ax.bar(
            [i + (j - 1) * 0.27 for i in range(len(backends))],
            [m[key] for m in backends.values()],
            width=0.27,
            color=color,
            label=label,
        )
    ax.axhline(TARGET_PER_S, color="red", linestyle="--", linewidth=1, label="target")
    ax.set_xticks(range(len(backends)), list(backends))
    ax.set_ylabel("traces / s")
    ax.set_title("Trace ingest rate")
    ax.legend(fontsize=8)
