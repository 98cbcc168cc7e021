"""The store's plumbing: engines, checks and migration on open, sessions, and one-statement helpers with a
reconnect retry.

On PostgreSQL single statements (reads and writes) run in autocommit — one round trip instead of BEGIN, statement,
COMMIT — which is just as atomic and durable for one statement. Multi-statement work (bulk batches, ORM adds,
`session()`) runs in ordinary transactions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from protege.errors import StoreError, UserError
from protege.store.engine import make_engine, normalize_url, sqlite_file

T = TypeVar("T")
OUTAGE_S = 10.0  # how long a store operation waits for a database it cannot reach before it fails


def _unreachable(exc: DBAPIError) -> bool:
    """A PostgreSQL server that refused or dropped the connection, or is shutting down or starting: no SQLSTATE
    (no server answered), class 08 (connection exception) or 57P0x. Not a missing database or role or a bad
    password (waiting would not help: the server answered, at connect time without a SQLSTATE), not a query's
    error, not SQLite."""
    if not isinstance(exc, OperationalError) or not type(exc.orig).__module__.startswith("psycopg"):
        return False
    state = getattr(exc.orig, "sqlstate", None)
    if state is None:
        return _connect_refusal(exc) is None
    return state.startswith(("08", "57P0"))


# a server's answers that refuse a connection, as libpq words them (no SQLSTATE at connect time), and the next step
_CONNECT_REFUSALS = (
    ('database "', "does not exist", "create it (createdb {database}) or fix the database name in the URL"),
    ('role "', "does not exist", "create it (createuser {user}) or fix the user in the URL"),
    ("password authentication failed", "", "fix the password in the URL (or PGPASSWORD / ~/.pgpass)"),
    ("no pg_hba.conf entry", "", "allow this host and user in the server's pg_hba.conf, or connect as another"),
    ("permission denied for database", "", "grant the role CONNECT on the database, or connect as another"),
)


def _connect_refusal(exc: DBAPIError) -> str | None:
    """The next step when the server answered a connection with a refusal, else None."""
    text = str(exc.orig)
    for first, second, step in _CONNECT_REFUSALS:
        if first in text and second in text:
            return step
    return None


def _first_line(exc: DBAPIError) -> str:
    return str(exc.orig or exc).strip().splitlines()[0]


def _open_hint(exc: DBAPIError, url: URL) -> str:
    """The next step for a store that failed to open, fitted to why: "is the server running?" sent people to look
    at a server that was up when a database or role was missing."""
    if type(exc.orig).__module__.startswith("psycopg"):
        refusal = _connect_refusal(exc)
        if refusal is not None:
            return "; " + refusal.format(database=url.database, user=url.username)
        return "; is the database server running, at that host and port?" if _unreachable(exc) else ""
    text = str(exc.orig).lower()
    if "not a database" in text:
        return "; the file is not a SQLite database: point the store at a new file, or at a protege store"
    if "readonly" in text or "unable to open" in text:
        return "; make the file and its folder writable, or point the store at a writable place"
    return ""


def _write_probes(dialect: str) -> list[Any]:
    """Statements that need write access to what a paid call writes, and match no row. On SQLite one tells for the
    whole file; a PostgreSQL role is granted table by table, statement by statement."""
    from sqlalchemy import delete, false, insert, select, update

    from protege.store.models import BudgetHoldRow, BudgetRow, RunRow, TraceRow, table_of

    tables = [table_of(t) for t in (RunRow, TraceRow, BudgetRow, BudgetHoldRow)]
    inserts = [insert(t).from_select(list(t.c.keys()), select(t).where(false())) for t in tables]
    if dialect == "sqlite":
        return inserts[:1]
    run, budget, hold = tables[0], tables[2], tables[3]
    changes = [update(t).where(false()).values({t.c.id: t.c.id}) for t in (run, budget)]
    return [*inserts, *changes, delete(hold).where(false())]


class StoreBase:
    """Connection plumbing shared by the typed queries of `Store`.

    Opening checks the database: an empty one becomes a new store (unless `create=False`, for readers), anything
    that is not a protege store is refused, and (unless `writable=False`, for readers) the store must take writes,
    so that an app learns of a read-only store before it pays a model for an answer it could not record.
    """

    def __init__(
        self, url: str, *, migrate: bool = True, create: bool = True, writable: bool = True, echo: bool = False
    ):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, echo=echo)
        # one-statement work: autocommit on PostgreSQL (no BEGIN/COMMIT round trips); SQLite commits cheaply
        self._auto = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.dialect == "postgresql" else self.engine
        )
        if migrate:
            self._open(create=create, writable=writable)

    def _open(self, *, create: bool, writable: bool) -> None:
        from protege.store.migrate import upgrade

        path = sqlite_file(self.url)
        if not create and path is not None and not path.exists():  # connecting would create the file
            raise StoreError(
                f"no protege store at {str(path)!r}; point at the store your app uses, or let the app "
                "(Protege(db=...)) or `protege init` create one there"
            )
        try:
            upgrade(self.engine, create=create)
            if writable:
                self._require_writable()
        except StoreError:
            self.engine.dispose()
            raise
        except DBAPIError as exc:
            self.engine.dispose()
            raise StoreError(
                f"cannot open store {self._where()!r}: {_first_line(exc)}{_open_hint(exc, self.engine.url)}"
            ) from exc

    def _require_writable(self) -> None:
        """Write to the tables a paid call writes, in a transaction rolled back: no rows change, but a read-only
        file, mount or role fails here instead of after the teacher was paid."""
        try:
            with self.engine.connect() as conn, conn.begin() as tx:
                for stmt in _write_probes(self.dialect):
                    conn.execute(stmt)
                tx.rollback()
        except DBAPIError as exc:
            if _unreachable(exc):
                raise
            raise StoreError(self._read_only_message(exc)) from exc

    def _read_only_message(self, exc: DBAPIError) -> str:
        lost = "a call would pay the teacher and then fail to record its answer"
        if self.dialect == "sqlite":
            return (
                f"store file {self._where()!r} cannot be written ({_first_line(exc)}): {lost}. Make the file and its "
                "folder writable (chmod u+w; chattr -i if it is immutable) or copy the store to a writable disk; "
                "to only read it, open Store(url, writable=False)"
            )
        return (
            f"store {self._where()!r} cannot be written ({_first_line(exc)}): {lost}. Grant the role INSERT, "
            "UPDATE and DELETE on protege's tables (GRANT ... ON ALL TABLES IN SCHEMA ... TO role) or connect as "
            "the role that owns them; to only read it, open Store(url, writable=False)"
        )

    def _where(self) -> str:
        path = sqlite_file(self.url)
        return str(path) if path is not None else self.engine.url.render_as_string(hide_password=True)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """An ORM session in an ordinary transaction (commit it yourself); objects stay usable after commit."""
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # -- helpers: each runs on a fresh checkout, retried once if the pooled connection was dead -----------------

    def _retry(self, fn: Callable[[], T]) -> T:
        """Run `fn`; if it failed on a dead pooled connection (a database restart), once more on a fresh one; if
        the server cannot be reached (refused, restarting), again with backoff for up to OUTAGE_S, then a
        StoreError. A paid answer's write waits out a short outage instead of failing the call at once."""
        waited, pause = 0.0, 0.1
        while True:
            try:
                return fn()
            except DBAPIError as exc:
                if exc.connection_invalidated and waited == 0.0:
                    waited = 1e-9  # the pool dropped its stale connections: once more at once
                    continue
                if not _unreachable(exc):
                    raise
                if waited >= OUTAGE_S:
                    where = self.engine.url.render_as_string(hide_password=True)
                    raise StoreError(
                        f"the store at {where!r} could not be reached for {OUTAGE_S:g} s "
                        f"({str(exc.orig).splitlines()[0] if exc.orig else exc}); is the database up?"
                    ) from exc
                time.sleep(pause)
                waited, pause = waited + pause, min(pause * 2, 2.0)

    def _exec(self, stmt: Any, params: Any = None) -> int:
        """One write statement, committed at once; returns the rows it matched."""

        def run() -> int:
            with self._auto.begin() as conn:
                return conn.execute(stmt, params).rowcount

        return self._retry(run)

    def _scalar(self, stmt: Any) -> Any:
        def run() -> Any:
            with self._auto.connect() as conn:
                return conn.execute(stmt).scalar()

        return self._retry(run)

    def _rows(self, stmt: Any) -> list[Any]:
        def run() -> list[Any]:
            with self._auto.connect() as conn:
                return list(conn.execute(stmt).all())

        return self._retry(run)

    def _first(self, stmt: Any) -> Any:
        def run() -> Any:
            with Session(self._auto, expire_on_commit=False) as s:
                return s.scalars(stmt).first()

        return self._retry(run)

    def _all(self, stmt: Any) -> list[Any]:
        def run() -> list[Any]:
            with Session(self._auto, expire_on_commit=False) as s:
                return list(s.scalars(stmt).all())

        return self._retry(run)

    def _add(self, row: Any) -> Any:
        def run() -> Any:
            with self.session() as s:
                s.add(row)
                s.commit()
                s.refresh(row)
                return row

        return self._retry(run)

    def _update(self, table: Any, key: Any, fields: dict[str, Any]) -> Any:
        def run() -> Any:
            with self.session() as s:
                row = s.get(table, key)
                if row is None:
                    raise UserError(f"no {table.__tablename__} {key!r} in the store")
                for k, v in fields.items():
                    setattr(row, k, v)
                s.commit()
                s.refresh(row)
                return row

        return self._retry(run)
