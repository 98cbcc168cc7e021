"""When a task with `Policy(auto_distill=True)` is due to be distilled again, and starting the worker that does it
(`python -m protege.auto_distill`, detached) — the serving process's side of protege.auto_distill.

The serving process only checks (`distill_gap`, a few counts, in the background: again once it has itself seen
as many teacher successes as traces were missing, or after `RECHECK_S` for those other processes added) and
starts the worker, which takes the lease `lease_name(task)` in the store before anything else.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from protege.agents.cascade import TaskEntry
    from protege.settings import Settings
    from protege.store import Store

log = logging.getLogger("protege")
RECHECK_S = 60.0  # a serving process looks again after this, or once it has seen the traces still missing
WORKER_ENV = "PROTEGE_AUTO_DISTILL_WORKER"  # set in the worker: it never starts another


def lease_name(task: str) -> str:
    return f"distill:{task}"


def distill_due(store: Store, task: str, policy: Any) -> str | None:
    """Why the task should be distilled now, or None: no promoted student, and enough validated traces — since the
    newest student (`auto_distill_traces`), or in all (`min_traces`) when it never had one."""
    missing, reason = distill_gap(store, task, policy)
    return reason if missing == 0 else None


def distill_gap(store: Store, task: str, policy: Any) -> tuple[int | None, str]:
    """(validated traces still missing before a distill is due — 0 when it is, None while a student is promoted;
    why, in words)."""
    if store.promoted_student(task) is not None:
        return None, "a student is promoted"
    students = store.students(task)
    last = max(students, key=lambda s: s.created_at) if students else None
    n = store.count_dataset_traces(task, since=last.created_at if last else None)
    need = policy.auto_distill_traces if last else policy.min_traces
    why = (
        f"{n} new validated traces since student {last.id[:8]} ({last.state})"
        if last
        else f"{n} validated traces and no student yet"
    )
    return max(need - n, 0), why


def describe_lease(row: Any, live: bool, now: float | None = None) -> str:
    """A distill lease for people: what is running now, or how the last automatic distill ended."""
    info, task = row.info or {}, row.name.split(":", 1)[-1]
    now = time.time() if now is None else now
    if live:
        step = f" {info['done']}/{info['total']}" if info.get("total") else ""
        return (
            f"distilling {task!r} now: {info.get('phase', 'starting')}{step}, started "
            f"{_ago(now - info.get('started_at', now))} (pid {info.get('pid', '?')})"
        )
    ended = _ago(now - info.get("ended_at", now))
    outcome = info.get("outcome")
    if outcome in ("promoted", "candidate"):
        retention = info.get("retention")
        kept = f", retention {retention:.1%}" if isinstance(retention, float) else ""
        return f"last distill of {task!r}, {ended}: student {str(info.get('student_id'))[:12]} {outcome}{kept}"
    if outcome == "failed":
        return (
            f"last distill of {task!r} failed {ended}: {info.get('error', '?')} — see logs/distill-{task}.log "
            f"under the project dir"
        )
    if outcome is None:
        return (
            f"a distill of {task!r} stopped during {info.get('phase', '?')} (its process ended); a later check "
            f"starts another"
        )
    return f"last distill check of {task!r}, {ended}: {outcome}"


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


class LaunchHost(Protocol):
    """What starting the worker reads of the app (it looks for the app itself among its module's globals)."""

    settings: Settings
    store: Store


def app_reference(app: LaunchHost, handle: TaskEntry) -> list[str] | None:
    """Worker arguments that load this app: ["--app", "module:attr"] or ["--app-file", path, "--attr", name]."""
    if app.settings.app:
        return ["--app", app.settings.app]
    module = sys.modules.get(getattr(handle.spec.fn, "__module__", ""), None)
    attr = next((k for k, v in vars(module).items() if v is app), None) if module else None
    if module is None or attr is None:
        return None
    if module.__name__ == "__main__":
        path = _script_path(module, handle.spec.fn)
        return ["--app-file", str(path), "--attr", attr] if path else None
    return ["--app", f"{module.__name__}:{attr}"]


def _script_path(module: Any, fn: Any) -> Path | None:
    """The file of a script run as __main__. Its `__file__` is gone once the script's body has ended (CPython
    deletes it), and a check at exit comes after that: the task function's code still names the file."""
    path = getattr(module, "__file__", None) or getattr(getattr(fn, "__code__", None), "co_filename", None)
    return Path(path).resolve() if path and Path(path).is_file() else None


def launch(app: LaunchHost, handle: TaskEntry, reason: str) -> subprocess.Popen[bytes] | None:
    """Start the worker, detached; its output goes to PROJECT_DIR/logs/distill-TASK.log."""
    ref = app_reference(app, handle)
    if ref is None:
        log.warning(
            "task %r: auto_distill cannot find how to load this app in another process; set PROTEGE_APP="
            "module:attr (or define the app at module level)",
            handle.name,
        )
        return None
    logs = app.settings.project_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PROTEGE_DB": app.store.url,
        "PROTEGE_PROJECT_DIR": str(app.settings.project_dir),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    cmd = [sys.executable, "-m", "protege.auto_distill", "--task", handle.name, *ref]
    with open(logs / f"distill-{handle.name}.log", "ab") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=os.getcwd(),
        )
    log.info(
        "task %r: %s; distilling in the background (pid %d, log %s)",
        handle.name,
        reason,
        proc.pid,
        logs / f"distill-{handle.name}.log",
    )
    return proc
