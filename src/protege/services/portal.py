"""One background event loop per app, so sync calls from any thread and async calls from any loop share the
same async SDK clients (which are bound to the loop they were first used on)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from protege.errors import UserError
from protege.telemetry.spans import carry_context

T = TypeVar("T")


class Portal:
    """A daemon thread running an event loop; `call` (sync) and `acall` (async) run coroutines on it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            with self._lock:
                if self._loop is None:
                    self._start()
        assert self._loop is not None
        return self._loop

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="protege-portal", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

    def _on_portal(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the portal loop and wait for it (from any thread but the portal's own)."""
        if self._on_portal():
            coro.close()
            raise UserError(  # misuse: a tier's model calling a task synchronously must not read as its failure
                "sync protege calls cannot be made from inside the portal loop; use `await task.acall()`"
            )
        return asyncio.run_coroutine_threadsafe(carry_context(coro), self.loop).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine run on the portal loop, from any event loop."""
        if self._on_portal():
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(carry_context(coro), self.loop))

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not loop.is_running():
            loop.close()
        self._loop = self._thread = None
