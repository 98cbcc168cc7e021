"""A changed contract (a new task version) takes what was learned under the old one out of service: the promoted
student, the approved skill and its drafts, the field programs; skills, programs and datasets then read the new
version's traces only (or earlier ones with the same instructions)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.distill.pipeline import other_instructions
from protege.store import StudentRow


class Order(BaseModel):
    city: str
    quantity: int


CITIES = ["Paris", "Lyon", "Nice", "Lille", "Metz", "Brest", "Dijon", "Tours"]


def answer(req):
    """The teacher: the city as the instructions say to write it, and the quantity from the text."""
    text = req.task_input["email"]
    city = next(c for c in CITIES if c in text)
    upper = "UPPER CASE" in req.messages[0].content
    return json.dumps({"city": city.upper() if upper else city, "quantity": int(text.split("qty ")[1].split()[0])})


def register(app, instructions):
    def extract(email: str) -> Order:
        pass

    extract.__doc__ = instructions
    return app.task(name="extract", policy=Policy(program_min_traces=12))(extract)


@pytest.fixture
def app(tmp_path):
    a = Protege(
        db=f"sqlite:///{tmp_path}/c.db",
        teacher=FunctionModel(answer, price_as="anthropic:claude-opus-4-5"),
        replay=FunctionModel(answer, price_as="anthropic:claude-haiku-4-5"),
        project_dir=tmp_path / ".protege",
    )
    yield a
    a.close()


def emails(n, start=0):
    return [
        {"email": f"Ship to {CITIES[i % len(CITIES)]}, order #{i}: qty {i % 7 + 1} units."} for i in range(start, n)
    ]


def test_a_new_contract_takes_the_old_student_skill_and_programs_out_of_service(app):
    register(app, "Extract the city and quantity.")
    for inp in emails(45):
        app.run("extract", inp)
    app.wait()
    app.programs.induce("extract")
    app.approve_skill("extract")
    student = app.store.add_student(
        StudentRow(task_name="extract", base="b", adapter_path="/nowhere", state="promoted", metrics={})
    )
    assert app.programs.current("extract") is not None and app.skills.approved("extract") is not None

    register(app, "Extract the city and quantity.")  # the same contract: nothing changes
    assert app.store.promoted_student("extract").id == student.id
    reflowed = register(app, "Extract the city\n    and quantity.  ")  # re-wrapped: the same words, still v1
    assert reflowed.runtime.version == 1 and app.store.promoted_student("extract").id == student.id

    register(app, "Extract the city and quantity. Write the city in UPPER CASE.")  # version 2
    assert app.store.promoted_student("extract") is None
    assert "contract changed (v1 → v2)" in app.store.student(student.id).metrics["demoted_reason"]
    assert {row.status for row in app.store.skills("extract")} <= {"retired", "rejected"}
    assert app.programs.current("extract") is None
    served = app.run("extract", emails(46, 45)[0])
    assert served.tier == "teacher" and served.output.city == "BREST"
    assert app.programs.source_traces("extract") == 1  # induction reads the new contract's traces only
    assert other_instructions(
        app.store, "extract", 2, "Extract the city and quantity. Write the city in UPPER CASE."
    ) == [1]
    # v1's instructions re-wrapped are the same instructions: its traces stay in a later version's datasets
    assert other_instructions(app.store, "extract", 2, "Extract the city\n  and quantity.") == []
