"""Migrations: they build the schema from empty, match the models, are idempotent, fast at head and race-safe."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from protege.errors import StoreError
from protege.store import Store
from protege.store.migrate import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
    include_object,
    target_metadata,
    upgrade,
)
from protege.store.models import ALL_TABLES

TABLES = {t.__tablename__ for t in ALL_TABLES}


def _schema_diff(engine: sa.Engine, metadata: sa.MetaData | None = None) -> list:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": include_object, "compare_type": True})
        return compare_metadata(ctx, metadata if metadata is not None else target_metadata())


def test_head_constant_matches_scripts():
    """HEAD_REVISION (the fast-path check) is the newest revision in migrations/versions."""
    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD_REVISION


def test_migration_builds_every_table_from_empty(store_url):
    """Opening an empty database creates every table of the models and records the head revision."""
    with Store(store_url) as s:
        assert TABLES <= set(sa.inspect(s.engine).get_table_names())
        assert current_revision(s.engine) == HEAD_REVISION


def test_migrated_schema_matches_models(store):
    """Alembic finds no difference between the migrated schema and models.py (they cannot drift apart)."""
    assert _schema_diff(store.engine) == []


def test_schema_check_sees_drift(store):
    """The drift check can fail: a column or index the migration lacks shows up as a difference."""
    metadata = target_metadata()
    metadata.tables["trace"].append_column(sa.Column("extra", sa.Integer()))
    sa.Index("ix_extra", metadata.tables["run"].c.tier)
    kinds = {d[0] if isinstance(d, tuple) else d[0][0] for d in _schema_diff(store.engine, metadata)}
    assert {"add_column", "add_index"} <= kinds


def test_reopening_is_idempotent_and_runs_no_ddl(store_url):
    """At head, opening again runs only the one revision probe: no DDL, no migration."""
    Store(store_url).close()
    seen: list[str] = []
    s = Store(store_url, migrate=False)
    sa.event.listen(s.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    upgrade(s.engine)
    upgrade(s.engine)
    assert seen == ["SELECT version_num FROM alembic_version"] * 2
    with s.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    s.close()


def test_downgrade_then_upgrade_round_trips(store_url):
    """Downgrading to base removes every table (search objects too) and upgrading rebuilds them."""
    s = Store(store_url)
    with s.engine.begin() as conn:
        command.downgrade(alembic_config(connection=conn), "base")
    names = set(sa.inspect(s.engine).get_table_names())
    assert not (names & TABLES) and not any(n.startswith("skill_fts") for n in names)
    s.close()
    with Store(store_url) as again:
        assert _schema_diff(again.engine) == []


def test_unmigrated_legacy_store_is_refused(sqlite_url):
    """A store whose tables were made without migrations gets a StoreError that says what to do."""
    engine = sa.create_engine(sqlite_url)
    target_metadata().create_all(engine)
    engine.dispose()
    with pytest.raises(StoreError, match="no migration history"):
        Store(sqlite_url)


def test_store_from_a_newer_protege_is_refused(sqlite_url):
    """A store at an unknown (newer) revision gets a StoreError naming the revision."""
    Store(sqlite_url).close()
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="'9999'"):
        Store(sqlite_url)


def test_unreachable_postgres_is_a_store_error():
    """A PostgreSQL URL with no server behind it raises StoreError naming the URL, not a driver traceback."""
    with pytest.raises(StoreError, match="127.0.0.1:1"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def _open_and_count(url: str, start, out) -> None:
    start.wait()
    with Store(url) as s:
        out.put(s.count_traces())


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_first_open_by_many_processes(backend, request):
    """Six processes opening the same new store at once all succeed, and the schema is created exactly once."""
    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_open_and_count, args=(url, start, out)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    assert sorted(out.get(timeout=5) for _ in procs) == [0] * 6
    with Store(url) as s:
        assert _schema_diff(s.engine) == []
        with s.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_a_new_store_is_created_without_alembic_info_lines(tmp_path, caplog):
    """Each new store logged ~8 INFO lines of Alembic's ("Context impl SQLiteImpl", "Running upgrade ...")."""
    import logging

    with caplog.at_level(logging.INFO):
        Store(f"sqlite:///{tmp_path / 'quiet.db'}").close()
    assert not [r for r in caplog.records if r.name.startswith("alembic")]
    assert logging.getLogger("alembic").level == logging.NOTSET  # restored
