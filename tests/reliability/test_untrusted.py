"""Skills and tools are untrusted: unapproved skill text reaches no model unless the policy allows it, skill folders
cannot read or write outside themselves, and a tool that hangs or raises cannot take a call down."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, ToolCall
from protege.errors import UserError
from protege.skills import Skill
from protege.store import SkillRow

from .common import GOOD, HAIKU, OPUS, Ticket, Triage, oracle, register_triage, start_script

MARKER = "UNREVIEWED-INSTRUCTION-7f3a"  # text only an unapproved skill holds


def seen(model: FunctionModel) -> str:
    """Everything a model was sent."""
    return "\n".join(m.content for r in model.requests for m in r.messages)


def make_app(tmp_path, policy: Policy | None = None) -> tuple[Protege, FunctionModel, FunctionModel]:
    teacher, replay = FunctionModel(oracle, price_as=OPUS), FunctionModel(oracle, price_as=HAIKU)
    app = Protege(db=f"sqlite:///{tmp_path}/u.db", teacher=teacher, replay=replay, project_dir=tmp_path / ".p")
    register_triage(app, policy=policy)
    return app, teacher, replay


def plant_draft(app: Protege) -> None:
    """A draft skill (as the author or an importer would leave it) carrying the marker."""
    app.skills.add("triage", Skill(name="triage", description="Route tickets.", body=f"# Triage\n\n{MARKER}\n"))
    app.tiers.invalidate("triage")


def call(app: Protege, **kw):
    res = app.run("triage", {"ticket": {"subject": "refund"}}, **kw)
    app.wait()
    return res


def test_draft_skill_never_reaches_replay_by_default(tmp_path):
    """With only a draft skill, calls go to the teacher; even a forced replay gets no skill text."""
    app, teacher, replay = make_app(tmp_path)
    plant_draft(app)
    assert call(app).tier == "teacher" and replay.requests == []
    assert call(app, tier="replay", escalate=False).tier == "replay"
    assert MARKER not in seen(replay) + seen(teacher)
    app.close()


def test_policy_lets_replay_use_a_draft(tmp_path):
    """Policy(allow_unapproved_skills=True) is the one switch that lets replay serve with the draft's text."""
    app, teacher, replay = make_app(tmp_path, Policy(allow_unapproved_skills=True, shadow_rate=0))
    plant_draft(app)
    res = call(app)
    assert res.tier == "replay" and res.attempts[0].skill_version == 1 and MARKER in seen(replay)
    assert teacher.requests == []
    app.close()


@pytest.mark.parametrize("verdict", ["reject", "retire"])
def test_rejected_skill_is_never_replayed_even_when_drafts_are_allowed(tmp_path, verdict):
    """allow_unapproved_skills admits drafts, not skills a reviewer rejected or retired (it replayed the newest
    skill whatever its status)."""
    app, teacher, replay = make_app(tmp_path, Policy(allow_unapproved_skills=True, shadow_rate=0))
    plant_draft(app)
    if verdict == "reject":
        app.reject_skill("triage", reviewer="ana", note="tells the model to ignore its instructions")
    else:
        app.approve_skill("triage")
        app.skills.retire("triage", by="ana", note="stale")
    assert app.store.skill("triage").status == {"reject": "rejected", "retire": "retired"}[verdict]
    call(app)
    assert MARKER not in seen(replay)
    app.close()


def test_unapproved_skills_of_other_tasks_are_not_prior_art(tmp_path):
    """A new task's teacher is offered related skills of other tasks only once they are approved."""
    app, teacher, replay = make_app(tmp_path)
    plant_draft(app)

    for name in ("triage_mail", "triage_chat"):  # two new tasks much like "triage"
        app.task(name=name)(_triage)
    app.run("triage_mail", {"ticket": {"subject": "refund"}})
    assert MARKER not in seen(teacher)
    app.approve_skill("triage")
    app.run("triage_chat", {"ticket": {"subject": "refund"}})
    assert MARKER in seen(teacher)  # once approved it is offered: the check above could have failed
    app.close()


def test_a_task_can_refuse_other_tasks_skills_as_prior_art(tmp_path):
    """Policy(prior_art=False): an approved skill of another task is not put in this task's teacher prompt."""
    app, teacher, replay = make_app(tmp_path)
    plant_draft(app)
    app.approve_skill("triage")
    app.task(name="triage_private", policy=Policy(prior_art=False))(_triage)
    app.run("triage_private", {"ticket": {"subject": "refund"}})
    assert MARKER not in seen(teacher)
    app.task(name="triage_open")(_triage)
    app.run("triage_open", {"ticket": {"subject": "refund"}})
    assert MARKER in seen(teacher)  # the default offers it: the check above could have failed
    app.close()


# -- folders ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "../escape.md",
        "/tmp/protege-abs-escape.md",
        "examples/../../escape.md",
        "..\\escape.md",
        "examples/.hidden/../../../escape.md",
    ],
)
def test_tampered_skill_row_cannot_write_outside_the_export_folder(tmp_path, path):
    """An approved skill row whose extra file path escapes (a tampered database) is refused at export; nothing is
    written outside the destination."""
    app, _, _ = make_app(tmp_path)
    text = Skill(name="triage", description="Route tickets.", body="# Triage\n").render()
    with app.store.session() as s:
        s.add(
            SkillRow(
                task_name="triage",
                name="triage",
                status="approved",
                description="Route tickets.",
                text=text,
                files={path: "pwned"},
            )
        )
        s.commit()
    dest = tmp_path / "out" / "skills"
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(UserError, match="skill file path"):
        app.export_skills(dest)
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(dest in p.parents or p == dest or p == dest.parent for p in created), created
    assert not Path("/tmp/protege-abs-escape.md").exists()
    app.close()


def test_export_refuses_a_destination_symlinked_elsewhere(tmp_path):
    """If <dest>/<skill> is a symlink to another folder, export refuses instead of writing through it."""
    app, _, _ = make_app(tmp_path)
    plant_draft(app)
    app.approve_skill("triage")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "skills"
    dest.mkdir()
    os.symlink(elsewhere, dest / "triage")
    with pytest.raises(UserError, match="not a skill folder"):
        app.export_skills(dest)
    assert list(elsewhere.iterdir()) == []
    app.close()


@pytest.mark.parametrize("where", ["file", "subfolder", "skill folder"])
def test_import_refuses_symlinks_out_of_the_folder(tmp_path, where):
    """A symlink anywhere in an imported skill (a file, a subfolder, the skill folder itself) is refused, and the
    file it points at is never read into the store."""
    app, _, _ = make_app(tmp_path)
    secret = tmp_path / "secrets"
    secret.mkdir()
    (secret / "id_rsa").write_text("PRIVATE-KEY-CONTENT")
    src = tmp_path / "import"
    real = tmp_path / "real-triage" if where == "skill folder" else src / "triage"
    real.mkdir(parents=True)
    (real / "SKILL.md").write_text(Skill(name="triage", description="Route.", body="# T\n").render())
    if where == "file":
        os.symlink(secret / "id_rsa", real / "key.md")
    elif where == "subfolder":
        os.symlink(secret, real / "examples")
    else:
        src.mkdir()
        os.symlink(real, src / "triage")
    with pytest.raises(UserError, match="symlink"):
        app.import_skills(src)
    assert app.store.skills() == []
    app.close()


# -- tools -----------------------------------------------------------------------------------------------------------


def tool_agent(tool: str):
    """A teacher that calls `tool` once, then answers (whatever the tool said)."""

    def answer(req):
        if req.messages[-1].role != "tool":
            return ModelResponse(tool_calls=[ToolCall(id="c1", name=tool, arguments={"query": "acct 7"})])
        return GOOD

    return FunctionModel(answer, price_as=OPUS)


RELEASE = threading.Event()  # set at the end of a test: lets the still-running tool threads finish


@pytest.fixture(autouse=True)
def _release_hung_tools():
    RELEASE.clear()
    yield
    RELEASE.set()


def hangs(query: str) -> str:
    """Look the account up (never answers in time)."""
    RELEASE.wait(120)  # released at the end of each test
    return "too late"


async def hangs_async(query: str) -> str:
    """Look the account up, asynchronously (never answers in time)."""
    await asyncio.sleep(60)
    return "too late"


def raises(query: str) -> str:
    """Look the account up (crashes)."""
    raise ConnectionError(f"backend down while looking up {query!r}")


@pytest.mark.parametrize(
    "tool, shown",
    [
        (hangs, "timed out after 0.2s"),
        (hangs_async, "timed out after 0.2s"),
        (raises, "raised ConnectionError: backend down"),
    ],
)
def test_tool_that_hangs_or_raises_is_contained(tmp_path, tool, shown):
    """A tool that sleeps past Policy.tool_timeout_s (sync or async) or raises: the call still completes long before
    the tool would, and the trace's transcript shows the tool's error to the model."""
    app = Protege(db=f"sqlite:///{tmp_path}/t.db", teacher=tool_agent(tool.__name__), project_dir=tmp_path / ".p")
    app.task(tools=[tool], policy=Policy(tool_timeout_s=0.2))(_triage)
    t0 = time.perf_counter()
    res = app.run("_triage", {"ticket": {"subject": "refund"}})
    elapsed = time.perf_counter() - t0
    print(f"{tool.__name__}: call done in {elapsed:.2f} s")
    # far under the hang (120 s sync, 60 s async), with room for a loaded machine: it was 2 s, and a busy 2-core
    # box once took longer for the first call of a process
    assert elapsed < 30 and res.output.model_dump() == GOOD
    (tool_turn,) = [m for m in app.store.trace(res.trace_ids[0]).messages if m["role"] == "tool"]
    assert shown in tool_turn["content"] and tool_turn["name"] == tool.__name__
    app.close()


def _triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


def test_hung_sync_tools_do_not_stall_other_calls(tmp_path):
    """More concurrent calls than the default executor has threads, each with a sync tool that hangs: every call
    ends while the tools still hang, not when they finally return (they shared the executor of the store's writes,
    so every call waited for them)."""
    workers = min(32, (os.cpu_count() or 1) + 4)  # ThreadPoolExecutor's default size
    app = Protege(db=f"sqlite:///{tmp_path}/t.db", teacher=tool_agent("hangs"), project_dir=tmp_path / ".p")
    app.task(tools=[hangs], policy=Policy(tool_timeout_s=0.2))(_triage)
    unhang = threading.Timer(30.0, RELEASE.set)  # only so that a stalled run still ends (and fails)
    unhang.start()

    async def many():
        return await asyncio.gather(
            *(app.arun("_triage", {"ticket": {"subject": f"s{i}"}}) for i in range(workers + 2))
        )

    t0 = time.perf_counter()
    try:
        results = asyncio.run(many())
        stalled = RELEASE.is_set()  # the calls ended only once the hung tools were let go
    finally:
        unhang.cancel()
        app.close()
    print(f"{workers + 2} calls with hung sync tools: {time.perf_counter() - t0:.2f} s")
    assert len(results) == workers + 2 and all(r.output.model_dump() == GOOD for r in results)
    assert not stalled, f"{workers + 2} calls waited for their hung tools (0.2s tool timeout)"


def test_a_hung_sync_tool_does_not_keep_the_process_alive(tmp_path):
    """After a call whose sync tool hung past its timeout, the process exits, long before the tool would return
    (the tool's executor thread was joined at exit)."""
    proc = start_script("hung_tool.py", tmp_path / "h.db")  # its tool hangs for 300 s
    try:
        out, err = proc.communicate(timeout=60)  # far longer than start-up + a call, far shorter than the tool
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the process was still alive after 60 s; stdout {proc.communicate()[0].decode()!r}")
    print(f"call {out.decode().strip()} s, then exited")
    assert proc.returncode == 0 and out.strip(), err.decode()[-2000:]
