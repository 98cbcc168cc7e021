"""One background event loop per app, so sync calls from any thread and async calls from any loop share the
same async SDK clients (which are bound to the loop they were first used on).

A caller's call (`call`, `acall`) runs as a task on that loop and is counted in `calls`, so closing can wait for it
(`drain`) and, past the wait, stop it (`stop_calls`) with an error the caller sees — never leave its future pending
under a stopped loop. The app's own work on the loop (draining, stopping) goes through `run`, which is not counted.
The loop outlives code on it that raises SystemExit or KeyboardInterrupt, or stops it (`_serve`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from protege.errors import RunError, UserError
from protege.telemetry.spans import carry_context

T = TypeVar("T")
log = logging.getLogger("protege")
STOP_WAIT_S = 5.0  # how long stopping waits for cancelled tasks (and worker threads) to unwind
CLOSED = "the protege portal closed while this call was running; call it again once the app is open"


class Portal:
    """A daemon thread running an event loop; `call` (sync) and `acall` (async) run coroutines on it."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.calls: set[asyncio.Task] = set()  # callers' calls running on the loop now
        self._stopped: str | None = None  # set by stop_calls: why calls are refused (read on the loop thread only)
        self._closing = threading.Event()  # set by close() as it stops the loop: the one stop that ends its thread

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
        closing = self._closing = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            _serve(loop, closing)

        self._thread = threading.Thread(target=run, name="protege-portal", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop

    def _on_portal(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _submit(self, coro: Coroutine[Any, Any, T], *, counted: bool) -> concurrent.futures.Future[T]:
        wrapped = carry_context(self._counted(coro) if counted else coro)
        try:
            return asyncio.run_coroutine_threadsafe(wrapped, self.loop)
        except RuntimeError:  # the loop closed between our reading it and scheduling on it
            wrapped.close()
            raise RunError(CLOSED) from None

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a caller's coroutine on the portal loop and wait for it (from any thread but the portal's own)."""
        if self._on_portal():
            coro.close()
            raise UserError(  # misuse: a tier's model calling a task synchronously must not read as its failure
                "sync protege calls cannot be made from inside the portal loop; use `await task.acall()`"
            )
        return self._submit(coro, counted=True).result()

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a caller's coroutine run on the portal loop, from any event loop."""
        if self._on_portal():
            return await coro  # nested in a call or background work that is already counted or drained
        return await asyncio.wrap_future(self._submit(coro, counted=True))

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run the app's own coroutine (draining, stopping) on the loop and wait up to `timeout_s` for it; not a
        caller's call, so `drain` does not wait for it nor `stop_calls` stop it."""
        if self._on_portal():  # waiting here for the loop would block the loop itself
            coro.close()
            raise UserError(
                "the app cannot be closed or waited on from inside its own loop (a task's model or tool); do it "
                "from the code that makes the calls"
            )
        return self._submit(coro, counted=False).result(timeout_s)

    async def _counted(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._stopped is not None:
            coro.close()
            raise RunError(self._stopped)
        me = asyncio.current_task()
        assert me is not None
        self.calls.add(me)
        try:
            return await coro
        except asyncio.CancelledError:
            if self._stopped is None:
                raise  # the caller cancelled it: theirs to see as such
            raise RunError(self._stopped) from None
        except (SystemExit, KeyboardInterrupt) as exc:  # from a task's model or tool: the call's end, not the app's
            raise RunError(
                f"the call ended with {type(exc).__name__}({exc}), raised by code it ran (a task's model or tool); "
                f"other calls go on — catch it in that code to answer instead"
            ) from exc
        finally:
            self.calls.discard(me)

    # -- closing (coroutines: run them on the loop with `run`) ----------------------------------------------------

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no caller's call is running, or `timeout_s` passes; True if none is left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending := self._running():
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.wait(pending, timeout=left)
        return True

    async def stop_calls(self, why: str) -> int:
        """Refuse new calls and stop those running: each caller gets RunError(why). Returns how many were stopped."""
        self._stopped = why
        pending = self._running()
        await _cancelled(pending)
        return len(pending)

    def _running(self) -> list[asyncio.Task]:
        return [t for t in self.calls if not t.done()]

    async def _wind_down(self) -> None:
        """Stop what still runs, then wait for worker threads (a store write in flight) before the loop stops."""
        await self.stop_calls(self._stopped or CLOSED)
        me = asyncio.current_task()
        await _cancelled([t for t in asyncio.all_tasks() if t is not me])
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        try:
            await asyncio.wait_for(loop.shutdown_default_executor(), STOP_WAIT_S)
        except TimeoutError:
            log.warning("protege: a worker thread was still running when the app closed; it was left to finish")

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running() and not self._on_portal():  # from the loop itself nothing can be waited for
            try:
                self.run(self._wind_down(), timeout_s=4 * STOP_WAIT_S)
            except concurrent.futures.TimeoutError:
                log.warning("protege: the portal loop did not stop in time (something blocks it); closing anyway")
        self._closing.set()
        loop.call_soon_threadsafe(loop.stop)
        if not self._on_portal():
            thread.join(timeout=STOP_WAIT_S)
        if not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        self.calls, self._stopped = set(), None


async def _cancelled(tasks: list[asyncio.Task]) -> None:
    """Cancel the tasks and wait (a bounded while) for them to unwind."""
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_WAIT_S)


def _serve(loop: asyncio.AbstractEventLoop, closing: threading.Event) -> None:
    """Run the portal loop until close() stops it. Code on it that raises SystemExit or KeyboardInterrupt (a tool's
    sys.exit, a model's) ends run_forever mid-step, and so does a loop.stop() of its own; the loop goes on, so the
    task that raised ends with it, its caller gets a RunError (Portal._counted), and the calls beside it finish.
    Ended instead, the thread died silently and every caller's future stayed pending forever."""
    seen: BaseException | None = None
    while True:
        try:
            loop.run_forever()
        except BaseException as exc:
            if exc is not seen:  # it rises once for each task that awaits it: said once
                log.error("protege: %r was raised on the portal loop by code a call ran; the loop goes on", exc)
            seen = exc
        else:
            if not closing.is_set():
                log.warning("protege: code a call ran stopped the portal loop (loop.stop()); the loop goes on")
        if closing.is_set() or loop.is_closed():  # close() stopped it (also where an exception cut its stop short)
            return
