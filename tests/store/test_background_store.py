"""The job queue and named leases, on SQLite and PostgreSQL: a claim goes to one owner; a dead owner's (same host)
or a lapsed claim is taken over; a live one is not."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

from sqlalchemy import update

from protege.store import JobRow, LeaseRow
from protege.store.background import owner_gone, process_owner
from protege.store.models import utcnow


def dead_owner() -> str:
    """An owner id of a process of this host that has ended (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return f"{socket.gethostname()}:{proc.stdout.strip()}:deadbeef"


def test_owner_liveness():
    assert not owner_gone(process_owner())
    assert owner_gone(dead_owner())
    assert not owner_gone("another-host:1:abc")  # another host: never known dead, its lease must lapse
    assert owner_gone(process_owner().rsplit(":", 1)[0] + ":0ther")  # our pid, an earlier process's token


def test_jobs_are_claimed_once_and_taken_over_only_from_the_dead(store):
    me = process_owner()
    live = store.add_job("t", "skill", {"trace_id": "a"}, owner="another-host:7:x", lease_s=60)
    dead = store.add_job("t", "skill", {"trace_id": "b"}, owner=dead_owner(), lease_s=60)
    lapsed = store.add_job("t", "skill", {"trace_id": "c"}, owner="another-host:8:y", lease_s=60)
    store._exec(update(JobRow).where(JobRow.id == lapsed.id).values(lease_until=utcnow() - timedelta(seconds=1)))
    won = store.claim_jobs("t", owner=me, lease_s=60)
    assert {j.id for j in won} == {dead.id, lapsed.id}
    assert all(j.attempts == 2 and j.owner == me for j in won)
    assert store.claim_jobs("t", owner="another-host:9:z", lease_s=60) == []  # mine now, and I am alive
    assert store.claim_jobs("other-task", owner=me, lease_s=60) == []

    assert store.release_jobs(me) == 2
    store.fail_job(live.id, "boom", final=True)
    store.finish_job(dead.id)
    assert [j.id for j in store.jobs("t")] == [lapsed.id]
    [failed] = store.jobs("t", state="failed")
    assert failed.id == live.id and failed.error == "boom"


def test_a_lease_has_one_holder_until_released_or_lapsed(store):
    a, b = process_owner(), "another-host:5:b"
    assert store.acquire_lease("distill:t", owner=b, ttl_s=60, info={"phase": "training"})
    assert not store.acquire_lease("distill:t", owner=a, ttl_s=60)
    assert store.lease_live(store.lease("distill:t"))
    assert store.renew_lease("distill:t", owner=b, ttl_s=60, info={"phase": "evaluating"})
    assert not store.renew_lease("distill:t", owner=a, ttl_s=60)
    store.release_lease("distill:t", owner=b, info={"phase": "done"})
    assert not store.lease_live(store.lease("distill:t"))
    assert store.acquire_lease("distill:t", owner=a, ttl_s=60)
    store._exec(update(LeaseRow).where(LeaseRow.name == "distill:t").values(expires_at=utcnow() - timedelta(seconds=1)))
    assert store.acquire_lease("distill:t", owner=b, ttl_s=60)  # lapsed: taken over
    assert [r.owner for r in store.leases("distill:")] == [b]
    assert store.acquire_lease("distill:u", owner=dead_owner(), ttl_s=60)
    assert store.acquire_lease("distill:u", owner=a, ttl_s=60)  # its holder died: taken over at once
