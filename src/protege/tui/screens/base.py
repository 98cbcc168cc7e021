"""What every console screen shares: the Protege app, the store, the reviewer's name, and safe reads/writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from textual.screen import Screen

from protege.errors import ProtegeError

if TYPE_CHECKING:
    from protege.app import Protege
    from protege.store import Store

T = TypeVar("T")
ScreenResult = TypeVar("ScreenResult")


class ReviewScreen(Screen[ScreenResult]):
    """A screen of the console. Reads run off the UI thread; writes go through the Protege facade."""

    @property
    def protege(self) -> Protege:
        return self.app.protege  # type: ignore[attr-defined]

    @property
    def store(self) -> Store:
        return self.protege.store

    @property
    def reviewer(self) -> str:
        return self.app.reviewer  # type: ignore[attr-defined]

    async def read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (possibly slow) store query in a thread so the UI keeps responding."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def act(self, fn: Callable[..., T], *args: Any, done: str = "", **kwargs: Any) -> T | bool | None:
        """Run a write; tell the reviewer it worked (`done`) or why it did not.

        Returns what `fn` returned (True if that was None), or None when it failed.
        """
        try:
            result = fn(*args, **kwargs)
        except (ProtegeError, SQLAlchemyError) as exc:
            self.notify(str(exc), title="Not done", severity="error", timeout=8)
            return None
        if done:
            self.notify(done, timeout=4)
        return True if result is None else result

    def fail(self, exc: BaseException) -> None:
        """A read failed: say so rather than crash the console."""
        self.notify(f"{type(exc).__name__}: {exc}", title="Could not load", severity="error", timeout=8)
