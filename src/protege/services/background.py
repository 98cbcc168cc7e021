"""Background work that is never lost: each job is a row in the store before it runs and is deleted when done.

A job is (task, kind, payload). `BackgroundWork.run` records it, claimed by this process, and runs the handler
registered for its kind; a handler must be safe to run again (a job cut short is run again from the start).
At exit the app drains running jobs for up to `Settings.drain_timeout_s`; what is still running then is cancelled
and handed back to the queue, and the next process that registers the task claims and finishes it. A process
killed outright (SIGKILL, power loss) leaves its jobs claimed: on the same host the next process sees the owner's
pid is gone and claims them at once; from another host, when their lease lapses (`LEASE_S` after the last renewal).

To add a kind of background work: `app.lifecycle.work.register("my_kind", handler)`, where
`async def handler(task: TaskRuntime, payload: dict) -> None`, then `await work.run(task, "my_kind", payload)`
(from the portal loop) or `work.submit(task, "my_kind", payload)` (from any thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from protege.agents.cascade import TaskRuntime
from protege.errors import BudgetExceeded, UserError
from protege.services.portal import Portal
from protege.store import JobRow, Store
from protege.store.background import process_owner

log = logging.getLogger("protege")
LEASE_S = 120.0  # a claim lapses this long after its last renewal (how long another host waits on a dead owner)
MAX_ATTEMPTS = 3  # runs of a job that failed with an error before it is kept as failed instead of retried

JobHandler = Callable[[TaskRuntime, dict[str, Any]], Awaitable[None]]


class BackgroundWork:
    """The app's durable job runner (one per app; all its jobs run on the app's portal loop)."""

    def __init__(self, store: Store, portal: Portal):
        self.store = store
        self.portal = portal
        self.owner = process_owner()
        self.handlers: dict[str, JobHandler] = {}
        self.running: dict[asyncio.Task, str] = {}  # asyncio task -> "kind for 'task'", for the exit log
        self.over_budget: set[tuple[str, str]] = set()  # (kind, task) already warned of in this process

    def register(self, kind: str, handler: JobHandler) -> None:
        self.handlers[kind] = handler

    # -- running -----------------------------------------------------------------------------------------------

    async def run(self, task: TaskRuntime, kind: str, payload: dict[str, Any]) -> None:
        """Record a job (claimed by this process), run it now, and delete it when done."""
        me = asyncio.current_task()
        if me is not None:
            self.running[me] = f"{kind} for {task.spec.name!r}"
        try:
            job = await asyncio.to_thread(
                self.store.add_job, task.spec.name, kind, payload, owner=self.owner, lease_s=LEASE_S
            )
            await self._execute(task, job)
        finally:
            self.running.pop(me, None)  # type: ignore[arg-type]

    def submit(self, task: TaskRuntime, kind: str, payload: dict[str, Any]) -> None:
        """`run` in the background, from any thread (the job row is written before this returns)."""
        job = self.store.add_job(task.spec.name, kind, payload, owner=self.owner, lease_s=LEASE_S)
        self._start(task, job)

    def resume(self, task: TaskRuntime) -> int:
        """Claim the task's jobs left by processes that ended before finishing them, and run them here."""
        jobs = self.store.claim_jobs(task.spec.name, owner=self.owner, lease_s=LEASE_S)
        for job in jobs:
            log.info("resuming %s work for task %r left pending by an earlier process", job.kind, job.task_name)
            self._start(task, job)
        return len(jobs)

    def _start(self, task: TaskRuntime, job: JobRow) -> None:
        label = f"{job.kind} for {job.task_name!r}"

        def spawn() -> None:
            t = asyncio.ensure_future(self._execute(task, job))
            self.running[t] = label
            t.add_done_callback(lambda done: self.running.pop(done, None))

        self.portal.loop.call_soon_threadsafe(spawn)

    async def _execute(self, task: TaskRuntime, job: JobRow) -> None:
        handler = self.handlers.get(job.kind)
        if handler is None:  # written by a newer protege, or a kind this app did not register: leave it queued
            log.warning("no handler for %s work of task %r in this app; left pending", job.kind, job.task_name)
            await asyncio.to_thread(self.store.fail_job, job.id, f"no handler for kind {job.kind!r}", final=False)
            return
        beat = asyncio.ensure_future(self._heartbeat())
        try:
            await handler(task, dict(job.payload or {}))
        except asyncio.CancelledError:
            raise  # cut short (exit ran out of time): the row stays pending for the next process
        except BudgetExceeded as exc:  # nothing was spent; the next teacher success asks again
            self._warn_over_budget(job, exc)
            await asyncio.to_thread(self.store.finish_job, job.id)
        except UserError as exc:  # the same job fails the same way again: a retry would only pay again
            log.warning(
                "%s work for task %r failed; kept as failed (`protege tasks` lists it): %s",
                job.kind,
                job.task_name,
                exc,
            )
            await asyncio.to_thread(self.store.fail_job, job.id, f"{type(exc).__name__}: {exc}", final=True)
        except Exception as exc:  # background work must never take the app down; the paid traces are safe
            final = job.attempts >= MAX_ATTEMPTS
            log.exception(
                "%s work for task %r failed (run %d of %d)%s",
                job.kind,
                job.task_name,
                job.attempts,
                MAX_ATTEMPTS,
                "; kept as failed" if final else "; a later process retries it",
            )
            await asyncio.to_thread(self.store.fail_job, job.id, f"{type(exc).__name__}: {exc}", final=final)
        else:
            await asyncio.to_thread(self.store.finish_job, job.id)
        finally:
            beat.cancel()

    def _warn_over_budget(self, job: JobRow, exc: BudgetExceeded) -> None:
        """Once per kind and task in a process: with a small budget every teacher success would say it again."""
        if (job.kind, job.task_name) in self.over_budget:
            return
        self.over_budget.add((job.kind, job.task_name))
        log.warning(
            "%s work for task %r skipped, and again while the budget stays short: %s", job.kind, job.task_name, exc
        )

    async def _heartbeat(self) -> None:
        """Renew this process's claims while a job runs, so a long job is not taken over by another host."""
        while True:
            await asyncio.sleep(LEASE_S / 3)
            await asyncio.to_thread(self.store.renew_jobs, self.owner, lease_s=LEASE_S)

    # -- exit --------------------------------------------------------------------------------------------------

    def still_running(self, others: set[asyncio.Task]) -> list[asyncio.Task]:
        return list({t for t in [*self.running, *others] if not t.done()})

    async def drain(self, others: set[asyncio.Task], timeout_s: float | None) -> list[asyncio.Task]:
        """Wait for this runner's jobs and `others` (shadow runs) until none is left or `timeout_s` passes;
        returns what is still running."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while pending := self.still_running(others):
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return pending
            await asyncio.wait(pending, timeout=left)
        return []

    async def abandon(self, others: set[asyncio.Task]) -> Counter[str]:
        """Cancel what still runs (its jobs stay in the store); returns what was stopped, by label."""
        pending = self.still_running(others)
        labels = Counter(self.running.get(t, "a shadow run") for t in pending)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return labels

    def hand_back(self, stopped: Counter[str], why: str) -> None:
        """Release this process's claims on stopped jobs so the next process takes them at once, and say so."""
        released = self.store.release_jobs(self.owner)  # sync: at exit no worker thread may be started
        if not stopped and not released:
            return
        what = ", ".join(f"{n} × {label}" if n > 1 else label for label, n in stopped.items())
        log.warning(
            "protege: background work still running %s (%s) was stopped; %d job(s) left pending in the "
            "store for the next process that opens it%s",
            why,
            what,
            released,
            "; raise PROTEGE_DRAIN_TIMEOUT_S to wait longer" if "interrupted" not in why else "",
        )
