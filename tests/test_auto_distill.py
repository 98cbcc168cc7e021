"""Opt-in re-distillation: a due task is distilled by a separate process, one per task across processes (a lease
in the store), with progress and outcome on the lease row. Trains the tiny random base for 2 steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel
from triage_support import SUBJECTS

from protege.services.redistill import distill_due, lease_name
from protege.store import Store

SRC = str(Path(__file__).resolve().parents[1] / "src")
APP = """
import json
from typing import Literal
from pydantic import BaseModel
from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage

class Ticket(BaseModel):
    subject: str

class Triage(BaseModel):
    queue: Literal["billing", "bug"]
    priority: int

def oracle(req):
    subject = req.task_input["ticket"]["subject"]
    queue = "billing" if any(w in subject for w in ("refund", "charge", "invoice")) else "bug"
    return ModelResponse(text=json.dumps({"queue": queue, "priority": 2}),
                         usage=Usage(input_tokens=200, output_tokens=20))

teacher = FunctionModel(oracle)
app = Protege(teacher=teacher, replay=teacher)

@app.task(policy=Policy(min_traces=10, auto_distill=True, auto_distill_traces=5))
def triage(ticket: Ticket) -> Triage:
    \"\"\"Route a support ticket to a queue and set its priority (1 = urgent).\"\"\"

if __name__ == "__main__":
    import sys
    for subject in sys.argv[1:]:
        triage(Ticket(subject=subject))
"""


class Out(BaseModel):
    label: str


@pytest.fixture
def project(tmp_path, tiny_base) -> tuple[Path, dict]:
    (tmp_path / "autoapp.py").write_text(textwrap.dedent(APP))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROTEGE_")}
    env.update(
        PYTHONPATH=SRC,
        PROTEGE_DB=f"sqlite:///{tmp_path / 'p.db'}",
        PROTEGE_PROJECT_DIR=str(tmp_path / ".p"),
        PROTEGE_STUDENT_BASE=str(tiny_base),
        PROTEGE_AUTO_DISTILL_CONFIG=json.dumps({"max_steps": 2, "batch_size": 4, "torch_threads": 1}),
    )
    return tmp_path, env


def test_two_workers_at_once_make_one_student(project):
    """The serving process finds the task due; two distill workers start together; the lease lets one train."""
    folder, env = project
    serve = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy, sys; sys.argv = ['x', *sys.argv[1:]]; "
            "from protege.auto_distill import WORKER_ENV; import os; os.environ[WORKER_ENV] = '1'; "
            "runpy.run_path('autoapp.py', run_name='__main__')",
            *SUBJECTS,
        ],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert serve.returncode == 0 and serve.stderr == "", serve.stderr  # (auto-distill held back in this one)
    with Store(env["PROTEGE_DB"]) as store:
        from protege import Policy

        assert distill_due(store, "triage", Policy(min_traces=10)) == "12 validated traces and no student yet"

    cmd = [sys.executable, "-m", "protege.auto_distill", "--task", "triage", "--app-file", "autoapp.py"]
    workers = [
        subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [w.communicate(timeout=540) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in outs]
    outcomes = [json.loads(out.strip().splitlines()[-1])["outcome"] for out, _ in outs]
    distilled = [o for o in outcomes if o in ("promoted", "candidate")]
    assert len(distilled) == 1 and set(outcomes) - set(distilled) <= {"skipped", "not due"}, outcomes
    with Store(env["PROTEGE_DB"]) as store:
        [student] = store.students("triage")
        lease = store.lease(lease_name("triage"))
        assert not store.lease_live(lease)
        assert lease.info["outcome"] == distilled[0] == ("promoted" if student.state == "promoted" else "candidate")
        assert lease.info["student_id"] == student.id and lease.info["phase"] == "done"
        assert lease.info["retention"] == student.metrics["headline"]["retention"]  # what promotion went by


def test_the_serving_process_starts_the_worker_in_the_background(project):
    """A short script with auto_distill on: its teacher successes find the task due and start a detached worker
    (its pid and log under the project dir); the script itself exits at once, with nothing on stderr."""
    folder, env = project
    serve = subprocess.run(
        [sys.executable, "autoapp.py", *SUBJECTS], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )
    assert serve.returncode == 0 and serve.stderr == "", serve.stderr
    log = folder / ".p" / "logs" / "distill-triage.log"
    assert log.exists()
    import time

    with Store(env["PROTEGE_DB"]) as store:
        for _ in range(540):  # the worker outlives the script; wait for its outcome on the lease row
            lease = store.lease(lease_name("triage"))
            if lease is not None and lease.info.get("phase") in ("done", "failed"):
                break
            time.sleep(1)
        assert lease.info["phase"] == "done", log.read_text()[-3000:]
        assert len(store.students("triage")) == 1


PROBE = """
import threading
from protege.services.redistill import app_reference

# runs at exit where the app's drain does (threading's exit hooks), after the script's body has ended
threading._register_atexit(lambda: print(json.dumps(app_reference(app, app.handle("triage")))))
"""


def test_a_script_is_found_from_a_check_at_exit(project):
    """A check can run after the script's body has ended (its last teacher successes drained at exit), when
    CPython has already deleted `__main__.__file__`: the worker is still pointed at the script's file."""
    folder, env = project
    script = folder / "probe.py"
    script.write_text(textwrap.dedent(APP) + PROBE)
    out = subprocess.run([sys.executable, "probe.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["--app-file", str(script.resolve()), "--attr", "app"]


def test_due_counts_new_traces_since_the_last_student_and_a_worker_with_nothing_to_do_keeps_the_last_outcome(tmp_path):
    """distill_gap: min_traces before any student, auto_distill_traces new ones after one, nothing while one is
    promoted. A worker that finds nothing due leaves the last distill's outcome on the lease for people to read."""
    from protege import Policy, Protege
    from protege.agents import FunctionModel
    from protege.auto_distill import work
    from protege.distill.pipeline import demote, promote
    from protege.services.redistill import distill_gap
    from protege.store import StudentRow
    from protege.store.background import process_owner

    teacher = FunctionModel(lambda req: {"label": "x"})
    app = Protege(db=f"sqlite:///{tmp_path / 'p.db'}", teacher=teacher, replay=teacher)
    policy = Policy(min_traces=4, auto_distill=True, auto_distill_traces=2)

    @app.task(policy=policy)
    def tag(text: str) -> Out:
        """Tag the text."""

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PROTEGE_AUTO_DISTILL_WORKER", "1")  # no worker started from these calls
        for i in range(3):
            tag(f"t{i}")
        app.wait()
        assert distill_gap(app.store, "tag", policy) == (1, "3 validated traces and no student yet")
        row = app.store.add_student(StudentRow(task_name="tag", base="b", adapter_path="a"))
        promote(app.store, row.id)
        assert distill_gap(app.store, "tag", policy) == (None, "a student is promoted")
        demote(app.store, "tag", reason="drift")
        assert distill_gap(app.store, "tag", policy)[0] == 2  # none new since that student
        tag("t9")
        app.wait()
        assert distill_gap(app.store, "tag", policy) == (
            1,
            f"1 new validated traces since student {row.id[:8]} (demoted)",
        )

    last = {"phase": "done", "outcome": "promoted", "student_id": row.id, "ended_at": 1.0}
    app.store.acquire_lease("distill:tag", owner=process_owner(), ttl_s=60, info=last)
    app.store.release_lease("distill:tag", owner=process_owner(), info=last)
    assert work(app, "tag") == {"outcome": "not due"}
    assert app.store.lease("distill:tag").info == last
    app.close()
