"""`Sandbox`: runs untrusted Python functions in warm, confined worker processes.

A worker is started once (an interpreter start, ~0.1 s) and then serves calls over a pipe (a call costs well
under a millisecond plus the program's own time). Every failure — an exception, a timeout, a memory or output
limit, a crash or kill of the worker — comes back as a failed `SandboxResult`; a worker that died or had to be
killed is replaced before `run` returns, so the next call is served. Thread-safe: calls take a free worker from
the pool (size `workers`) and wait for one when all are busy.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protege.errors import UserError
from protege.sandbox.child.protocol import ProtocolError, read_frame, write_frame
from protege.sandbox.limits import ALLOWED_IMPORTS, SandboxLimits

WORKER = Path(__file__).with_name("child") / "worker.py"
FRAME_SLACK = 64 * 1024  # bytes of a reply frame beyond the answer itself (error text, timings)


class SandboxUnavailable(UserError):
    """A worker could not be started or confined here; the message says what is missing."""


@dataclass(frozen=True)
class SandboxResult:
    """One call's outcome. `kind` names a failure: exception, timeout, memory, output, not_json, invalid_program,
    tainted (the program changed state later calls share), crash (the worker died); `restarted` says the worker
    was replaced after it. `elapsed_s` includes the hop."""

    ok: bool
    value: Any = None
    error: str | None = None
    elapsed_s: float = 0.0
    kind: str | None = None
    restarted: bool = False


class Sandbox:
    """Confined workers for programs: `Sandbox().run(source, "solve", {"x": 1}, timeout_s=1.0)`.

    guard=False drops the Python import guard (the kernel layers stay): for trusted code that needs more of the
    standard library, and for tests that prove the kernel layers hold alone. strict=False serves even where
    Landlock or seccomp is unavailable (rlimits and the guard only) instead of refusing to start.
    """

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        workers: int = 1,
        guard: bool = True,
        strict: bool = True,
        allowed_imports: frozenset[str] | set[str] | None = None,
        start_timeout_s: float = 60.0,
        kill_grace_s: float = 1.0,
    ):
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise UserError(f"Sandbox(workers={workers!r}) needs an int >= 1")
        if not isinstance(limits, SandboxLimits | None):
            raise UserError(f"Sandbox(limits={limits!r}) needs a SandboxLimits")
        self.limits = limits or SandboxLimits()
        self.guard = guard
        self.strict = strict
        self.allowed_imports = frozenset(ALLOWED_IMPORTS if allowed_imports is None else allowed_imports)
        self.start_timeout_s = start_timeout_s
        self.kill_grace_s = kill_grace_s
        self.restarts = 0
        self.isolation: dict[str, Any] = {}
        self._root = tempfile.mkdtemp(prefix="protege-sandbox-")
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all = [_Worker(self, n) for n in range(workers)]
        for worker in self._all:
            self._idle.put(worker)
        self._closed = False
        self._lock = threading.Lock()

    # -- public ----------------------------------------------------------------------------------------------

    def start(self) -> Sandbox:
        """Start every worker now (otherwise each starts on its first call); raises SandboxUnavailable."""
        for worker in self._all:
            with worker.lock:
                worker.ensure()
        return self

    def run(
        self, source: str, entry: str = "solve", kwargs: dict[str, Any] | None = None, timeout_s: float = 1.0
    ) -> SandboxResult:
        """Call `entry(**kwargs)` of the program `source` in a worker, within `timeout_s` seconds."""
        request = _request(source, entry, kwargs, timeout_s)
        worker = self._take()
        try:
            with worker.lock:
                return worker.call(request, timeout_s)
        finally:
            self._idle.put(worker)

    async def arun(
        self, source: str, entry: str = "solve", kwargs: dict[str, Any] | None = None, timeout_s: float = 1.0
    ) -> SandboxResult:
        """`run` off the event loop."""
        return await asyncio.to_thread(self.run, source, entry, kwargs, timeout_s)

    def close(self) -> None:
        """Stop every worker and remove their scratch folders; later calls raise UserError."""
        with self._lock:
            self._closed = True
        for worker in self._all:
            with worker.lock:  # waits for a call in flight (bounded by its timeout and the kill grace)
                worker.stop()
        shutil.rmtree(self._root, ignore_errors=True)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pids(self) -> list[int]:
        """Process ids of the running workers (for operators and tests)."""
        return [w.proc.pid for w in self._all if w.proc is not None and w.proc.poll() is None]

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _take(self) -> _Worker:
        if self._closed:
            raise UserError("this Sandbox is closed; make a new Sandbox() to run programs")
        return self._idle.get()


class _Worker:
    """One worker process slot: starts, calls, and replaces its process."""

    def __init__(self, sandbox: Sandbox, index: int):
        self.sandbox = sandbox
        self.index = index
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.scratch: str | None = None

    def ensure(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self._start()

    def call(self, request: dict, timeout_s: float) -> SandboxResult:
        if self.sandbox.closed:
            raise UserError("this Sandbox is closed; make a new Sandbox() to run programs")
        self.ensure()
        start = time.perf_counter()
        reply, failure = self._exchange(request, time.monotonic() + timeout_s + self.sandbox.kill_grace_s)
        elapsed = time.perf_counter() - start
        if failure is not None:
            kind, error = failure
            return SandboxResult(False, error=error, elapsed_s=elapsed, kind=kind, restarted=self._replace())
        restarted = False
        if reply.get("retire") or float(reply.get("cpu_s", 0)) > self.sandbox.limits.worker_cpu_s / 2:
            # a program changed what later calls share, or RLIMIT_CPU would soon kill the worker mid-call
            restarted = self._replace()
        if reply.get("ok"):
            return SandboxResult(True, value=reply.get("value"), elapsed_s=elapsed, restarted=restarted)
        return SandboxResult(
            False, error=str(reply.get("error")), elapsed_s=elapsed, kind=str(reply.get("kind")), restarted=restarted
        )

    def _exchange(self, request: dict, deadline: float) -> tuple[dict, tuple[str, str] | None]:
        """Send a request and read the reply; a failure the worker could not report itself is (kind, error)."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        max_bytes = self.sandbox.limits.max_output_bytes * 2 + FRAME_SLACK  # JSON escaping may double it
        request = {**request, "nonce": secrets.token_hex(8)}
        try:
            write_frame(self.proc.stdin.fileno(), request)
            reply = read_frame(self.proc.stdout.fileno(), max_bytes=max_bytes, deadline=deadline)
        except TimeoutError:
            return {}, (
                "timeout",
                f"the program ran past its {request['timeout_s']:g} s limit and did not stop; its worker was killed",
            )
        except (ProtocolError, OSError) as exc:
            return {}, self._death(exc)
        if reply.get("nonce") != request["nonce"]:  # a reply the program forged, or a stale one behind it
            return {}, ("crash", "the worker answered out of turn (a forged or stale reply); it was replaced")
        return reply, None

    def _death(self, exc: Exception) -> tuple[str, str]:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=self.sandbox.kill_grace_s)
        except subprocess.TimeoutExpired:
            return "crash", f"the worker broke the protocol ({exc}); it was killed"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            why = {"SIGXCPU": " (its CPU limit)", "SIGSEGV": " (a crash in native code)", "SIGSYS": " (seccomp)"}
            return "crash", f"the worker died of {name}{why.get(name, '')} during the call"
        return "crash", f"the worker exited with status {code} during the call"

    def _replace(self) -> bool:
        """Kill this slot's process and start a fresh one (unless the sandbox is closing). A failed start leaves the
        slot empty: this call still returns its result, and the next call tries again (and says why it can't)."""
        self.stop()
        if self.sandbox.closed:
            return False
        try:
            self._start()
        except SandboxUnavailable:
            return False
        with self.sandbox._lock:
            self.sandbox.restarts += 1
        return True

    def _start(self) -> None:
        sandbox = self.sandbox
        self.scratch = tempfile.mkdtemp(prefix=f"w{self.index}-", dir=sandbox._root)
        self.proc = proc = subprocess.Popen(
            [sys.executable, "-I", "-B", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.scratch,
            env=_clean_env(self.scratch),
            close_fds=True,
            start_new_session=True,  # the app's terminal signals and process-group kills don't reach it
        )
        assert proc.stdin is not None and proc.stdout is not None  # both piped above
        init = {
            "scratch": self.scratch,
            "strict": sandbox.strict,
            "guard": sandbox.guard,
            "allowed_imports": sorted(sandbox.allowed_imports),
            "limits": sandbox.limits.as_dict(),
            "sys_path": [p for p in sys.path if p and os.path.isdir(p)],
        }
        try:
            write_frame(proc.stdin.fileno(), init)
            ready = read_frame(
                proc.stdout.fileno(), max_bytes=FRAME_SLACK, deadline=time.monotonic() + sandbox.start_timeout_s
            )
        except (TimeoutError, ProtocolError, OSError) as exc:
            self.stop()
            raise SandboxUnavailable(
                f"the sandbox worker did not start ({exc}); check that {sys.executable!r} "
                "runs and that the machine is not out of memory"
            ) from exc
        if not ready.get("ready"):
            self.stop()
            raise SandboxUnavailable(
                f"the sandbox worker could not confine itself: {ready.get('error')}; fix that, or pass "
                "Sandbox(strict=False) to run with resource limits and the import guard only"
            )
        sandbox.isolation = ready.get("isolation") or {}

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def _request(source: Any, entry: Any, kwargs: Any, timeout_s: Any) -> dict:
    """Check a call before it costs anything: bad arguments are the caller's mistake, not the program's."""
    if not isinstance(source, str) or not source.strip():
        raise UserError(f"Sandbox.run needs the program's source as a non-empty str, got {source!r:.80}")
    if not isinstance(entry, str) or not entry.isidentifier():
        raise UserError(f"Sandbox.run entry={entry!r} is not a function name; pass e.g. 'solve'")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise UserError(f"Sandbox.run kwargs={kwargs!r:.80} must be a dict with str keys")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not 0 < timeout_s <= 3600:
        raise UserError(f"Sandbox.run timeout_s={timeout_s!r} must be a number of seconds in (0, 3600]")
    request = {"source": source, "entry": entry, "kwargs": kwargs, "timeout_s": float(timeout_s)}
    try:
        json.dumps(kwargs, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"Sandbox.run kwargs must be JSON data (dicts, lists, str, numbers): {exc}") from exc
    return request


def _clean_env(scratch: str) -> dict[str, str]:
    """No secrets: the worker sees none of the app's environment (API keys, database URLs, tokens)."""
    return {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch}
