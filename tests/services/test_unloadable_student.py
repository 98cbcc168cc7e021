"""A promoted student that cannot be loaded in this process (its files moved or deleted, llama-cpp-python not
installed) must not fail the calls the tiers above it can answer: they escalate, with one warning per task."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from protege import Protege
from protege.agents import FunctionModel
from protege.errors import LocalModelUnavailable
from protege.store import StudentRow


class Out(BaseModel):
    label: str


@pytest.fixture
def app(tmp_path):
    teacher = FunctionModel(lambda req: json.dumps({"label": "ok"}), price_as="anthropic:claude-opus-4-5")
    a = Protege(db=f"sqlite:///{tmp_path}/s.db", teacher=teacher, project_dir=tmp_path / ".protege")

    @a.task
    def tag(text: str) -> Out:
        """Tag the text."""

    a.store.add_student(
        StudentRow(task_name="tag", base="b", adapter_path=str(tmp_path / "gone"), state="promoted", metrics={})
    )
    yield a
    a.close()


def test_a_student_whose_files_are_gone_escalates_and_says_so_once(app, caplog):
    with caplog.at_level("WARNING", logger="protege"):
        first = app.run("tag", {"text": "a"})
        second = app.run("tag", {"text": "b"})
    assert (first.tier, second.tier) == ("teacher", "teacher")
    assert first.output.label == "ok"
    assert caplog.text.count("the student is not served in this process") == 1
    assert "neither a local path" in caplog.text


def test_asking_for_the_student_tier_by_name_still_says_why_it_cannot(app):
    with pytest.raises(LocalModelUnavailable, match="neither a local path"):
        app.run("tag", {"text": "a"}, tier="student")


def test_a_student_whose_engine_fails_on_first_use_is_left_out_after_one_try(app, monkeypatch, caplog):
    """llama-cpp-python missing shows on the first call, not when the model is built: that call escalates, and
    the calls after it skip the student (no failed attempt recorded on each) until its tiers change; asked for
    by name, it says why."""
    from protege.agents.cascade import StudentPick

    def broken(req):
        raise LocalModelUnavailable("engine='llama.cpp' needs llama-cpp-python: pip install 'protege[llama]'")

    pick = StudentPick(FunctionModel(broken, name="local:x"), "x", None, None, "instructions")
    monkeypatch.setattr(app.tiers, "_pick", lambda row: pick)
    app.tiers.invalidate("tag")
    with caplog.at_level("WARNING", logger="protege"):
        first, second = app.run("tag", {"text": "a"}), app.run("tag", {"text": "b"})
    assert [a.tier for a in first.attempts] == ["student", "teacher"]
    assert [a.tier for a in second.attempts] == ["teacher"]
    assert caplog.text.count("the student is not served in this process") == 1
    with pytest.raises(LocalModelUnavailable, match="llama-cpp-python"):
        app.run("tag", {"text": "c"}, tier="student")
