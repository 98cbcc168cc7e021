"""Opening a store checks what it opens: another application's database is refused untouched (and said to be
foreign, not an old protege store), a file that is no database and a missing PostgreSQL database or role get a
StoreError with the next step, and a store that cannot be written fails on open, before any model is paid."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid

import psycopg
import pytest
import sqlalchemy as sa

from protege.errors import StoreError
from protege.store import Store, TraceRow
from protege.store.migrate import HEAD_REVISION, current_revision

FOREIGN = "is not a protege store"


def _sqlite_tables(url: str) -> list[str]:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))


def _sqlite_with(url: str, *statements: str) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        for stmt in statements:
            conn.execute(stmt)


@pytest.mark.parametrize(
    "statements",
    [
        ["CREATE TABLE customers (id INT)"],
        ["CREATE TABLE task (id INT, title TEXT)"],  # a table named like one of protege's: not "pre-release protege"
        ["CREATE TABLE run (id INT)"],  # was "table run already exists"
    ],
    ids=["customers", "task", "run"],
)
def test_another_apps_sqlite_database_is_refused_untouched(sqlite_url, statements):
    """`protege --db sqlite:///app.db tasks` created protege's 17 tables in the app's database; a table of the app
    named like one of protege's read as a pre-release protege store (or failed as "table run already exists")."""
    _sqlite_with(sqlite_url, *statements)
    before = _sqlite_tables(sqlite_url)
    with pytest.raises(StoreError, match=FOREIGN) as caught:
        Store(sqlite_url)
    assert "a database of its own" in str(caught.value) and "pre-release" not in str(caught.value)
    assert _sqlite_tables(sqlite_url) == before


def test_another_apps_alembic_database_is_refused_untouched(store_url):
    """A database another application migrates with Alembic said "if another protege version wrote it, upgrade
    protege"; it is named as that application's now, on either database, and left as it was."""
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('3f2a9c1b7d4e')"))
        conn.execute(sa.text("CREATE TABLE orders (id INT)"))
    with pytest.raises(StoreError, match=FOREIGN) as caught:
        Store(store_url)
    assert "another application's Alembic history (revision '3f2a9c1b7d4e')" in str(caught.value)
    assert "upgrade protege" not in str(caught.value)
    assert sorted(sa.inspect(engine).get_table_names()) == ["alembic_version", "orders"]
    assert current_revision(engine) == "3f2a9c1b7d4e"
    engine.dispose()


def test_an_empty_database_is_a_new_store_unless_create_is_off(store_url):
    """Readers (create=False) do not make a store where none is: a missing SQLite file stays missing."""
    with pytest.raises(StoreError, match="no protege store"):
        Store(store_url, create=False)
    if store_url.startswith("sqlite"):
        assert not os.path.exists(store_url.removeprefix("sqlite:///"))
    else:
        engine = sa.create_engine(store_url)
        assert sa.inspect(engine).get_table_names() == []
        engine.dispose()
    Store(store_url).close()
    with Store(store_url, create=False) as reader:
        assert current_revision(reader.engine) == HEAD_REVISION


def test_a_file_that_is_not_a_database_is_a_store_error_naming_it(tmp_path):
    """A text file at the store's path raised sqlalchemy's DatabaseError, which did not name the file."""
    path = tmp_path / "notes.db"
    path.write_text("hello, not a db\n")
    with pytest.raises(StoreError, match="not a SQLite database") as caught:
        Store(f"sqlite:///{path}")
    assert repr(str(path)) in str(caught.value)


@pytest.mark.postgres
def test_a_missing_database_or_role_gets_its_own_next_step(pg_admin_url):
    """Every PostgreSQL failure on open ended "is the database server running?", a missing database or role too."""
    base = pg_admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    missing_db = f"protege_missing_{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreError, match=rf"createdb {missing_db}\)") as caught:
        Store(f"{base}/{missing_db}")
    assert "server running" not in str(caught.value)
    host = base.split("@", 1)[1]
    with pytest.raises(StoreError, match=r"createuser nosuch_role_x\)") as caught:
        Store(f"postgresql+psycopg://nosuch_role_x@{host}/postgres")
    assert "server running" not in str(caught.value)
    with pytest.raises(StoreError, match="server running"):
        Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")


def _make_read_only(path: str) -> bool:
    """The file made unwritable, as a read-only mount would (root ignores chmod: chattr +i); False if neither
    works here."""
    os.chmod(path, 0o444)
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "+i", path], capture_output=True)
    try:
        os.close(os.open(path, os.O_WRONLY))
    except OSError:
        return True
    return False


def _make_writable(path: str) -> None:
    if os.geteuid() == 0 and shutil.which("chattr"):
        subprocess.run(["chattr", "-i", path], capture_output=True)
    os.chmod(path, 0o644)


def test_a_read_only_sqlite_store_fails_on_open_not_after_the_teacher_was_paid(sqlite_url):
    """A read-only store opened without error; the app paid the teacher and then lost the answer to a raw
    OperationalError. Opening now says the file cannot be written; readers can still open it (writable=False)."""
    with Store(sqlite_url) as s:
        s.insert_trace(TraceRow(task_name="t", tier="teacher"))
    path = sqlite_url.removeprefix("sqlite:///")
    try:
        if not _make_read_only(path):
            pytest.skip("cannot make a file read-only here (chmod is ignored and chattr +i is not available)")
        with pytest.raises(StoreError, match="cannot be written") as caught:
            Store(sqlite_url)
        assert repr(path) in str(caught.value) and "writable=False" in str(caught.value)
        with Store(sqlite_url, writable=False) as reader:
            assert reader.count_traces() == 1
    finally:
        _make_writable(path)


@pytest.mark.postgres
def test_a_select_only_postgres_role_fails_on_open(pg_url, pg_admin_url):
    """A role that may only read protege's tables gets a StoreError on open, not a paid call that cannot be
    recorded; it can still open the store to read it (writable=False)."""
    Store(pg_url).close()
    role = f"protege_reader_{uuid.uuid4().hex[:8]}"
    admin_db = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(admin_db, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    reader_url = sa.make_url(pg_url).set(username=role, password=None).render_as_string(hide_password=False)
    try:
        with pytest.raises(StoreError, match="cannot be written") as caught:
            Store(reader_url)
        assert "permission denied" in str(caught.value) and "GRANT" in str(caught.value)
        with Store(reader_url, writable=False) as reader:
            assert reader.count_traces() == 0
    finally:
        with psycopg.connect(admin_db, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP ROLE IF EXISTS {role}")
