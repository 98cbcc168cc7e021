"""Opt-in re-distillation (`Policy(auto_distill=True)`): once a task without a promoted student has enough new
validated traces, a separate process distills it — never the process serving calls, never on a call's path.

The serving process only checks (`distill_gap`, a few counts, in the background: again once it has itself seen
as many teacher successes as traces were missing, or after `RECHECK_S` for those other processes added) and
starts `python -m protege.auto_distill` detached, so training outlives a short script. The worker
takes the lease `distill:<task>` in the store before anything else: one distill per task at a time across
processes and machines. It renews the lease while it works (with its progress, which `protege students` and the
TUI show) and releases it with the outcome; if it dies, the lease lapses after `LEASE_TTL_S` (at once on the same
host, where its pid is seen gone) and a later check starts another.

The worker imports the app the way the serving process was started: `PROTEGE_APP` / `--app module:attr` when set,
else the module that defined the task (a script run as `__main__` is loaded from its file, with its
`if __name__ == "__main__":` block skipped).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from protege.errors import UserError

if TYPE_CHECKING:
    from protege.app import Protege, TaskHandle
    from protege.store import Store

log = logging.getLogger("protege")
RECHECK_S = 60.0  # a serving process looks again after this, or once it has seen the traces still missing
LEASE_TTL_S = 90.0
RENEW_S = 15.0
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
    why = (f"{n} new validated traces since student {last.id[:8]} ({last.state})" if last
           else f"{n} validated traces and no student yet")
    return max(need - n, 0), why


def describe_lease(row: Any, live: bool, now: float | None = None) -> str:
    """A distill lease for people: what is running now, or how the last automatic distill ended."""
    info, task = row.info or {}, row.name.split(":", 1)[-1]
    now = time.time() if now is None else now
    if live:
        step = f" {info['done']}/{info['total']}" if info.get("total") else ""
        return (f"distilling {task!r} now: {info.get('phase', 'starting')}{step}, started "
                f"{_ago(now - info.get('started_at', now))} (pid {info.get('pid', '?')})")
    ended = _ago(now - info.get("ended_at", now))
    outcome = info.get("outcome")
    if outcome in ("promoted", "candidate"):
        retention = info.get("retention")
        kept = f", retention {retention:.1%}" if isinstance(retention, float) else ""
        return f"last distill of {task!r}, {ended}: student {str(info.get('student_id'))[:12]} {outcome}{kept}"
    if outcome == "failed":
        return (f"last distill of {task!r} failed {ended}: {info.get('error', '?')} — see logs/distill-{task}.log "
                f"under the project dir")
    if outcome is None:
        return f"a distill of {task!r} stopped during {info.get('phase', '?')} (its process ended); a later check " \
               f"starts another"
    return f"last distill check of {task!r}, {ended}: {outcome}"


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


# -- the serving process's side ----------------------------------------------------------------------------------


def app_reference(app: Protege, handle: TaskHandle) -> list[str] | None:
    """Worker arguments that load this app: ["--app", "module:attr"] or ["--app-file", path, "--attr", name]."""
    if app.settings.app:
        return ["--app", app.settings.app]
    module = sys.modules.get(getattr(handle.spec.fn, "__module__", ""), None)
    attr = next((k for k, v in vars(module).items() if v is app), None) if module else None
    if module is None or attr is None:
        return None
    if module.__name__ == "__main__":
        path = getattr(module, "__file__", None)
        return ["--app-file", str(Path(path).resolve()), "--attr", attr] if path else None
    return ["--app", f"{module.__name__}:{attr}"]


def launch(app: Protege, handle: TaskHandle, reason: str) -> subprocess.Popen | None:
    """Start the worker, detached; its output goes to PROJECT_DIR/logs/distill-TASK.log."""
    ref = app_reference(app, handle)
    if ref is None:
        log.warning("task %r: auto_distill cannot find how to load this app in another process; set PROTEGE_APP="
                    "module:attr (or define the app at module level)", handle.name)
        return None
    logs = app.settings.project_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROTEGE_DB": app.store.url, "PROTEGE_PROJECT_DIR": str(app.settings.project_dir),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    cmd = [sys.executable, "-m", "protege.auto_distill", "--task", handle.name, *ref]
    with open(logs / f"distill-{handle.name}.log", "ab") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=os.getcwd())
    log.info("task %r: %s; distilling in the background (pid %d, log %s)", handle.name, reason, proc.pid,
             logs / f"distill-{handle.name}.log")
    return proc


# -- the worker ------------------------------------------------------------------------------------------------


class LeaseKeeper:
    """Holds the distill lease: renews it with the latest progress every RENEW_S from a thread."""

    def __init__(self, store: Store, name: str, owner: str):
        self.store, self.name, self.owner = store, name, owner
        self.info: dict[str, Any] = {"phase": "starting", "pid": os.getpid(), "started_at": time.time()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="protege-distill-lease", daemon=True)

    def acquire(self) -> bool:
        if not self.store.acquire_lease(self.name, owner=self.owner, ttl_s=LEASE_TTL_S, info=self.info):
            return False
        self._thread.start()
        return True

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.info = {**self.info, "phase": stage, "done": done, "total": total}

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            self.store.renew_lease(self.name, owner=self.owner, ttl_s=LEASE_TTL_S, info=self.info)

    def release(self, *, previous: dict | None = None, **outcome: Any) -> None:
        """Let go with this run's outcome, or (`previous`) put back the info of the run before, when this one did
        nothing."""
        self._stop.set()
        info = previous if previous is not None else {**self.info, **outcome, "ended_at": time.time()}
        self.store.release_lease(self.name, owner=self.owner, info=info)


def load_app(args: argparse.Namespace) -> Protege:
    from protege.app import Protege

    if args.app_file:
        scope = runpy.run_path(args.app_file, run_name="__protege_worker__")
        obj = scope.get(args.attr)
    else:
        module_name, _, attr = args.app.partition(":")
        import importlib

        obj = getattr(importlib.import_module(module_name), attr or "app", None)
    if not isinstance(obj, Protege):
        raise UserError(f"the app to distill was not found ({args.app or args.app_file!r}); set PROTEGE_APP")
    return obj


def work(app: Protege, task: str, config: dict | None = None) -> dict[str, Any]:
    """Distill `task` under its lease; returns the outcome (also left on the lease row)."""
    from protege.store.background import process_owner

    handle = app.handle(task)
    previous = app.store.lease(lease_name(task))  # how the last distill ended: kept if there is nothing to do
    keeper = LeaseKeeper(app.store, lease_name(task), process_owner())
    if not keeper.acquire():
        return {"outcome": "skipped", "why": "another process holds the distill lease"}
    try:
        reason = distill_due(app.store, task, handle.spec.policy)
        if reason is None:  # another process distilled it just before
            if previous is not None and previous.info:
                keeper.release(previous=previous.info)
            else:
                keeper.release(phase="done", outcome="not due")
            return {"outcome": "not due"}
        options: dict[str, Any] = {"progress": keeper.progress}
        if config:
            from protege.distill.train import TrainConfig

            options["config"] = TrainConfig(**config)
        report = app.distill(task, **options)
    except BaseException as exc:
        keeper.release(phase="failed", outcome="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    outcome = {"outcome": "promoted" if report.promoted else "candidate", "student_id": report.student_id,
               "retention": report.metrics.get("retention"), "why": reason, "verdict": report.reason}
    keeper.release(phase="done", **outcome)
    return outcome


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m protege.auto_distill", description=__doc__.splitlines()[0])
    ap.add_argument("--task", required=True)
    ap.add_argument("--app", default=None, help="module:attr of the app")
    ap.add_argument("--app-file", default=None, help="a script that defines the app (run as a module, not main)")
    ap.add_argument("--attr", default="app", help="the app's name in --app-file")
    args = ap.parse_args(argv)
    os.environ[WORKER_ENV] = "1"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    app = load_app(args)
    config = app.settings.auto_distill_config
    print(json.dumps(work(app, args.task, config), default=str), flush=True)
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
