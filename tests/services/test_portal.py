"""The portal's loop outlives the code it runs: a SystemExit or KeyboardInterrupt raised on it (a task's model or
tool), or a loop.stop() of its own, ended its thread silently and every caller's future stayed pending forever."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from protege.errors import RunError
from protege.services.portal import Portal


def in_thread(fn: Any, timeout_s: float = 10.0) -> Any:
    """fn() on a daemon thread, waited for at most `timeout_s`: a hung call fails the test instead of hanging it."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), "the call never returned: the portal's loop is gone"
    if "error" in out:
        raise out["error"]
    return out["value"]


async def answer(value: str, delay_s: float = 0.0) -> str:
    await asyncio.sleep(delay_s)
    return value


@pytest.mark.parametrize("raised", [SystemExit(2), KeyboardInterrupt()])
def test_a_call_whose_code_raises_systemexit_gets_a_run_error_and_the_others_go_on(raised):
    portal = Portal()

    async def exits() -> str:
        async def inner() -> str:  # in a task of its own, as a tool in the agent loop's gather
            await asyncio.sleep(0.05)
            raise raised

        return (await asyncio.gather(inner()))[0]

    slow = asyncio.run_coroutine_threadsafe(answer("beside", 0.3), portal.loop)
    with pytest.raises(RunError, match=type(raised).__name__) as caught:
        in_thread(lambda: portal.call(exits()))
    assert isinstance(caught.value.__cause__, type(raised))
    assert slow.result(timeout=10) == "beside"  # the call running beside it finished
    assert in_thread(lambda: portal.call(answer("next"))) == "next"
    portal.close()


def test_a_loop_stop_by_code_on_it_does_not_end_the_portal():
    portal = Portal()

    async def stops() -> str:
        asyncio.get_running_loop().stop()
        await asyncio.sleep(0.05)
        return "done"

    assert in_thread(lambda: portal.call(stops())) == "done"
    assert in_thread(lambda: portal.call(answer("next"))) == "next"
    portal.close()
    assert portal._thread is None  # close() still ends it
