"""PostgreSQL specifics: surviving a server-side disconnect, and round trips on the hot path."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from protege.store import BudgetHold, RunRow, Store, TraceRow


def _kill_other_backends(pg_url: str) -> int:
    """Terminate every other connection to the test database, as a server restart would."""
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url.replace("+psycopg", ""), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return len(rows)


def test_store_survives_dropped_connections(pg_url):
    """After the server drops every pooled connection, the next read and write each succeed (one retry)."""
    with Store(pg_url) as store:
        store.insert_trace(TraceRow(task_name="t", tier="teacher"))
        assert store.count_traces() == 1
        assert _kill_other_backends(pg_url) >= 1
        store.insert_trace(TraceRow(task_name="t", tier="teacher"))
        _kill_other_backends(pg_url)
        assert store.count_traces() == 2
        _kill_other_backends(pg_url)
        assert isinstance(store.reserve_budget(1.0, {"t": 5.0}), BudgetHold)


def test_hot_path_writes_are_single_statements(pg_url, monkeypatch):
    """insert_run, insert_trace and finish_run each send one statement in autocommit (no BEGIN/COMMIT round
    trips) and no connection ping."""
    with Store(pg_url) as store:
        store.insert_run(RunRow(id="warm", task_name="t"))
        sent: list[tuple[str, bool]] = []
        pings: list[object] = []
        monkeypatch.setattr(store.engine.dialect, "do_ping", lambda conn: pings.append(conn) or True)

        def record(conn, cursor, statement, *_):
            sent.append((statement.split()[0], conn.connection.driver_connection.autocommit))

        sa.event.listen(store.engine, "before_cursor_execute", record)
        run = RunRow(task_name="t")
        store.insert_run(run)
        store.insert_trace(TraceRow(run_id=run.id, task_name="t", tier="teacher"))
        store.finish_run(run.id, status="ok")
        assert sent == [("INSERT", True), ("INSERT", True), ("UPDATE", True)]
        assert pings == []


def test_bulk_ingest_survives_dropped_connections(pg_url):
    """A COPY batch on a connection the server dropped is retried once on a fresh one, and stores every row."""
    with Store(pg_url) as store:
        store.insert_traces([TraceRow(task_name="t", tier="import")])
        assert _kill_other_backends(pg_url) >= 1
        assert store.insert_traces([{"task_name": "t", "tier": "import", "input": {"i": i}} for i in range(50)]) == 50
        assert store.count_traces("t") == 51


def test_large_trace_columns_are_lz4_compressed(pg_url):
    """Where the server has lz4, the trace's and run's JSON and text columns use it (pglz was most of a bulk
    ingest's server time); a server without it keeps pglz."""
    with Store(pg_url) as store, store.engine.connect() as conn:
        has_lz4 = conn.exec_driver_sql(
            "SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        ).first()
        methods = dict(
            conn.exec_driver_sql(
                "SELECT attrelid::regclass::text || '.' || attname, attcompression FROM pg_attribute "
                "WHERE attrelid IN ('trace'::regclass, 'run'::regclass) "
                "AND attname IN ('messages', 'input', 'task_name')"
            ).all()
        )
    expected = "l" if has_lz4 else ""
    assert methods["trace.messages"] == expected and methods["trace.input"] == expected
    assert methods["run.input"] == expected and methods["trace.task_name"] == ""


def test_a_short_outage_is_waited_out_and_a_long_one_is_a_store_error(pg_url, monkeypatch):
    """A refused connection (the server restarting, a proxy down) failed a paid answer's write at once, as a raw
    SQLAlchemy error: the write now retries with backoff for up to OUTAGE_S, then raises a StoreError; an error
    waiting cannot fix is raised at once."""
    import psycopg
    import psycopg.errors
    from sqlalchemy.exc import OperationalError, ProgrammingError

    import protege.store.base as base
    from protege.errors import StoreError

    slept: list[float] = []
    monkeypatch.setattr(base.time, "sleep", slept.append)
    with Store(pg_url) as store:
        refusals = [psycopg.OperationalError("connection refused"), psycopg.errors.AdminShutdown("restarting")]

        def flaky():
            if refusals:
                raise OperationalError("SELECT 1", {}, refusals.pop(0))
            return "written"

        assert store._retry(flaky) == "written" and slept == [0.1, 0.2]

        def down():
            raise OperationalError("SELECT 1", {}, psycopg.OperationalError("connection refused"))

        slept.clear()
        with pytest.raises(StoreError, match=r"could not be reached for 10 s \(connection refused\)"):
            store._retry(down)
        assert sum(slept) >= base.OUTAGE_S

        def missing_table():
            raise ProgrammingError("SELECT x", {}, psycopg.errors.UndefinedTable("no such table"))

        slept.clear()
        with pytest.raises(ProgrammingError):
            store._retry(missing_table)
        assert slept == []
