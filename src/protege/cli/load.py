"""How the CLI finds its store and its app: flags, then PROTEGE_* env vars, then `[tool.protege]` in
./pyproject.toml, then defaults.

Commands that only read or review the store open it from this configuration and never import user code (fast, and
safe on a reviewer's machine). Commands that need a task's code (run, distill) import the app from `module:attr`.
An app that builds `Protege()` without `db=` follows the CLI's `--db` / `--project-dir`: they are put in the
environment while its module is imported.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protege.cli.output import short_id
from protege.errors import UserError

DEFAULT_PROJECT_DIR = ".protege"
MIN_PREFIX = 4  # characters of an id prefix: fewer would match many rows of a large store
APP_HINT = (
    "pass --app module:attr (e.g. --app myapp:app), set PROTEGE_APP, or add a [tool.protege] table with "
    '`app = "myapp:app"` to ./pyproject.toml (`protege init` writes a starter app)'
)


@dataclass
class CliConfig:
    """Where the CLI works: the app spec (if any), the store URL and the project dir."""

    app: str | None
    db: str | None
    project_dir: Path
    debug: bool = False

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.project_dir / 'protege.db'}"

    @property
    def sqlite_path(self) -> Path | None:
        """The store's file when it is a SQLite file, else None."""
        from protege.store.engine import sqlite_file

        return sqlite_file(self.db_url)


def pyproject_settings(folder: Path) -> dict[str, Any]:
    """The `[tool.protege]` table of folder/pyproject.toml ({} when there is none)."""
    path = folder / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc}; fix the TOML or run protege from another folder") from exc
    table = data.get("tool", {}).get("protege", {})
    return table if isinstance(table, dict) else {}


def resolve_config(*, app: str | None, db: str | None, project_dir: Path | None, debug: bool) -> CliConfig:
    """Flags win over PROTEGE_APP / PROTEGE_DB / PROTEGE_PROJECT_DIR, which win over [tool.protege]."""
    py = pyproject_settings(Path.cwd())
    env = os.environ
    folder = project_dir or env.get("PROTEGE_PROJECT_DIR") or py.get("project_dir") or DEFAULT_PROJECT_DIR
    return CliConfig(
        app=app or env.get("PROTEGE_APP") or py.get("app") or None,
        db=db or env.get("PROTEGE_DB") or py.get("db") or None,
        project_dir=Path(folder),
        debug=debug or env.get("PROTEGE_DEBUG", "") not in ("", "0", "false", "no"),
    )


def open_store(config: CliConfig, *, create: bool = False) -> Any:
    """The store named by the config; a missing SQLite file is an error unless `create` (it would be empty)."""
    from protege.store import Store

    path = config.sqlite_path
    if path is not None and not create and not path.exists():
        app = (
            f" (this command reads the store without importing {config.app!r}: where the app opens its own, "
            f"Protege(db=...), give that URL with --db)"
            if config.app
            else ""
        )
        raise UserError(
            f"no protege store at {str(path)!r}{app}; run `protege init` (or `protege demo`) here, "
            f"or point at one with --project-dir / --db / PROTEGE_DB"
        )
    if create:
        from protege.store.engine import make_project_folder

        make_project_folder(config.db_url, config.project_dir)
    # only `init`-like commands make a store; the rest read (or review) one that exists, and need no write check:
    # what spends money (run, distill) opens the app, which checks the store takes its writes before any call
    return Store(config.db_url, create=create, writable=create)


@contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block (only those not set already), then restore."""
    added = {k: v for k, v in values.items() if v and k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def load_app(config: CliConfig) -> Any:
    """Import the `Protege` app named by the config (`module:attr`; attr defaults to `app`; a factory is called)."""
    from protege.app import Protege

    if not config.app:
        raise UserError(f"this command needs your app (it runs the task's code): {APP_HINT}")
    module_name, _, attr = config.app.partition(":")
    if not module_name:
        raise UserError(f"app {config.app!r} is not 'module:attr'; e.g. --app myapp:app")
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # `protege` is an installed script: the working dir is not on the path by itself
        sys.path.insert(0, cwd)
    env = {"PROTEGE_DB": config.db or "", "PROTEGE_PROJECT_DIR": str(config.project_dir)}
    with _env(env):
        module = _import(module_name, config)
        obj = getattr(module, attr or "app", None)
        if obj is None:
            raise UserError(f"module {module_name!r} has no attribute {attr or 'app'!r}; {APP_HINT}")
        if callable(obj) and not isinstance(obj, Protege):
            obj = _call_factory(obj, config)
    if not isinstance(obj, Protege):
        raise UserError(f"{config.app!r} is {type(obj).__name__}, not a Protege app; point at `app = Protege(...)`")
    _same_store(obj, config)
    return obj


def _same_store(app: Any, config: CliConfig) -> None:
    """--db (or PROTEGE_DB) names a store the app does not use (it passes its own `db=`): refused, since the calls
    would be written to the app's store while the listings read the other."""
    if config.db and not _same_url(app.settings.db_url, config.db):
        raise UserError(
            f"--db / PROTEGE_DB is {config.db!r}, but app {config.app!r} opens its own store "
            f"{app.settings.db_url!r} (Protege(db=...)); drop --db, or let the app read PROTEGE_DB (Protege() "
            f"without db=)"
        )


def _same_url(a: str, b: str) -> bool:
    from protege.store.engine import sqlite_file

    files = sqlite_file(a), sqlite_file(b)
    if files[0] is not None and files[1] is not None:
        return files[0].resolve() == files[1].resolve()
    return a == b


def _call_factory(factory: Any, config: CliConfig) -> Any:
    try:
        return factory()
    except UserError:
        raise
    except Exception as exc:  # not a factory (e.g. json:loads), or the user's factory failed: keep --debug's traceback
        if config.debug:
            raise
        raise UserError(
            f"calling app factory {config.app!r} failed: {type(exc).__name__}: {exc}; point --app at "
            f"`app = Protege(...)` or a function taking no arguments that returns one (--debug shows "
            f"the traceback)"
        ) from exc


def _import(module_name: str, config: CliConfig) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise UserError(f"cannot import app module {module_name!r} from {os.getcwd()!r}; {APP_HINT}") from exc
        raise UserError(f"importing app {config.app!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: say where, keep the traceback for --debug
        if config.debug:
            raise
        raise UserError(
            f"importing app {config.app!r} failed: {type(exc).__name__}: {exc} (--debug shows the traceback)"
        ) from exc


def find_trace(store: Any, ref: str) -> Any:
    """A trace by id, or by a unique id prefix (listings show 12 characters)."""
    from sqlalchemy import select
    from sqlmodel import col

    from protege.store import TraceRow

    row = store.trace(ref)
    if row is not None:
        return row
    if len(ref) >= MIN_PREFIX and all(c in "0123456789abcdef" for c in ref.lower()):
        with store.session() as s:
            rows = list(s.scalars(select(TraceRow).where(col(TraceRow.id).startswith(ref.lower())).limit(2)))
        if len(rows) == 1:
            return rows[0]
        if len(rows) > 1:
            raise UserError(f"trace id prefix {ref!r} matches several traces; give more characters")
    short = f" (an id prefix needs at least {MIN_PREFIX} characters)" if len(ref) < MIN_PREFIX else ""
    if not short and _run_ids(store, ref):  # a failed call's error names its run: say how to list its attempts
        raise UserError(f"{ref!r} is a run id, not a trace id; list its traces with `protege traces --run {ref}`")
    raise UserError(f"no trace {ref!r}{short}; list traces with `protege traces`")


def find_run_id(store: Any, ref: str) -> str:
    """The run id of some traces, by the whole id or a unique prefix (a failed call's error prints it)."""
    found = _run_ids(store, ref) if len(ref) >= MIN_PREFIX else []
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UserError(f"run id prefix {ref!r} matches several runs; give more characters")
    short = f" (an id prefix needs at least {MIN_PREFIX} characters)" if len(ref) < MIN_PREFIX else ""
    raise UserError(f"no traces of run {ref!r}{short}; a failed call's error names its run id")


def _run_ids(store: Any, ref: str) -> list[str]:
    """Up to two run ids of recorded traces that are `ref` or start with it (two: enough to say 'several')."""
    from sqlalchemy import select
    from sqlmodel import col

    from protege.store import TraceRow

    run_id = col(TraceRow.run_id)
    with store.session() as s:
        if s.scalars(select(run_id).where(run_id == ref).limit(1)).first() is not None:
            return [ref]
        prefixed = run_id.startswith(ref.lower(), autoescape=True)  # a `_` or `%` in ref is no wildcard
        return list(s.scalars(select(run_id).where(prefixed).distinct().limit(2)))


def find_student_id(store: Any, ref: str) -> str:
    """A student id, or a unique prefix of one (listings show 12 characters)."""
    if store.student(ref) is not None:
        return ref
    matches = [r.id for r in store.students() if r.id.startswith(ref)] if len(ref) >= MIN_PREFIX else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"student id prefix {ref!r} matches {len(matches)} students; give more characters")
    short = f" (an id prefix needs at least {MIN_PREFIX} characters)" if len(ref) < MIN_PREFIX else ""
    raise UserError(
        f"no student {ref!r}{short}; list students with `protege students` (ids: "
        f"{', '.join(short_id(r.id) for r in store.students()[:5]) or 'none yet'})"
    )


def require_task(store: Any, task: str) -> Any:
    """The task's newest registered version, or a UserError listing the known tasks."""
    row = store.task(task)
    if row is None:
        known = ", ".join(t.name for t in store.tasks()) or "none yet"
        raise UserError(f"no task {task!r} in the store (tasks: {known}); register it with @app.task and call it")
    return row
