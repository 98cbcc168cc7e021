"""close() with calls in flight (a service stopped by SIGTERM): it waits for them up to the drain timeout, so what the
teacher answered is recorded; past it each caller gets a RunError (never a future left pending under a stopped
loop) and its budget reservation is released; calls made while it runs are refused with a UserError."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time

import pytest
from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage
from protege.errors import RunError, UserError

OPUS = "anthropic:claude-opus-4-5"


class Out(BaseModel):
    label: str


def make_app(tmp_path, *, delay_s: float = 0.0, gate: threading.Event | None = None, budget: float | None = None):
    """An app whose teacher answers after `delay_s`, and not before `gate` is set (if given)."""
    started = threading.Semaphore(0)  # released once per teacher request, so a test knows calls are in flight

    async def teacher(req):
        started.release()
        await asyncio.sleep(delay_s)
        while gate is not None and not gate.is_set():
            await asyncio.sleep(0.01)
        return ModelResponse(text=json.dumps({"label": "X"}), usage=Usage(input_tokens=100, output_tokens=20))

    app = Protege(
        db=f"sqlite:///{tmp_path / 'p.db'}",
        teacher=FunctionModel(teacher, price_as=OPUS),
        project_dir=tmp_path / ".p",
    )

    @app.task(policy=Policy(teacher_budget_usd=budget, program=False, prior_art=False))
    def label(text: str) -> Out:
        """Label the text."""

    return app, label, started


def in_flight(started: threading.Semaphore, n: int) -> None:
    for _ in range(n):
        assert started.acquire(timeout=20), "the calls never reached the teacher"


def teacher_traces(app: Protege) -> int:
    return app.store.count_traces("label", tier="teacher")


def test_close_waits_for_sync_calls_in_flight_from_threads(tmp_path):
    app, label, started = make_app(tmp_path, delay_s=0.5)
    results: list = []
    threads = [threading.Thread(target=lambda i=i: results.append(label(f"t{i}")), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    in_flight(started, 8)
    app.close(timeout_s=30)
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a caller's call never returned"
    assert [r.label for r in results] == ["X"] * 8
    with Protege(db=app.store.url, teacher=FunctionModel(lambda r: "{}"), project_dir=tmp_path / ".p") as again:
        assert again.store.count_traces("label", tier="teacher") == 8  # every answer paid for is recorded


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_close_in_a_signal_handler_lets_the_callers_async_calls_finish(tmp_path):
    """The README's pattern in a service: SIGTERM's handler calls close() on the main thread, where the callers'
    event loop runs. close() waits there (the calls run on the app's own loop), then every caller gets its result."""
    app, _, started = make_app(tmp_path, delay_s=0.5)
    closed = threading.Event()

    def on_signal(*_: object) -> None:
        app.close(timeout_s=30)
        closed.set()

    async def main() -> list:
        calls = [app.arun("label", {"text": f"a{i}"}) for i in range(20)]
        gathered = asyncio.gather(*calls, return_exceptions=True)
        await asyncio.to_thread(in_flight, started, 20)
        os.kill(os.getpid(), signal.SIGUSR1)
        return await asyncio.wait_for(gathered, 20)

    before = signal.signal(signal.SIGUSR1, on_signal)
    try:
        results = asyncio.run(main())
    finally:
        signal.signal(signal.SIGUSR1, before)
    assert closed.is_set()
    assert [type(r).__name__ for r in results] == ["RunResult"] * 20
    assert app.store.count_traces("label", tier="teacher") == 20  # the store opens again to read


def test_calls_past_the_drain_timeout_get_a_run_error_and_release_their_budget(tmp_path, caplog, capfd):
    """Calls still running when the drain timeout passes are stopped: sync and async callers alike get a RunError
    saying the app closed, their budget reservations are released, and no "Event loop is closed" follows."""
    gate = threading.Event()  # never set: the teacher does not answer in time
    app, _, started = make_app(tmp_path, gate=gate, budget=100.0)
    sync_out: list = []
    sync = threading.Thread(target=lambda: sync_out.append(_outcome(app.run, "label", {"text": "s"})), daemon=True)
    sync.start()

    async def main() -> list:
        calls = asyncio.gather(*(app.arun("label", {"text": f"a{i}"}) for i in range(3)), return_exceptions=True)
        await asyncio.to_thread(in_flight, started, 4)
        assert app.store.spent("label") > 0  # reserved while they run
        with caplog.at_level(logging.WARNING, logger="protege"):
            await asyncio.to_thread(app.close, 0.3)
        return await asyncio.wait_for(calls, 10)

    results = asyncio.run(main())
    sync.join(timeout=10)
    assert not sync.is_alive(), "the sync caller's call never returned"
    for err in [*results, *sync_out]:
        assert isinstance(err, RunError) and "the app closed while this call was running" in str(err), err
    assert "4 call(s) still running after 0.3 s at exit were stopped" in caplog.text
    with Protege(db=app.store.url, teacher=FunctionModel(lambda r: "{}"), project_dir=tmp_path / ".p") as again:
        assert again.store.spent("label") == pytest.approx(
            0, abs=1e-9
        )  # nothing was answered, so nothing stays reserved
    assert "Event loop is closed" not in capfd.readouterr().err + caplog.text


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        return exc


def test_a_call_while_close_runs_is_refused_with_a_user_error(tmp_path):
    gate = threading.Event()
    app, label, started = make_app(tmp_path, gate=gate)
    first = threading.Thread(target=lambda: label("first"), daemon=True)
    first.start()
    in_flight(started, 1)
    closer = threading.Thread(target=app.close, args=(30,), daemon=True)
    closer.start()
    deadline = time.monotonic() + 10
    while not app._closing and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(UserError, match=r"task 'label' was called while the app is closing"):
        label("late")
    with pytest.raises(UserError, match="while the app is closing"):
        asyncio.run(app.arun("label", {"text": "late"}))
    gate.set()
    closer.join(timeout=10)
    first.join(timeout=10)
    assert not closer.is_alive() and not first.is_alive()
    assert label("after").label == "X"  # once close() returned, a call opens the app again
    app.close()


def test_aclose_keeps_the_callers_loop_running_while_calls_finish(tmp_path):
    """`await app.aclose()` drains in a worker thread: the caller's loop keeps serving (a tick counter advances)
    and hands each finished call its result before aclose returns."""
    app, _, started = make_app(tmp_path, delay_s=0.5)

    async def main() -> tuple[list, int]:
        calls = asyncio.gather(*(app.arun("label", {"text": f"a{i}"}) for i in range(5)))
        await asyncio.to_thread(in_flight, started, 5)
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.ensure_future(tick())
        await app.aclose(timeout_s=30)
        ticker.cancel()
        assert calls.done()
        return await calls, ticks

    results, ticks = asyncio.run(main())
    assert [r.output.label for r in results] == ["X"] * 5 and ticks > 10
