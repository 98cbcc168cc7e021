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

See protege.services.redistill for the serving process's side (when a distill is due, and starting this worker).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import runpy
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from protege.errors import UserError
from protege.services.redistill import WORKER_ENV, distill_due, lease_name

if TYPE_CHECKING:
    from protege.app import Protege
    from protege.store import Store

LEASE_TTL_S = 90.0
RENEW_S = 15.0


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
    outcome = {
        "outcome": "promoted" if report.promoted else "candidate",
        "student_id": report.student_id,
        "retention": report.retention,  # the headline promotion went by: gated, and behind programs where judged so
        "why": reason,
        "verdict": report.reason,
    }
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
