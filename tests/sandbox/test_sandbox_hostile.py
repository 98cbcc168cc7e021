"""Hostile programs: each is contained (the harm does not happen), comes back as a failed call naming what
happened, and the sandbox serves the next call — restarting the worker when the program broke it.

Most run on the `bare` sandbox (no import guard), so what stops them is the kernel: seccomp, Landlock, rlimits.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import stat
import threading

import pytest

from protege.sandbox import Sandbox, SandboxLimits


def test_infinite_loop_times_out_and_the_worker_stays(guarded: Sandbox, serves) -> None:
    before = guarded.restarts
    result = guarded.run("def solve():\n    while True:\n        pass\n", timeout_s=0.3)
    assert (result.ok, result.kind) == (False, "timeout")
    assert "0.3 s" in result.error
    assert not result.restarted and guarded.restarts == before  # the alarm stopped it: no restart needed
    assert serves(guarded)


def test_loop_that_swallows_the_alarm_is_killed_and_replaced(guarded: Sandbox, serves) -> None:
    source = (
        "def solve():\n"
        "    while True:\n"
        "        try:\n"
        "            while True:\n"
        "                pass\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    result = guarded.run(source, timeout_s=0.2)
    assert (result.ok, result.kind, result.restarted) == (False, "timeout", True)
    assert "killed" in result.error
    assert serves(guarded)


def test_fork_bomb_cannot_fork(bare: Sandbox, serves) -> None:
    result = bare.run("import os\n\ndef solve():\n    while True:\n        os.fork()\n", timeout_s=2)
    assert (result.ok, result.kind) == (False, "exception")
    assert "PermissionError" in result.error  # seccomp: clone without CLONE_THREAD is EPERM
    assert serves(bare)


def test_subprocess_and_os_system_run_nothing(bare: Sandbox, serves, tmp_path) -> None:
    marker = tmp_path / "ran"
    system = bare.run(f"import os\n\ndef solve():\n    return os.system('touch {marker}')\n", timeout_s=2)
    assert system.ok and system.value != 0  # system() could not start a shell
    spawned = bare.run(f"import subprocess\n\ndef solve():\n    subprocess.run(['touch', '{marker}'])\n", timeout_s=2)
    assert (spawned.ok, spawned.kind) == (False, "exception") and "PermissionError" in spawned.error
    assert not marker.exists()
    assert serves(bare)


@pytest.mark.parametrize(
    "source",
    [
        "def solve():\n    return bytearray(10 ** 10)\n",
        "def solve():\n    hoard = []\n    while True:\n        hoard.append('x' * 10 ** 6)\n",
    ],
    ids=["one-huge-block", "growing-list"],
)
def test_memory_bomb_hits_the_memory_limit(guarded: Sandbox, serves, source: str) -> None:
    result = guarded.run(source, timeout_s=10)
    assert (result.ok, result.kind) == (False, "memory")
    assert serves(guarded)


def test_reading_ssh_keys_or_the_store_is_denied(bare: Sandbox, serves, tmp_path) -> None:
    key = tmp_path / "home" / ".ssh" / "id_ed25519"
    key.parent.mkdir(parents=True)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n")
    db = tmp_path / ".protege" / "protege.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as conn:
        conn.execute("create table trace (output text)")
        conn.execute("insert into trace values ('paid teacher answer')")
    for path in (key, db, key.parent):
        reader = "os.listdir" if path.is_dir() else "lambda p: open(p, 'rb').read()"
        result = bare.run(
            f"import os\n\ndef solve(path):\n    return str(({reader})(path))\n",
            "solve",
            {"path": str(path)},
            timeout_s=2,
        )
        assert (result.ok, result.kind) == (False, "exception"), path
        assert "PermissionError" in result.error
    home = bare.run("import os\n\ndef solve():\n    return os.listdir(os.path.expanduser('~/..'))\n", timeout_s=2)
    assert not home.ok and "PermissionError" in home.error
    assert serves(bare)


def test_writing_outside_scratch_is_denied_and_scratch_is_per_call(bare: Sandbox, serves, tmp_path) -> None:
    target = tmp_path / "planted.txt"
    outside = bare.run(f"def solve():\n    open('{target}', 'w').write('x')\n", timeout_s=2)
    assert (outside.ok, outside.kind) == (False, "exception") and "PermissionError" in outside.error
    assert not target.exists()
    wrote = bare.run("def solve():\n    open('note.txt', 'w').write('x')\n    return 'ok'\n", timeout_s=2)
    assert wrote.ok  # its own scratch folder (the working directory) is writable ...
    later = bare.run("import os\n\ndef solve():\n    return os.listdir('.')\n", timeout_s=2)
    assert later.ok and later.value == []  # ... and empty again for the next call
    assert serves(bare)


def test_chmod_outside_scratch_is_denied(bare: Sandbox, tmp_path) -> None:
    victim = tmp_path / "config"
    victim.write_text("x")
    victim.chmod(0o600)
    result = bare.run(f"import os\n\ndef solve():\n    os.chmod('{victim}', 0o777)\n", timeout_s=2)
    assert not result.ok and "PermissionError" in result.error
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_no_socket_reaches_a_listening_server(bare: Sandbox, serves) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(1.0)
    port = server.getsockname()[1]
    accepted: list[object] = []
    waiter = threading.Thread(target=lambda: _accept(server, accepted))
    waiter.start()
    try:
        tcp = bare.run(
            f"import socket\n\ndef solve():\n    socket.create_connection(('127.0.0.1', {port}))\n", timeout_s=2
        )
        udp = bare.run(
            f"import socket\n\ndef solve():\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"    s.sendto(b'x', ('127.0.0.1', {port}))\n",
            timeout_s=2,
        )
    finally:
        waiter.join()
        server.close()
    for result in (tcp, udp):
        assert (result.ok, result.kind) == (False, "exception") and "PermissionError" in result.error
    assert accepted == []
    assert serves(bare)


def _accept(server: socket.socket, accepted: list[object]) -> None:
    try:
        accepted.append(server.accept())
    except TimeoutError:
        pass


def test_ctypes_cannot_fork_and_a_native_crash_is_contained(bare: Sandbox, serves) -> None:
    forked = bare.run("import ctypes\n\ndef solve():\n    return ctypes.CDLL(None).fork()\n", timeout_s=2)
    assert forked.ok and forked.value == -1  # libc's fork() failed: seccomp
    crash = bare.run("import ctypes\n\ndef solve():\n    return ctypes.string_at(0)\n", timeout_s=2)
    assert (crash.ok, crash.kind, crash.restarted) == (False, "crash", True)
    assert "SIGSEGV" in crash.error
    assert serves(bare)


@pytest.mark.parametrize(
    "source",
    [
        "import os, signal\n\ndef solve():\n    os.kill(os.getpid(), signal.SIGKILL)\n",
        "import os\n\ndef solve():\n    os._exit(0)\n",
    ],
    ids=["sigkill-self", "exit"],
)
def test_killing_its_own_worker_is_a_failed_call_then_a_fresh_worker(bare: Sandbox, serves, source) -> None:
    before = bare.restarts
    result = bare.run(source, timeout_s=2)
    assert (result.ok, result.kind, result.restarted) == (False, "crash", True)
    assert bare.restarts == before + 1
    assert serves(bare)


def test_signals_cannot_reach_the_app(bare: Sandbox) -> None:
    result = bare.run("import os\n\ndef solve():\n    os.kill(os.getppid(), 0)\n", timeout_s=2)
    assert not result.ok and "PermissionError" in result.error  # Landlock signal scoping


def test_limits_cannot_be_raised_from_inside(bare: Sandbox) -> None:
    source = "import resource\n\ndef solve():\n    resource.setrlimit(resource.RLIMIT_AS, (-1, -1))\n"
    result = bare.run(source, timeout_s=2)
    assert not result.ok and ("PermissionError" in result.error or "ValueError" in result.error)


def test_huge_output_is_refused(guarded: Sandbox, serves) -> None:
    result = guarded.run("def solve():\n    return 'x' * 5_000_000\n", timeout_s=5)
    assert (result.ok, result.kind) == (False, "output")
    assert "1,000,000-byte limit" in result.error
    assert serves(guarded)


def test_big_files_stop_at_the_file_size_limit(serves) -> None:
    with Sandbox(SandboxLimits(file_size_mb=1), guard=False) as sandbox:
        result = sandbox.run("def solve():\n    open('big', 'wb').write(b'x' * 3_000_000)\n", timeout_s=5)
        assert not result.ok  # RLIMIT_FSIZE: EFBIG (SIGXFSZ is ignored by Python)
        assert "File too large" in result.error or result.kind == "crash"
        assert serves(sandbox)


def test_environment_secrets_are_not_passed_on(bare: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-SECRET123")
    fresh = Sandbox(guard=False)
    try:
        result = fresh.run("import os\n\ndef solve():\n    return dict(os.environ)\n", timeout_s=5)
    finally:
        fresh.close()
    assert result.ok
    assert "ANTHROPIC_API_KEY" not in result.value and "SECRET123" not in str(result.value)
    assert set(result.value) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR"}
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-test-SECRET123"


def test_a_forged_reply_on_the_protocol_pipe_is_never_served(bare: Sandbox, serves) -> None:
    forge = (
        "import json, os, struct\n\n"
        "def solve():\n"
        "    body = json.dumps({'ok': True, 'value': 'forged', 'nonce': 'guess'}).encode()\n"
        "    for fd in range(3, 12):\n"
        "        try:\n"
        "            os.write(fd, struct.pack('>I', len(body)) + body)\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 'real'\n"
    )
    result = bare.run(forge, timeout_s=2)
    assert result.value != "forged"
    assert (result.ok, result.kind, result.restarted) == (False, "crash", True)
    assert serves(bare)


def test_crashing_programs_among_concurrent_calls_never_disturb_the_others(serves) -> None:
    from concurrent.futures import ThreadPoolExecutor

    square = "def solve(n):\n    return n * n\n"
    crash = "import os\n\ndef solve(n):\n    os._exit(3)\n"
    with Sandbox(workers=2, guard=False) as sandbox:
        with ThreadPoolExecutor(6) as pool:
            results = list(
                pool.map(
                    lambda n: (n, sandbox.run(crash if n % 5 == 0 else square, "solve", {"n": n}, timeout_s=5)),
                    range(40),
                )
            )
        for n, result in results:
            if n % 5 == 0:
                assert (result.ok, result.kind, result.restarted) == (False, "crash", True)
            else:
                assert result.ok and result.value == n * n, (n, result)
        assert sandbox.restarts == 8 and len(sandbox.pids) == 2
        assert serves(sandbox)


def test_workers_exit_when_the_app_is_killed(tmp_path) -> None:
    import subprocess
    import sys
    import time

    app = (
        "import sys, time\nfrom protege.sandbox import Sandbox\n"
        "box = Sandbox(workers=2).start()\nprint(*box.pids, flush=True)\ntime.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", app],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 30  # generous: a loaded box; they exit as soon as their pipe closes
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"  # a zombie has exited (its parent is gone too)
    except FileNotFoundError:
        return False


def test_a_worker_that_cannot_be_restarted_fails_clearly_then_recovers(monkeypatch, tmp_path, serves) -> None:
    from protege.sandbox import SandboxUnavailable
    from protege.sandbox import sandbox as sandbox_module

    with Sandbox(guard=False) as box:
        box.start()
        monkeypatch.setattr(sandbox_module, "WORKER", tmp_path / "missing_worker.py")  # the next start fails
        crash = box.run("import os\n\ndef solve():\n    os._exit(1)\n", timeout_s=2)
        assert (crash.ok, crash.kind, crash.restarted) == (False, "crash", False)  # the result is still there
        with pytest.raises(SandboxUnavailable, match="did not start"):
            box.run("def solve():\n    return 1\n")
        monkeypatch.undo()
        assert serves(box)


def test_the_worker_holds_no_capabilities_even_when_the_app_is_root(bare: Sandbox) -> None:
    source = (
        "import ctypes\n\n"
        "def solve():\n"
        "    header = (ctypes.c_uint32 * 2)(0x20080522, 0)\n"
        "    data = (ctypes.c_uint32 * 6)()\n"
        "    assert ctypes.CDLL(None).capget(header, data) == 0\n"
        "    return list(data)\n"
    )
    result = bare.run(source, timeout_s=2)
    assert result.ok and result.value == [0] * 6, result
    assert bare.isolation["capabilities_dropped"] is (os.geteuid() == 0)


def test_system_v_shared_memory_is_out_of_reach(bare: Sandbox) -> None:
    source = (
        "import ctypes\n\n"
        "def solve():\n"
        "    libc = ctypes.CDLL(None, use_errno=True)\n"
        "    return [libc.shmget(0, 4096, 0o1666), ctypes.get_errno()]\n"  # IPC_PRIVATE, IPC_CREAT | 0666
    )
    result = bare.run(source, timeout_s=2)
    assert result.ok and result.value == [-1, 1], result  # EPERM from seccomp


@pytest.mark.parametrize(
    ("patch", "changed"),
    [
        ('json.JSONEncoder.encode = lambda self, o: \'{"ok": true, "value": 0.01}\'', "json.encoder.JSONEncoder"),
        ("fractions.Fraction.limit_denominator = lambda self, n=0: 999", "fractions.Fraction"),
        ("keyword.kwlist.append('zz')", "keyword.kwlist"),
        ("csv.register_dialect('excel', delimiter=';')", "csv's dialects"),
        ("decimal.DefaultContext.prec = 3", "decimal's template contexts"),
        ("collections.abc.Sequence.register(dict)", "collections.abc.Sequence"),
    ],
    ids=["class-method", "class-method-2", "module-list", "csv-dialect", "decimal-template", "abc-register"],
)
@pytest.mark.parametrize("fixture", ["guarded", "bare"])
def test_a_program_that_changes_shared_state_fails_and_the_next_program_sees_none_of_it(
    request, fixture: str, patch: str, changed: str, serves
) -> None:
    """One worker serves every task's programs: a program that patches what they share (a class of an allowed
    module, a module's list, csv's dialects, decimal's templates, an ABC) gets no answer served, and the worker is
    replaced before the next call — which once went through the patched json encoder with the attacker's answer."""
    sandbox = request.getfixturevalue(fixture)
    imports = "import json, fractions, keyword, csv, decimal, collections.abc\n"
    poisoned = sandbox.run(f"{imports}def solve(x):\n    {patch}\n    return x\n", "solve", {"x": 1})
    assert (poisoned.ok, poisoned.kind, poisoned.restarted) == (False, "tainted", True), poisoned
    assert changed in poisoned.error and "replaced" in poisoned.error
    honest = (
        f"{imports}def solve(x):\n"
        "    return {'x': x, 'third': str(fractions.Fraction(1, 3).limit_denominator(10)),\n"
        "            'kw': len(keyword.kwlist), 'seq': isinstance({}, collections.abc.Sequence),\n"
        "            'dec': str(decimal.Decimal(1) / decimal.Decimal(7))[:8]}\n"
    )
    result = sandbox.run(honest, "solve", {"x": 2})
    assert result.ok, result.error
    assert result.value == {"x": 2, "third": "1/3", "kw": 35, "seq": False, "dec": "0.142857"}
    assert serves(sandbox)


def test_each_call_starts_in_a_default_decimal_context(guarded: Sandbox) -> None:
    """The thread's current context is the program's to set (arithmetic sets its flags anyway), so it is reset
    before every call rather than treated as a change."""
    lowered = guarded.run("import decimal\ndef solve():\n    decimal.getcontext().prec = 3\n    return 1\n")
    assert lowered.ok and not lowered.restarted
    result = guarded.run("import decimal\ndef solve():\n    return str(decimal.Decimal(1) / decimal.Decimal(7))\n")
    assert result.ok and result.value == "0.1428571428571428571428571429"
