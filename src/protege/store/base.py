"""The store's plumbing: engines, migration on open, sessions, and one-statement helpers with a reconnect retry.

On PostgreSQL single statements (reads and writes) run in autocommit — one round trip instead of BEGIN, statement,
COMMIT — which is just as atomic and durable for one statement. Multi-statement work (bulk batches, ORM adds,
`session()`) runs in ordinary transactions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from protege.errors import StoreError, UserError
from protege.store.engine import make_engine, normalize_url

T = TypeVar("T")
OUTAGE_S = 10.0  # how long a store operation waits for a database it cannot reach before it fails


def _unreachable(exc: DBAPIError) -> bool:
    """A PostgreSQL server that refused or dropped the connection, or is shutting down or starting: no SQLSTATE
    (no server answered), class 08 (connection exception) or 57P0x. Not a missing database or a bad password
    (3D000, 28xxx: waiting would not help), not a query's error, not SQLite."""
    if not isinstance(exc, OperationalError) or not type(exc.orig).__module__.startswith("psycopg"):
        return False
    state = getattr(exc.orig, "sqlstate", None)
    return state is None or state.startswith(("08", "57P0"))


class StoreBase:
    """Connection plumbing shared by the typed queries of `Store`."""

    def __init__(self, url: str, *, migrate: bool = True, echo: bool = False):
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, echo=echo)
        # one-statement work: autocommit on PostgreSQL (no BEGIN/COMMIT round trips); SQLite commits cheaply
        self._auto = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT") if self.dialect == "postgresql" else self.engine
        )
        if migrate:
            from protege.store.migrate import upgrade

            try:
                upgrade(self.engine)
            except OperationalError as exc:
                self.engine.dispose()
                where = self.engine.url.render_as_string(hide_password=True)
                hint = "; is the database server running?" if self.dialect == "postgresql" else ""
                raise StoreError(f"cannot open store {where!r}: {exc.orig}{hint}") from exc

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
