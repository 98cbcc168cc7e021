"""What every console screen shares: the Protege app, the store, the reviewer's name, and safe reads/writes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from textual.screen import Screen
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey

from protege.errors import ProtegeError

if TYPE_CHECKING:
    from protege.app import Protege
    from protege.store import Store

T = TypeVar("T")
ScreenResult = TypeVar("ScreenResult")
NAME_MAX = 40  # a name column grows no wider than this
SCROLLBAR = 2


def fit_names(table: DataTable, key: str, names: Iterable[str], least: int) -> int:
    """Widen the name column `key` to the longest of `names` (at least `least`) within what the table's other
    columns leave of its width: a fixed width clipped `extract_order` on any terminal. Returns the width."""
    others = sum(c.get_render_width(table) for k, c in table.columns.items() if k.value != key)
    room = table.size.width - others - 2 * table.cell_padding - SCROLLBAR
    column = table.columns[ColumnKey(key)]
    column.width = max(least, min(max((len(n) for n in names), default=0), room, NAME_MAX))
    return column.width


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
