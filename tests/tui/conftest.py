"""Fixtures for the console tests: a seeded SQLite store (fixed ids and times) and the console over it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from textual.worker import WorkerCancelled, WorkerState

sys.path.insert(0, str(Path(__file__).parent))  # tui_seed, shared with the screenshot script

from tui_seed import seed

from protege.store import Store


@pytest.fixture
def seeded_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'console.db'}"
    with Store(url) as store:
        seed(store)
    return url


@pytest.fixture
def seeded_store(seeded_url):
    """A second Store on the seeded file, to check what the console wrote."""
    with Store(seeded_url) as store:
        yield store


@pytest.fixture
def console(seeded_url):
    from protege.tui.app import make_app

    return make_app(db=seeded_url, reviewer="alice")


async def _settle(pilot) -> None:
    for _ in range(10):  # a finished worker may start another (the dashboard's list starts its chart)
        await pilot.pause()
        started = [w for w in pilot.app.workers if w.state is not WorkerState.PENDING]
        if not any(w.is_running for w in started) and len(started) == len(pilot.app.workers):
            break
        await asyncio.gather(*(_finished(w) for w in started))
    await pilot.pause()


async def _finished(worker) -> None:
    """Wait for `worker`; one cancelled on the way (an exclusive load replaced by a newer one) is finished too.

    The manager's own `wait_for_complete` raises on a cancelled worker, which a busy machine makes likely."""
    try:
        await worker.wait()
    except WorkerCancelled:
        pass


@pytest.fixture
def settle():
    """`await settle(pilot)`: let messages run and every worker (store reads) finish, then the UI catch up."""
    return _settle
