"""Bring a store's schema to the newest Alembic revision on open.

Fast path: one query of `alembic_version`; at head, nothing else happens (opening a store is on app start).
Slow path: one transaction that holds the database's write lock — `BEGIN IMMEDIATE` on SQLite, a transaction
advisory lock on PostgreSQL — re-reads the revision and runs the migrations inside that transaction, so several
processes opening the same new store at once create the schema exactly once. Only an empty database becomes a
store: one holding another application's tables or Alembic history is refused untouched, and said to be foreign
(not an old protege store, not a newer one).

To write a new revision after changing models.py, diff the models against a fresh store (built by the existing
revisions, whatever models.py says):

    python -c "from protege.store import Store; from protege.store.migrate import revision; \\
               Store('sqlite:////tmp/base.db').close(); revision('add foo', 'sqlite:////tmp/base.db')"

then check the generated file (versions/0002_add_foo.py), add any dialect-specific DDL by hand, and bump
HEAD_REVISION.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from protege.errors import StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
HEAD_REVISION = "0005"  # the newest revision in migrations/versions (a test checks they agree)
PG_LOCK_KEY = 0x70726F74  # "prot": pg_advisory_xact_lock key that serializes migrations
# dialect-specific search objects, not in the models: FTS5 table (and shadow tables), PG column and GIN index
SEARCH_OBJECTS = ("skill_fts", "ix_skill_fts", "search_vector")
VERSION_TABLE = "alembic_version"
# the tables of the first revision: all of them there means a protege store, some of them an app's own names
CORE_TABLES = frozenset({"task", "run", "trace", "skill", "label", "dataset", "student", "shadow", "budget"})


def upgrade(engine: Engine, *, create: bool = True) -> None:
    """Migrate the store to HEAD_REVISION unless it is there already; an empty database becomes a new store
    (unless not `create`). A database holding anything but a protege store is refused, never added to."""
    if current_revision(engine) == HEAD_REVISION:
        return
    with _quiet_alembic():  # its INFO lines ("Context impl SQLiteImpl", one per revision) on every new store
        if engine.dialect.name == "sqlite":
            _upgrade_sqlite(engine, create)
        else:
            _upgrade_locked(engine, create)


@contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic's INFO logging off for the migration (its warnings and errors still reach the app's logging)."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def current_revision(engine_or_conn: Engine | Connection) -> str | None:
    """The store's Alembic revision, or None for an empty (or unmigrated) database."""
    stmt = text("SELECT version_num FROM alembic_version")
    if isinstance(engine_or_conn, Connection):  # inside a migration: look first, a failed query aborts a PG transaction
        return engine_or_conn.execute(stmt).scalar() if _has_table(engine_or_conn, "alembic_version") else None
    try:
        with engine_or_conn.connect() as conn:
            return conn.execute(stmt).scalar()
    except DBAPIError:
        return None


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic filter: leave the search objects (FTS5 tables, the tsvector column, the GIN index) out of diffs."""
    return not (name or "").startswith(SEARCH_OBJECTS)


def target_metadata() -> Any:
    """A MetaData of protege's tables only (SQLModel.metadata may also hold an application's own tables)."""
    from sqlalchemy import MetaData

    from protege.store.models import ALL_TABLES, table_of

    metadata = MetaData()
    for table in ALL_TABLES:
        table_of(table).to_metadata(metadata)
    return metadata


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    """An Alembic Config built in code (no alembic.ini): the packaged scripts, and a connection or a URL."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def revision(message: str, url: str) -> None:
    """Autogenerate the next revision (numbered after HEAD_REVISION) by diffing the models against a store at
    `url` that is at head (a development tool)."""
    from alembic import command

    next_id = f"{int(HEAD_REVISION) + 1:04d}"
    command.revision(alembic_config(url=url), message=message, autogenerate=True, rev_id=next_id)


def _upgrade_sqlite(engine: Engine, create: bool) -> None:
    # pysqlite does not wrap DDL in a transaction on its own: autocommit mode plus an explicit
    # BEGIN IMMEDIATE makes the whole migration one transaction holding SQLite's write lock.
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            _migrate_in_transaction(conn, create)
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")


def _upgrade_locked(engine: Engine, create: bool) -> None:
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(PG_LOCK_KEY)))
        _migrate_in_transaction(conn, create)


def _migrate_in_transaction(conn: Connection, create: bool) -> None:
    """Re-read the revision under the lock (a racing process may have migrated) and run what is missing."""
    from alembic import command
    from alembic.util import CommandError

    current = current_revision(conn)
    if current == HEAD_REVISION:
        return
    _require_protege_store(conn, current, create)
    try:
        command.upgrade(alembic_config(connection=conn), "head")
    except CommandError as exc:
        raise StoreError(
            f"cannot migrate store {_url(conn)!r} from revision {current!r}: {exc}; if another protege version "
            "wrote it, upgrade protege to that version or newer"
        ) from exc


def _require_protege_store(conn: Connection, revision: str | None, create: bool) -> None:
    """Refuse what migrating would harm or misread: another application's database (its tables, its Alembic
    history), a store of a newer protege, one made before migrations; and an empty one when not `create`."""
    tables = set(_table_names(conn))
    if not tables - {VERSION_TABLE} and revision is None:  # empty (an empty version table: one downgraded to base)
        if not create:
            raise StoreError(
                f"no protege store in {_url(conn)!r}: the database is empty; point at the store your app uses, or "
                "let the app (Protege(db=...)) or `protege init` create one there"
            )
        return
    if revision is not None and _is_ours(revision) and tables & CORE_TABLES:
        return  # an older protege store: migrate it
    if not CORE_TABLES <= tables:
        raise StoreError(_foreign_database(conn, revision, tables))
    if revision is None:
        raise StoreError(
            f"store {_url(conn)!r} has protege's tables but no migration history (made by a pre-release protege); "
            "move it aside and open the store again to create a fresh one"
        )
    raise StoreError(
        f"store {_url(conn)!r} is at revision {revision!r}, which this protege (newest {HEAD_REVISION!r}) does not "
        "know: a newer protege wrote it; upgrade protege to that version or newer"
    )


def _foreign_database(conn: Connection, revision: str | None, tables: set[str]) -> str:
    """Another application's database: say so (not "pre-release protege", not "upgrade protege"), and where to go."""
    others = sorted(tables - {VERSION_TABLE})
    shown = ", ".join(repr(t) for t in others[:5]) + (", ..." if len(others) > 5 else "")
    if VERSION_TABLE in tables:
        what = f"another application's Alembic history (revision {revision!r})" + (
            f" and tables {shown}" if shown else ""
        )
    else:
        what = f"another application's tables ({shown})"
    return (
        f"{_url(conn)!r} is not a protege store: it holds {what}, not protege's. protege keeps its store in a "
        "database of its own, so that its tables and migrations never mix with an app's; point Protege(db=...), "
        "--db or PROTEGE_DB at a new SQLite file (sqlite:///protege.db) or an empty PostgreSQL database (createdb "
        "protege), or a schema of its own (CREATE SCHEMA protege; add ?options=-csearch_path%3Dprotege to the URL)"
    )


def _is_ours(revision: str) -> bool:
    return revision in _revisions()


def _revisions() -> set[str]:
    return {path.name[:4] for path in (MIGRATIONS_DIR / "versions").glob("[0-9][0-9][0-9][0-9]_*.py")}


def _table_names(conn: Connection) -> list[str]:
    from sqlalchemy import inspect

    return inspect(conn).get_table_names()


def _has_table(conn: Connection, name: str) -> bool:
    from sqlalchemy import inspect

    return inspect(conn).has_table(name)


def _url(conn: Connection) -> str:
    return conn.engine.url.render_as_string(hide_password=True)
