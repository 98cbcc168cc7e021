"""Bulk trace ingest at the driver's speed: each row becomes the driver's parameters once, through the columns' own
bind processors (so a row is stored exactly as `insert_trace` stores it), then one executemany per batch on
SQLite and one COPY per batch on PostgreSQL.

Why not SQLAlchemy's executemany of an `insert()`: per row it builds and processes a parameter dict, which cost as
much as storing the row (17.9k traces/s against the sqlite3 driver's own 30.7k on the same rows, BENCHMARKS §2).
PostgreSQL's executemany is itself slower than COPY, its bulk path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from sqlalchemy import JSON, Table
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from protege.store.engine import json_dumps

T = TypeVar("T")


class BulkInsert:
    """Rows of one table, as plain dicts with every column, written in bulk on one dialect."""

    def __init__(self, table: Table, dialect: Dialect):
        self.dialect = dialect
        self.columns = [c.name for c in table.columns]
        self._values = itemgetter(*self.columns)
        self.processors = [
            (i, processor)
            for i, c in enumerate(table.columns)
            if (processor := _processor(c.type, dialect)) is not None
        ]
        names = ", ".join(self.columns)
        if self.copies:
            self.sql = f"COPY {table.name} ({names}) FROM STDIN"
        else:
            self.sql = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' * len(self.columns))})"

    @property
    def copies(self) -> bool:
        return self.dialect.name == "postgresql"

    def values(self, row: dict[str, Any]) -> tuple[Any, ...]:
        """The driver's parameters for one complete row, in column order."""
        values = list(self._values(row))
        for i, processor in self.processors:
            values[i] = processor(values[i])
        return tuple(values)

    def write(self, conn: Connection, items: Sequence[T], row: Callable[[T], dict[str, Any]]) -> None:
        """Insert `row(item)` of each item in the connection's transaction. On PostgreSQL each row is made while
        COPY streams the ones before it, so the server stores them as they come instead of waiting for the whole
        batch (1.5x the rate on 2 cores). A database error is SQLAlchemy's, as elsewhere."""
        if not self.copies:
            conn.exec_driver_sql(self.sql, [self.values(row(item)) for item in items])
            return
        raw = conn.connection.driver_connection
        assert raw is not None  # an open Connection always has its DBAPI connection
        cursor = raw.cursor()
        try:
            with cursor.copy(self.sql) as copy:
                for item in items:
                    copy.write_row(self.values(row(item)))
        except self.dialect.loaded_dbapi.Error as exc:
            lost = self.dialect.is_disconnect(exc, raw, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                self.sql, None, exc, self.dialect.loaded_dbapi.Error, connection_invalidated=lost
            ) from exc
        finally:
            cursor.close()


def _processor(sa_type: Any, dialect: Dialect) -> Any:
    """The column's bind processor; for a JSON column that stores None as NULL, the same text without
    SQLAlchemy's per-value checks (a third of a row's cost with seven JSON columns)."""
    if isinstance(sa_type, JSON) and sa_type.none_as_null:
        return _json_or_null
    return sa_type.dialect_impl(dialect).bind_processor(dialect)


def _json_or_null(value: Any) -> str | None:
    return None if value is None else json_dumps(value)
