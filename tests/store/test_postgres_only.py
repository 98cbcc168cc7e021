"""PostgreSQL specifics: surviving a server-side disconnect, and round trips on the hot path."""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from protege.store import RunRow, Store, TraceRow


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
        assert store.reserve_spend("t", 1.0, 5.0)


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
