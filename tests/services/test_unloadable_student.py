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
