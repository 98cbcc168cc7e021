"""Engines for the store: URL checks, SQLite pragmas, pool settings and a fast JSON codec.

SQLite runs in WAL mode with a busy timeout, so many threads and processes can share one file; synchronous=NORMAL
keeps every commit safe from an application crash (WAL) at a fraction of a full fsync per commit.
PostgreSQL skips the pool's pre-ping (a round trip on every checkout, on the hot path); the store instead retries
once when a pooled connection turns out dead (see `Store._retry`), and recycles connections every 30 minutes.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool
from sqlmodel import create_engine

from protege.errors import UserError

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_PAGE_SIZE = 16_384

try:  # orjson comes with langgraph; it writes JSON ~5x faster than the json module
    import orjson
except ImportError:  # pragma: no cover - exercised only without orjson
    orjson = None  # type: ignore[assignment]  # the usual optional-import idiom: callers test `is None`


def json_dumps(value: Any) -> str:
    """JSON text for a column value; orjson when it can (NaN becomes null), the json module otherwise."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
        except TypeError:  # ints past 64 bits and other values orjson refuses: let json try (and explain)
            pass
    return json.dumps(value)


# orjson reads an integer past 64 bits as a float; json reads it exactly. A float that large in a stored value is
# (nearly always) such an integer, so its text is read again by json: a walk over the parsed values costs far less
# than a regex over the text (~45 µs for a 4 KB trace, 9× orjson's own parse)
_HUGE = float(2**63)


def json_loads(text: str | bytes | memoryview) -> Any:
    if isinstance(text, memoryview):  # psycopg hands over buffers; json.loads takes only str/bytes
        text = bytes(text)
    if orjson is not None:
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:  # e.g. NaN written by the json module: json reads it
            return json.loads(text)
        if not _has_huge_float(value):
            return value
    return json.loads(text)


def _has_huge_float(value: Any) -> bool:
    pending = [value]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is float and not -_HUGE < item < _HUGE:
            return True
    return False


def normalize_url(url: str) -> str:
    """A SQLAlchemy URL with the psycopg driver for PostgreSQL; a SQLite file's folder must exist (see
    `make_project_folder` for the one folder protege creates)."""
    if not isinstance(url, str) or "://" not in url:
        raise UserError(
            f"store url {url!r} is not a SQLAlchemy URL; use 'sqlite:///path.db' or 'postgresql+psycopg://...'"
        )
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    backend = url.split("://", 1)[0].split("+", 1)[0]
    if backend not in ("sqlite", "postgresql"):
        raise UserError(
            f"store url {_shown(url)!r} is a {backend} database; protege stores in SQLite ('sqlite:///path.db') or "
            f"PostgreSQL ('postgresql+psycopg://user@host/db')"
        )
    path = sqlite_file(url)
    if path is not None:
        _require_folder(path.parent, url)
    return url


def sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL names; None for an in-memory database or another backend."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        return Path(url.removeprefix("sqlite:///").split("?", 1)[0]).expanduser()
    return None


def make_project_folder(url: str, project_dir: str | Path) -> None:
    """Create the project dir when the SQLite store lives in it (the default store, `<project dir>/protege.db`):
    protege owns that folder. Any other folder must exist already, so that a mistyped path fails instead of
    quietly starting an empty store somewhere new."""
    path = sqlite_file(url)
    folder = Path(project_dir).expanduser()
    if path is None or path.parent.resolve() != folder.resolve() or folder.is_dir():
        return
    _require_no_file_above(folder, url)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"cannot create the project dir {str(folder)!r} for store {url!r} ({exc.strerror or exc}); "
            f"pick a project dir you can write to"
        ) from exc


def _require_folder(folder: Path, url: str) -> None:
    if folder.is_dir():
        return
    _require_no_file_above(folder, url)
    raise UserError(
        f"the folder {str(folder)!r} of store {url!r} does not exist; create it (mkdir -p {folder}) or point the "
        f"store at a file in an existing folder"
    )


def _require_no_file_above(folder: Path, url: str) -> None:
    """A file where the store's folder (or one above it) should be: named, as the OS error would not."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UserError(
            f"store {url!r} cannot be made: {str(blocker)!r} is a file, not a folder; point the store elsewhere"
        )


def _shown(url: str) -> str:
    """The URL with any password masked, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: no password to find in it either
        return url


def make_engine(url: str, *, echo: bool = False) -> Engine:
    common: dict[str, Any] = {"echo": echo, "json_serializer": json_dumps, "json_deserializer": json_loads}
    try:
        if url.startswith("sqlite"):
            connect_args: dict[str, Any] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
            if _is_memory(url):
                # one connection, or each thread would see its own empty database; a pool of one hands it to one
                # thread at a time (sqlite3 connections must not run two transactions at once)
                connect_args["check_same_thread"] = False
                common.update(
                    poolclass=QueuePool, pool_size=1, max_overflow=0, pool_timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
                )
            engine = create_engine(url, connect_args=connect_args, **common)
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return create_engine(url, pool_size=10, max_overflow=20, pool_recycle=1800, **common)
    except Exception as exc:  # bad driver names and the like
        raise UserError(f"cannot open store {url!r}: {exc}") from exc


def _is_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # 16 KB pages for a new file (a no-op on an existing one; it must come before WAL): a trace (~4 KB of JSON)
    # fits in a page instead of spilling into overflow pages, which nearly halves a bulk insert's database time
    cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    # checkpoint every 4,000 pages of WAL instead of 1,000 (64 MB with 16 KB pages; 16 MB in a file made with 4 KB
    # ones): fewer fsyncs, each page copied back once per checkpoint (1,000 pages cost a bulk ingest a third)
    cur.execute("PRAGMA wal_autocheckpoint=4000")
    cur.execute("PRAGMA journal_size_limit=67108864")  # and truncate the WAL file back to 64 MB afterwards
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def require_aware(value: datetime | None, what: str) -> datetime | None:
    """The store keeps UTC instants: a naive datetime is ambiguous, so it is refused with a fix."""
    if value is not None and value.utcoffset() is None:
        raise UserError(f"{what}={value!r} has no timezone; pass an aware datetime, e.g. datetime.now(timezone.utc)")
    return value
