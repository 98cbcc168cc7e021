"""Skill versions and status, students and the promoted one, and the rolling shadow agreement window."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from protege.errors import UserError
from protege.store import ShadowRow, SkillRow, StudentRow

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _skill(task: str = "triage", **kw) -> SkillRow:
    return SkillRow(task_name=task, name=task, description="d", text=kw.pop("text", "body"), **kw)


def test_skill_versions_number_up_and_filter_by_status(store):
    """Each add_skill is the next version; skill() finds newest, by version and by status; skills() lists them."""
    v1 = store.add_skill(_skill(text="one"))
    v2 = store.add_skill(_skill(text="two"))
    store.add_skill(_skill("other"))
    assert (v1.version, v2.version, v2.id != v1.id) == (1, 2, True)
    store.update_skill(v1.id, status="approved", reviewed_by="ann", reviewed_at=T0)
    assert store.skill("triage").text == "two"
    assert store.skill("triage", version=1).status == "approved"
    assert store.skill("triage", status="approved").version == 1
    assert store.skill("triage", status="rejected") is None
    assert [(s.task_name, s.version) for s in store.skills()] == [("other", 1), ("triage", 2), ("triage", 1)]
    assert [s.version for s in store.skills("triage", status="draft")] == [2]
    with pytest.raises(UserError, match="999"):
        store.update_skill(999, status="approved")


def test_concurrent_skill_versions_never_collide(store):
    """Eight threads adding versions of one skill at once get eight distinct, consecutive versions."""
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda i: store.add_skill(_skill(text=f"t{i}")), range(8)))
    assert sorted(r.version for r in rows) == list(range(1, 9))


def test_students_and_the_promoted_one(store):
    """students() filters by task and state; promoted_student is the most recently promoted of the task."""
    old = store.add_student(StudentRow(task_name="t", base="b", adapter_path="/1", state="promoted", promoted_at=T0))
    new = store.add_student(
        StudentRow(task_name="t", base="b", adapter_path="/2", state="promoted", promoted_at=T0 + timedelta(days=1))
    )
    store.add_student(StudentRow(task_name="t", base="b", adapter_path="/3"))
    store.add_student(StudentRow(task_name="u", base="b", adapter_path="/4", state="promoted", promoted_at=T0))
    assert store.promoted_student("t").id == new.id
    store.update_student(new.id, state="demoted")
    assert store.promoted_student("t").id == old.id
    assert store.promoted_student("nobody") is None
    assert len(store.students("t")) == 3 and len(store.students(state="promoted")) == 2
    assert store.student(new.id).state == "demoted"


def test_shadow_agreement_is_a_rolling_window(store):
    """shadow_agreement averages the newest `window` comparisons of a task's tier, after `since` if given."""
    scores = [1.0] * 10 + [0.0] * 5  # oldest first: the newest five disagree
    for i, a in enumerate(scores):
        store.add_shadow(
            ShadowRow(
                task_name="t",
                run_id=f"r{i}",
                tier="student",
                trace_id=f"s{i}",
                teacher_trace_id=f"x{i}",
                agreement=a,
                created_at=T0 + timedelta(minutes=i),
            )
        )
    store.add_shadow(
        ShadowRow(task_name="t", run_id="r", tier="replay", trace_id="s", teacher_trace_id="x", agreement=1.0)
    )
    assert store.shadow_agreement("t", "student", window=5) == (0.0, 5)
    assert store.shadow_agreement("t", "student", window=10) == (0.5, 10)
    assert store.shadow_agreement("t", "student", window=100) == (pytest.approx(10 / 15), 15)
    assert store.shadow_agreement("t", "student", since=T0 + timedelta(minutes=12)) == (0.0, 3)
    assert store.shadow_agreement("t", "replay") == (1.0, 1)
    assert store.shadow_agreement("t", "nothing") == (None, 0)
