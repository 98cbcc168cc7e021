"""Queries for background work: the durable job queue and named leases (part of `Store`).

Claims are compare-and-swap updates on the previous owner, so of several processes that see the same free job (or
lapsed lease) exactly one wins. An owner is "host:pid:token": on the same host a dead pid frees its claims at once;
from another host only the lease's expiry does.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from protege.store.base import StoreBase
from protege.store.models import JobRow, LeaseRow, utcnow

_PROCESS_TOKEN = uuid.uuid4().hex[:8]


def process_owner() -> str:
    """This process's owner id for claims and leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_TOKEN}"


def owner_gone(owner: str | None) -> bool:
    """Whether a claim's owner is known to be dead: a process of this host that no longer runs (or an earlier
    process whose pid this one reuses). Owners on other hosts are never known dead: their lease must lapse."""
    if owner is None:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, token = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return token != _PROCESS_TOKEN
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed child not yet reaped by its parent still answers kill(0); /proc says it is a zombie (Linux)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _free(owner: str | None, until: datetime | None, now: datetime) -> bool:
    return owner is None or until is None or until < now or owner_gone(owner)


def held_elsewhere(job: JobRow, me: str) -> bool:
    """Whether another live process is running `job` now (its claim is neither `me`, lapsed nor dead)."""
    return job.owner != me and not _free(job.owner, job.lease_until, utcnow())


class BackgroundQueries(StoreBase):
    """The job queue and leases; `Store` inherits these."""

    # -- jobs --------------------------------------------------------------------------------------------------

    def add_job(self, task: str, kind: str, payload: dict | None, *, owner: str, lease_s: float) -> JobRow:
        """Queue a job already claimed by `owner` (the process that will run it now)."""
        row = JobRow(
            task_name=task,
            kind=kind,
            payload=payload,
            owner=owner,
            attempts=1,
            lease_until=utcnow() + timedelta(seconds=lease_s),
        )
        return self._add(row)

    def jobs(self, task: str | None = None, *, state: str | None = "pending") -> list[JobRow]:
        stmt = select(JobRow)
        if task is not None:
            stmt = stmt.where(col(JobRow.task_name) == task)
        if state is not None:
            stmt = stmt.where(col(JobRow.state) == state)
        return self._all(stmt.order_by(col(JobRow.created_at), col(JobRow.id)))

    def claim_jobs(self, task: str, *, owner: str, lease_s: float) -> list[JobRow]:
        """Claim the task's pending jobs nobody is running (free, lapsed, or of a dead owner); returns those won."""
        now, won = utcnow(), []
        for job in self.jobs(task):
            if not _free(job.owner, job.lease_until, now):
                continue
            prev = col(JobRow.owner).is_(None) if job.owner is None else col(JobRow.owner) == job.owner
            stmt = (
                update(JobRow)
                .where(col(JobRow.id) == job.id, col(JobRow.state) == "pending", prev)
                .values(owner=owner, lease_until=now + timedelta(seconds=lease_s), attempts=col(JobRow.attempts) + 1)
            )
            if self._exec(stmt) == 1:
                job.owner, job.attempts = owner, job.attempts + 1
                won.append(job)
        return won

    def renew_jobs(self, owner: str, *, lease_s: float) -> int:
        stmt = (
            update(JobRow)
            .where(col(JobRow.owner) == owner, col(JobRow.state) == "pending")
            .values(lease_until=utcnow() + timedelta(seconds=lease_s))
        )
        return self._exec(stmt)

    def finish_job(self, job_id: str) -> None:
        self._exec(delete(JobRow).where(col(JobRow.id) == job_id))

    def fail_job(self, job_id: str, error: str, *, final: bool) -> None:
        """A failed run: released for a later retry, or (final) kept as failed for a person to look at."""
        values: dict[str, Any] = {"owner": None, "lease_until": None, "error": error[:4000]}
        if final:
            values["state"] = "failed"
        self._exec(update(JobRow).where(col(JobRow.id) == job_id).values(**values))

    def release_jobs(self, owner: str) -> int:
        """Hand an owner's unfinished jobs back to the queue (at exit, when time ran out)."""
        stmt = (
            update(JobRow)
            .where(col(JobRow.owner) == owner, col(JobRow.state) == "pending")
            .values(owner=None, lease_until=None)
        )
        return self._exec(stmt)

    # -- leases ------------------------------------------------------------------------------------------------

    def acquire_lease(self, name: str, *, owner: str, ttl_s: float, info: dict | None = None) -> bool:
        """Take the lease `name` unless a live holder has it; True when `owner` holds it now."""
        now = utcnow()
        until = now + timedelta(seconds=ttl_s)
        try:
            self._add(LeaseRow(name=name, owner=owner, expires_at=until, acquired_at=now, info=info))
            return True
        except IntegrityError:
            pass
        held = self.lease(name)
        if held is None:  # released in between: try once more from the top
            return self.acquire_lease(name, owner=owner, ttl_s=ttl_s, info=info)
        if held.owner != owner and not _free(held.owner, held.expires_at, now):
            return False
        stmt = (
            update(LeaseRow)
            .where(col(LeaseRow.name) == name, col(LeaseRow.owner) == held.owner)
            .values(owner=owner, expires_at=until, acquired_at=now, info=info)
        )
        return self._exec(stmt) == 1

    def renew_lease(self, name: str, *, owner: str, ttl_s: float, info: dict | None = None) -> bool:
        """Extend a held lease (and update its progress); False if it was lost to another holder."""
        values: dict[str, Any] = {"expires_at": utcnow() + timedelta(seconds=ttl_s)}
        if info is not None:
            values["info"] = info
        stmt = update(LeaseRow).where(col(LeaseRow.name) == name, col(LeaseRow.owner) == owner).values(**values)
        return self._exec(stmt) == 1

    def release_lease(self, name: str, *, owner: str, info: dict | None = None) -> None:
        """Let go of a lease; the row stays (expired) with its last info, so the outcome remains visible."""
        values: dict[str, Any] = {"expires_at": utcnow()}
        if info is not None:
            values["info"] = info
        self._exec(update(LeaseRow).where(col(LeaseRow.name) == name, col(LeaseRow.owner) == owner).values(**values))

    def lease(self, name: str) -> LeaseRow | None:
        return self._first(select(LeaseRow).where(col(LeaseRow.name) == name))

    def leases(self, prefix: str = "") -> list[LeaseRow]:
        return self._all(select(LeaseRow).where(col(LeaseRow.name).startswith(prefix)).order_by(col(LeaseRow.name)))

    @staticmethod
    def lease_live(row: LeaseRow | None) -> bool:
        """Whether a lease is held now (not lapsed, holder not known dead)."""
        return row is not None and not _free(row.owner, row.expires_at, utcnow())
