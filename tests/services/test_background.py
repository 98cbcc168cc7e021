"""Background work is never lost at exit: the `protege init` starter app gets its skill in a short-lived process
with nothing on stderr; a process killed mid-upkeep leaves its job pending and the next process finishes it;
close() is bounded by its timeout, says so, and leaves the unfinished job for the next process."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage
from protege.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")


class Out(BaseModel):
    label: str


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTEGE_")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_starter_app_gets_its_skill_with_nothing_on_stderr(tmp_path):
    """`protege init` then `python protege_app.py`, as a newcomer does: the skill is written before the process
    ends (the exit hook drains the author's job), no traceback, and no job left behind."""
    init = subprocess.run(
        [sys.executable, "-c", "from protege.cli import main; main()", "init"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert init.returncode == 0, init.stderr
    run = subprocess.run(
        [sys.executable, "protege_app.py"], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0 and run.stderr == "", run.stderr
    assert "queue=" in run.stdout
    with Store(f"sqlite:///{tmp_path / '.protege' / 'protege.db'}") as store:
        skills = store.skills("triage")
        assert [s.status for s in skills] == ["draft"]
        assert store.jobs(state=None) == []


KILLABLE_APP = """
import asyncio, json, os, sys
from pathlib import Path
from pydantic import BaseModel
from protege import Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage

MARK = Path(sys.argv[2])
SKILL = ("---\\nname: shout\\ndescription: Upper-cases the text. Use for the shout task.\\n---\\n"
         "# Procedure\\nUpper-case it.\\n")

async def teacher(req):
    if req.task_name.startswith("protege:"):  # the skill author's call
        if sys.argv[3] == "hang":
            MARK.write_text(str(os.getpid()))
            await asyncio.sleep(600)  # killed here, mid-upkeep
        await asyncio.sleep(0.5)  # the resumed author is still at work when this process's own call succeeds
        return ModelResponse(text=SKILL, usage=Usage(input_tokens=3000, output_tokens=400))
    return ModelResponse(text=json.dumps({"label": req.task_input["q"]["text"].upper()}),
                         usage=Usage(input_tokens=500, output_tokens=50))

class Q(BaseModel):
    text: str

class A(BaseModel):
    label: str

app = Protege(db=sys.argv[1], teacher=FunctionModel(teacher, writes_prose=True), replay=FunctionModel(teacher))

@app.task
def shout(q: Q) -> A:
    \"\"\"Upper-case the text.\"\"\"

if sys.argv[3] in ("hang", "resume"):
    print(shout(Q(text="hi")).label, flush=True)
"""


def test_killed_mid_upkeep_the_next_process_finishes_the_work(tmp_path):
    """SIGKILL while the skill author is at work: the job stays in the store, claimed by a dead process; the next
    process that registers the task claims it at once (same host, pid gone) and writes the skill — once, though
    that process's own first call succeeds while the resumed author works (it wrote a second skill)."""
    script, mark, db = tmp_path / "app.py", tmp_path / "author-started", f"sqlite:///{tmp_path / 'p.db'}"
    script.write_text(textwrap.dedent(KILLABLE_APP))
    first = subprocess.Popen(
        [sys.executable, str(script), db, str(mark), "hang"],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):
            if mark.exists() or first.poll() is not None:
                break
            time.sleep(0.1)
        assert mark.exists(), first.stderr.read() if first.poll() is not None else "the author never started"
        with Store(db) as store:
            [job] = store.jobs("shout")
            assert job.kind == "skill" and job.owner.split(":")[1] == str(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    with Store(db) as store:
        assert store.skills("shout") == [] and len(store.jobs("shout")) == 1  # the work is owed, not lost

    second = subprocess.run(
        [sys.executable, str(script), db, str(mark), "resume"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 0 and second.stderr == "", second.stderr
    with Store(db) as store:
        assert [s.status for s in store.skills("shout")] == ["draft"]
        assert store.jobs(state=None) == []


def test_close_is_bounded_by_its_timeout_and_leaves_the_job_pending(tmp_path, caplog):
    """An author slower than the drain timeout: close() returns after the timeout, logs what it left, and the
    job is handed back to the queue; a new app on the same store finishes it."""
    slow = {"on": True}

    async def teacher(req):
        if req.task_name.startswith("protege:"):
            if slow["on"]:
                import asyncio

                await asyncio.sleep(60)
            return ModelResponse(
                text="---\nname: shout\ndescription: Upper-cases text. Use for shout.\n---\n"
                "# Procedure\nUpper-case it.\n",
                usage=Usage(input_tokens=10, output_tokens=10),
            )
        return ModelResponse(text=json.dumps({"label": "X"}), usage=Usage(input_tokens=10, output_tokens=10))

    db = f"sqlite:///{tmp_path / 'p.db'}"

    def make() -> tuple[Protege, object]:
        app = Protege(db=db, teacher=FunctionModel(teacher, writes_prose=True), replay=FunctionModel(teacher))

        @app.task(policy=Policy())
        def shout(text: str) -> Out:
            """Upper-case the text."""

        return app, shout

    app, shout = make()
    shout("x")
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="protege"):
        app.close(timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert "still running after 0.5 s at exit (skill for 'shout') was stopped" in caplog.text
    assert "1 job(s) left pending" in caplog.text
    with Store(db) as store:
        [job] = store.jobs("shout")
        assert job.owner is None  # released: the next process need not wait for a lease

    slow["on"] = False
    with make()[0] as again:  # registering the task claims the job; leaving the block drains it
        pass
    assert again._closed
    with Store(db) as store:
        assert [s.status for s in store.skills("shout")] == ["draft"] and store.jobs(state=None) == []


def test_context_manager_drains_background_work(tmp_path):
    """`with Protege(...) as app:` writes the skill before the block ends."""

    def teacher(req):
        if req.task_name.startswith("protege:"):
            return ModelResponse(
                text="---\nname: shout\ndescription: Upper-cases text. Use for shout.\n---\n"
                "# Procedure\nUpper-case it.\n",
                usage=Usage(input_tokens=10, output_tokens=10),
            )
        return ModelResponse(text=json.dumps({"label": "X"}), usage=Usage(input_tokens=10, output_tokens=10))

    with Protege(
        db=f"sqlite:///{tmp_path / 'p.db'}",
        teacher=FunctionModel(teacher, writes_prose=True),
        replay=FunctionModel(teacher),
    ) as app:

        @app.task
        def shout(text: str) -> Out:
            """Upper-case the text."""

        shout("x")
        store = app.store
    assert app._closed
    with Store(store.url) as again:
        assert len(again.skills("shout")) == 1 and again.jobs(state=None) == []


def test_a_failing_job_is_retried_by_later_processes_then_kept_as_failed(tmp_path, caplog):
    """A handler that raises: the job is released for a retry (its error kept), and after MAX_ATTEMPTS runs it is
    kept as failed rather than retried forever. A kind this app has no handler for stays pending, untouched."""
    from protege.services.background import MAX_ATTEMPTS

    def teacher(req):
        return ModelResponse(text=json.dumps({"label": "X"}), usage=Usage(input_tokens=10, output_tokens=10))

    app = Protege(db=f"sqlite:///{tmp_path / 'p.db'}", teacher=FunctionModel(teacher), replay=FunctionModel(teacher))

    @app.task
    def shout(text: str) -> Out:
        """Upper-case the text."""

    async def boom(task, payload):
        raise RuntimeError(f"no luck with {payload['n']}")

    work = app.lifecycle.work
    work.register("boom", boom)
    with caplog.at_level(logging.ERROR, logger="protege"):
        app.portal.call(work.run(shout.runtime, "boom", {"n": 7}))
    [job] = app.store.jobs("shout")
    assert job.owner is None and job.attempts == 1 and job.error == "RuntimeError: no luck with 7"
    assert "boom work for task 'shout' failed (run 1 of 3); a later process retries it" in caplog.text
    for _ in range(MAX_ATTEMPTS - 1):  # as later processes would: claim and run again
        assert work.resume(shout.runtime) == 1
        app.wait()
    assert app.store.jobs("shout") == []
    [failed] = app.store.jobs("shout", state="failed")
    assert failed.attempts == MAX_ATTEMPTS
    assert work.resume(shout.runtime) == 0

    app.store.add_job("shout", "from-a-newer-protege", {}, owner="another-host:1:x", lease_s=0)
    assert work.resume(shout.runtime) == 1
    app.wait()
    [kept] = app.store.jobs("shout")
    assert kept.kind == "from-a-newer-protege" and kept.owner is None
    app.close()


def test_a_budget_too_small_for_the_skill_author_is_one_warning_not_a_traceback_per_call(tmp_path, caplog):
    """The author reserves 8,192 output tokens (~$0.21 at Opus prices): under a $0.20 daily cap every teacher
    success's skill job was refused, logged a traceback and was left for a later process to retry. Now: one
    warning per task, no traceback, no job left pending, and the calls are served as before."""

    def teacher(req):
        if req.task_name == "triage":
            return ModelResponse(text=json.dumps({"label": "ok"}), usage=Usage(input_tokens=300, output_tokens=20))
        raise AssertionError("the author must be refused before it is asked")

    app = Protege(
        db=f"sqlite:///{tmp_path}/b.db",
        teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5", writes_prose=True),
        project_dir=tmp_path / ".p",
    )

    @app.task(policy=Policy(teacher_budget_usd=0.2, program=False))
    def triage(text: str) -> Out:
        """Label the text."""

    with caplog.at_level(logging.WARNING, logger="protege"):
        for i in range(3):
            assert triage(f"ticket {i}").label == "ok"
            app.wait()
    app.close()
    warned = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warned) == 1 and warned[0].exc_info is None and "teacher budget" in warned[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    with Store(f"sqlite:///{tmp_path}/b.db") as store:
        assert store.jobs(state=None) == [] and store.skills("triage") == []
