"""The sandbox worker: started by `protege.sandbox.Sandbox` as `python -I worker.py`, it confines itself (rlimits,
Landlock, seccomp, the import guard), says it is ready, then runs one program call per request frame on stdin
and answers one frame each on its original stdout.

Run by path, not as `protege.sandbox...`: importing the app's package would cost a pydantic import per worker.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import sys
import time
from types import CodeType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import confine  # the sibling modules, found through the line above
import guard as guarding
from protocol import HEADER, ProtocolError, read_frame, write_frame
from watch import StateWatch

MAX_REQUEST = 64 * 1024 * 1024
MAX_ERROR_CHARS = 2000
PROGRAM_CACHE = 32


class CallTimeout(BaseException):
    """Raised in the program by SIGALRM; a BaseException so `except Exception` in a program cannot swallow it."""


def main() -> int:
    fd_in, fd_out = 0, os.dup(1)
    init = read_frame(fd_in, max_bytes=MAX_REQUEST)
    sys.path.extend(p for p in init.get("sys_path", []) if p and p not in sys.path)
    try:
        guard, report = setup(init, fd_in, fd_out)
    except Exception as exc:  # tell the app why, then stop: it refuses to serve from an unconfined worker
        write_frame(fd_out, {"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    write_frame(fd_out, {"ready": True, "isolation": report, "pid": os.getpid()})
    serve(init, guard, StateWatch(init["allowed_imports"], guard.shared() if guard else ()), fd_in, fd_out)
    return 0


def setup(init: dict, fd_in: int, fd_out: int) -> tuple[guarding.Guard | None, dict]:
    """Preload what programs may import, then apply the layers; strict mode fails on a missing kernel layer."""
    scratch, strict, limits = init["scratch"], init["strict"], init["limits"]
    preloaded = guarding.Guard(frozenset(init["allowed_imports"]))
    preloaded.preload()  # warm either way: the files are unreadable later
    guard = preloaded if init["guard"] else None
    for module in ("landlockpy", "pyseccomp"):  # import before Landlock hides site-packages
        try:
            __import__(module)
        except Exception:  # reported by apply_* below
            pass
    os.chdir(scratch)
    confine.isolate_fds(fd_in, fd_out)
    report: dict = {"guard": guard is not None, "missing": []}
    report["rlimits"] = confine.apply_rlimits(limits)
    report["capabilities_dropped"] = confine.drop_capabilities()  # after the limits: without them, no raising
    for layer, apply in (("landlock", lambda: confine.apply_landlock(scratch)), ("seccomp", confine.apply_seccomp)):
        try:
            confine.ensure_linux()
            report[layer] = apply()
        except confine.ConfineError as exc:
            if strict:
                raise
            report[layer] = None
            report["missing"].append(f"{layer}: {exc}")
    return guard, report


def serve(init: dict, guard: guarding.Guard | None, watch: StateWatch, fd_in: int, fd_out: int) -> None:
    programs: dict[str, CodeType] = {}
    signal.signal(signal.SIGALRM, _on_alarm)
    while True:
        try:
            request = read_frame(fd_in, max_bytes=MAX_REQUEST)
        except ProtocolError:
            return  # the app closed the pipe: shut down
        watch.reset()
        reply = call(request, guard, programs, init["limits"]["max_output_bytes"])
        changed = watch.changed()
        if changed is not None:  # its answer is not trusted, nor this worker's json: a plain frame, then exit
            _refuse_tainted(fd_out, str(request.get("nonce")), changed)
            return
        usage = resource.getrusage(resource.RUSAGE_SELF)
        reply["cpu_s"] = usage.ru_utime + usage.ru_stime
        reply["nonce"] = request.get("nonce")
        _clean(init["scratch"])
        write_frame(fd_out, reply)


def call(request: dict, guard: guarding.Guard | None, programs: dict[str, CodeType], max_output: int) -> dict:
    """Run `entry(**kwargs)` of the program under a wall-clock alarm; every outcome is a reply, never a raise."""
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, max(float(request["timeout_s"]), 0.001))
    try:
        reply = _run(request, guard, programs, max_output)
    except CallTimeout:
        reply = _fail("timeout", f"the program ran past its {request['timeout_s']:g} s limit")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    reply["elapsed_s"] = time.perf_counter() - start
    return reply


def _run(request: dict, guard: guarding.Guard | None, programs: dict[str, CodeType], max_output: int) -> dict:
    try:
        code = _compiled(request["source"], guard, programs)
        namespace = guard.globals() if guard else {"__name__": "program"}
        exec(code, namespace)  # the point of the sandbox
        entry = namespace.get(request["entry"])
        if not callable(entry):
            return _fail("invalid_program", f"the program defines no function {request['entry']!r}")
        value = entry(**request["kwargs"])
    except CallTimeout:
        raise
    except guarding.GuardError as exc:
        return _fail("invalid_program", f"refused by the import guard: {exc}")
    except SyntaxError as exc:
        return _fail("invalid_program", f"SyntaxError: {exc}")
    except MemoryError:
        return _fail("memory", "the program ran out of its memory limit")
    except BaseException as exc:  # SystemExit and friends are a failed call, not a dead worker
        return _fail("exception", _describe(exc))
    return _encoded(value, max_output)


def _encoded(value: object, max_output: int) -> dict:
    try:
        size = len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode())
    except MemoryError:
        return _fail("memory", "the program's answer ran out of its memory limit")
    except (TypeError, ValueError, RecursionError) as exc:
        return _fail("not_json", f"the program's answer is not JSON: {_describe(exc)}")
    if size > max_output:
        return _fail("output", f"the answer is {size:,} bytes, over the {max_output:,}-byte limit")
    # plain JSON data from here on: no method of the program's objects runs after the state check
    return {"ok": True, "value": json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))}


def _compiled(source: str, guard: guarding.Guard | None, programs: dict[str, CodeType]) -> CodeType:
    code = programs.get(source)
    if code is None:
        tree = guarding.check_source(source, guard.allowed) if guard else source
        code = compile(tree, "<program>", "exec", dont_inherit=True)  # not this module's `annotations` future
        if len(programs) >= PROGRAM_CACHE:
            programs.pop(next(iter(programs)))
        programs[source] = code
    return code


def _refuse_tainted(fd_out: int, nonce: str, changed: str) -> None:
    """The reply to a call that changed shared state, written without the json module it may have patched."""
    error = f"the program changed {changed}, which later calls share; the call is refused and its worker replaced"
    fields = {"ok": "false", "kind": '"tainted"', "retire": "true", "error": _quoted(error), "nonce": _quoted(nonce)}
    data = ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()
    os.write(fd_out, HEADER.pack(len(data)) + data)


def _quoted(text: str) -> str:
    """A JSON string of printable ASCII (anything else, and quotes and backslashes, become '?')."""
    return '"' + "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text[:MAX_ERROR_CHARS]) + '"'


def _fail(kind: str, error: str) -> dict:
    return {"ok": False, "kind": kind, "error": error[:MAX_ERROR_CHARS]}


def _describe(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
    except CallTimeout:
        raise
    except BaseException:  # a hostile __str__
        return type(exc).__name__


def _on_alarm(signum, frame):
    raise CallTimeout()


def _clean(scratch: str) -> None:
    """Scratch is per call: what a program left there is gone before the next one runs."""
    try:
        entries = os.listdir(scratch)
    except OSError:
        return
    for name in entries:
        path = os.path.join(scratch, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main())
