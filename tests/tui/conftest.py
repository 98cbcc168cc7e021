"""Fixtures for the console tests: a seeded SQLite store (fixed ids and times) and the console over it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

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
        if not any(w.is_running or w.state.name == "PENDING" for w in pilot.app.workers):
            break
        await pilot.app.workers.wait_for_complete()
    await pilot.pause()


@pytest.fixture
def settle():
    """`await settle(pilot)`: let messages run and every worker (store reads) finish, then the UI catch up."""
    return _settle
