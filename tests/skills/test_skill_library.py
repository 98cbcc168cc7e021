"""The skill library on a real SQLite store: versions, the review state machine, edits and evidence."""

from __future__ import annotations

import pytest

from protege.errors import UserError
from protege.skills import Skill, SkillLibrary
from protege.store.models import SkillRow

TASK = "extract_order"


def test_add_makes_immutable_draft_versions(lib, make_skill):
    """Each add is the next version, a draft; the stored text leaves version/status to the row."""
    v1 = lib.add(TASK, make_skill(), kind="authored", source_trace_ids=["t1"], author_model="m")
    v2 = lib.add(TASK, make_skill(body="# second\n"), kind="exemplar", source_trace_ids=[], author_model="m")
    assert (v1.version, v1.status, v2.version, v2.status) == (1, "draft", 2, "draft")
    assert "version:" not in v1.text and "status:" not in v1.text
    skill = SkillLibrary.to_skill(v1)
    assert (skill.version, skill.status, skill.task, skill.kind) == (1, "draft", TASK, "authored")
    lib.approve(TASK, 1, by="ann")
    assert lib.get(TASK, 1).text == v1.text  # review changes the row's state, never its content
    assert lib.latest(TASK).version == 2 and [r.version for r in lib.versions(TASK)] == [2, 1]


def test_add_refuses_unknown_kinds_and_invalid_skills(lib, make_skill, store):
    """Bad kinds and spec-breaking skills never reach the store."""
    with pytest.raises(UserError, match="'pasted'"):
        lib.add(TASK, make_skill(), kind="pasted")
    with pytest.raises(UserError, match="skill name"):
        lib.add(TASK, Skill(name="Bad_Name", description="d"), kind="authored")
    assert store.skills(TASK) == []


def test_source_traces_default_to_the_skills_metadata(lib, make_skill):
    """Without explicit ids, the trace ids the author recorded in metadata are used."""
    row = lib.add(TASK, make_skill(metadata={"traces": "a,b"}), kind="authored")
    assert row.source_trace_ids == ["a", "b"]


def _in_state(lib, make_skill, state: str) -> int:
    """A fresh version of TASK in `state`; returns its version."""
    if state == "retired":
        old = lib.add(TASK, make_skill(), kind="authored").version
        lib.approve(TASK, old, by="r")
        lib.retire(TASK, old, by="r")
        return old
    version = lib.add(TASK, make_skill(), kind="authored").version
    if state == "approved":
        lib.approve(TASK, version, by="r")
    elif state == "rejected":
        lib.reject(TASK, version, by="r")
    return version


ACTIONS = {"approve": "approved", "reject": "rejected", "retire": "retired"}
LEGAL = {("draft", "approve"), ("draft", "reject"), ("approved", "retire")}


@pytest.mark.parametrize("state", ["draft", "approved", "rejected", "retired"])
@pytest.mark.parametrize("action", list(ACTIONS))
def test_state_machine(lib, make_skill, state, action):
    """Every (state, action) pair: the three legal ones move the version; the rest are named and refused."""
    version = _in_state(lib, make_skill, state)
    verb = getattr(lib, action)
    if (state, action) in LEGAL:
        row = verb(TASK, version, by="bob")
        assert row.status == ACTIONS[action] and row.reviewed_by == "bob" and row.reviewed_at is not None
    else:
        with pytest.raises(UserError) as err:
            verb(TASK, version, by="bob")
        assert f"{state} -> {ACTIONS[action]} is not allowed" in str(err.value)
        assert lib.get(TASK, version).status == state


def test_approving_retires_the_previous_approval(lib, make_skill):
    """A task has one approved skill: approving v2 retires v1, recording who and when."""
    lib.add(TASK, make_skill(), kind="authored")
    lib.add(TASK, make_skill(body="# v2\n"), kind="authored")
    lib.approve(TASK, 1, by="ann")
    row = lib.approve(TASK, 2, by="bob", evidence={"agreement": 1.0})
    old = lib.get(TASK, 1)
    assert (old.status, old.reviewed_by, old.review_note) == ("retired", "bob", "superseded by v2")
    assert lib.approved(TASK).version == 2 and row.evidence == {"agreement": 1.0}


def test_default_versions_pick_the_newest_draft_or_the_approved(lib, make_skill):
    """approve/reject without a version take the newest draft; retire takes the approved one."""
    with pytest.raises(UserError, match="has no draft skill to approve: it has no skills yet"):
        lib.approve(TASK, by="r")
    first = SkillLibrary.to_skill(lib.add(TASK, make_skill(), kind="authored"))
    lib.add(TASK, first.model_copy(update={"body": "# v2\n"}), kind="revised")  # both made from v1: they carry it
    lib.add(TASK, first.model_copy(update={"body": "# v3\n"}), kind="revised")
    lib.reject(TASK, 3, by="r")
    assert lib.approve(TASK, by="r").version == 2
    assert lib.reject(TASK, by="r").version == 1
    with pytest.raises(UserError, match=r"no draft skill to reject: its newest is v3 \(rejected\)"):
        lib.reject(TASK, by="r")
    assert lib.retire(TASK, by="r", note="stale").version == 2
    with pytest.raises(UserError, match="no skill version 9"):
        lib.get(TASK, 9)


def test_edit_is_a_new_draft_version(lib, make_skill):
    """An edit stores the reviewer's text as a new draft (kind 'edited'); files and sources carry over."""
    base = make_skill(files={"examples/a.md": "A"})
    lib.add(TASK, base, kind="authored", source_trace_ids=["t1"])
    lib.approve(TASK, by="ann")
    shown = SkillLibrary.to_skill(lib.latest(TASK)).render()  # what a reviewer sees, version/status included
    row = lib.edit(TASK, shown.replace("1. Read the input.", "1. Read the whole input."), by="ann")
    assert (row.version, row.status, row.kind, row.author_model) == (2, "draft", "edited", "human:ann")
    assert row.files == {"examples/a.md": "A"} and row.source_trace_ids == ["t1"]
    assert "Read the whole input." in row.text and "status: approved" not in row.text
    assert lib.approved(TASK).version == 1


def test_an_edit_that_changes_nothing_stores_no_version(lib, make_skill, store):
    """`skill show > SKILL.md` then `skill edit -f SKILL.md` unchanged stored a copy as v2: refused now."""
    lib.add(TASK, make_skill(), kind="authored")
    shown = SkillLibrary.to_skill(lib.latest(TASK)).render()
    with pytest.raises(UserError, match="changes nothing in skill .* v1"):
        lib.edit(TASK, shown, by="ann")
    assert len(store.skills(TASK)) == 1


def test_invalid_edit_stores_nothing(lib, make_skill, store):
    """An edit that breaks the spec is refused and no version is added."""
    lib.add(TASK, make_skill(), kind="authored")
    with pytest.raises(UserError, match="'owner' is not allowed"):
        lib.edit(TASK, "---\nname: extract-order\ndescription: d\nowner: me\n---\nx\n", by="ann")
    with pytest.raises(UserError, match="no skill to edit"):
        lib.edit("other_task", "---\nname: a\ndescription: d\n---\n", by="ann")
    assert len(store.skills(TASK)) == 1


def _exact(expected, actual) -> float:
    return 1.0 if expected == actual else 0.0


def test_evidence_gate_measures_agreement(lib):
    """Agreement is the mean score; passing needs agreement >= promote_at and at least one answer."""
    pairs = [(1, 1), (2, 2), (3, 0), (4, 4)]
    assert lib.evidence_gate(TASK, pairs, _exact, 0.75) == {
        "agreement": 0.75,
        "n": 4,
        "passed": True,
        "promote_at": 0.75,
    }
    assert lib.evidence_gate(TASK, pairs, _exact, 0.8)["passed"] is False
    assert lib.evidence_gate(TASK, [], _exact, 0.0) == {"agreement": None, "n": 0, "passed": False, "promote_at": 0.0}
    with pytest.raises(UserError, match="score of task 'extract_order' failed on answer 0"):
        lib.evidence_gate(TASK, [(1, None)], lambda e, a: e + a, 0.5)


def test_approve_on_evidence_stores_the_evidence_either_way(lib, make_skill):
    """Passing evidence approves the draft; failing evidence leaves it a draft with the numbers on it."""
    lib.add(TASK, make_skill(), kind="authored")
    row = lib.approve_on_evidence(TASK, 1, [(1, 1), (2, 0)], _exact, 0.9)
    assert row.status == "draft" and row.evidence["agreement"] == 0.5 and row.evidence["passed"] is False
    lib.add(TASK, make_skill(body="# better\n"), kind="revised")
    row = lib.approve_on_evidence(TASK, None, [(1, 1), (2, 2)], _exact, 0.9)
    assert (row.version, row.status, row.reviewed_by) == (2, "approved", "policy:evidence")
    assert row.evidence == {"agreement": 1.0, "n": 2, "passed": True, "promote_at": 0.9, "failed": []} | {
        "tried_at": row.evidence["tried_at"]
    }


def test_send_back_retires_and_reopens_review(lib, make_skill):
    """Sending back retires the approved skill and puts the same content up as the newest draft."""
    first = lib.add(TASK, make_skill(), kind="authored")
    lib.approve(TASK, by="ann")
    draft = lib.send_back(TASK, by="policy:shadow", note="agreement 0.7")
    assert lib.approved(TASK) is None and lib.get(TASK, 1).status == "retired"
    assert (draft.version, draft.status, draft.text, draft.kind) == (2, "draft", first.text, "authored")
    assert "agreement 0.7" in draft.review_note
    with pytest.raises(UserError, match="no approved skill to send back"):
        lib.send_back(TASK, by="policy:shadow")


def test_approving_the_newest_draft_never_goes_back_past_the_approved(lib, make_skill):
    """v4 approved and older drafts v2, v3 left unreviewed: approve without a version took v3 (retiring v4), then
    v2. It refuses instead, naming the approved version; a named older version still goes back."""
    for body in ("# v1\n", "# v2\n", "# v3\n", "# v4\n"):
        lib.add(TASK, make_skill(body=body), kind="authored")
    lib.approve(TASK, 4, by="ann")
    with pytest.raises(UserError, match=r"v4 is approved and newer than every draft .*name a version"):
        lib.approve(TASK, by="r")
    assert lib.approved(TASK).version == 4 and lib.get(TASK, 3).status == "draft"
    assert lib.approve(TASK, 3, by="r").version == 3 and lib.get(TASK, 4).status == "retired"
    lib.add(TASK, make_skill(body="# v5\n"), kind="authored")
    assert lib.approve(TASK, by="r").version == 5  # a draft newer than the approved one: approved by default


def test_an_edit_records_the_version_it_was_made_from(lib, make_skill):
    """`skill show -v 1 > f; skill edit -f f` while v2 existed stored an edit of v2's files, and nothing said it
    came from v1: the version the text names (or the TUI's `base`) is the edit's base, kept as `revises`."""
    lib.add(TASK, make_skill(files={"examples/a.md": "A"}), kind="authored")
    lib.approve(TASK, by="ann")
    v1 = SkillLibrary.to_skill(lib.get(TASK, 1))
    lib.add(TASK, v1.model_copy(update={"body": "# v2\n", "files": {}}), kind="revised")
    assert lib.base(lib.get(TASK, 2)).version == 1  # read from v1 (`to_skill`), so made from it
    edit = lib.edit(TASK, v1.render().replace("Read the input.", "Read all of it."), by="dana")
    assert (edit.version, lib.base(edit).version, edit.files) == (3, 1, {"examples/a.md": "A"})
    plain = v1.model_copy(update={"metadata": {}}).render()  # no `version:` line: the newest, unless `base`
    assert lib.base(lib.edit(TASK, plain.replace("# ", "# A ", 1), by="dana")).version == 3
    assert lib.base(lib.edit(TASK, plain.replace("# ", "# B ", 1), by="dana", base=2)).version == 2
    with pytest.raises(
        UserError, match="says `protege-version: 9`, but task 'extract_order' has no v9; remove that line"
    ):
        lib.edit(TASK, v1.render().replace("protege-version: '1'", "protege-version: '9'"), by="dana")


def test_approving_by_default_never_passes_over_another_pending_draft(lib, make_skill):
    """v1 approved, a reviewer's edit v2 and a teacher's revision v3, both made from v1: `approve` took v3 and
    the edit was silently dropped. It refuses, naming both; a named version is approved. A draft the newest was
    made from is carried by it, and field programs' drafts are not awaiting anyone."""
    lib.add(TASK, make_skill(), kind="authored")
    lib.approve(TASK, by="ann")
    v1 = SkillLibrary.to_skill(lib.get(TASK, 1))
    lib.edit(TASK, v1.render().replace("Read the input.", "HUMAN-EDIT"), by="dana")
    lib.add(TASK, v1.model_copy(update={"body": "# revised\n"}), kind="revised", author_model="m")
    with pytest.raises(UserError) as err:
        lib.approve(TASK, by="r")
    assert str(err.value).startswith(
        "task 'extract_order' has 2 drafts awaiting review, made apart: v3 (revised by m from v1), v2 (edited by "
        "human:dana from v1); approving the newest would pass over the others. Name the one to approve (-v 3"
    )
    assert lib.approved(TASK).version == 1
    assert lib.approve(TASK, 2, by="r").version == 2
    v2 = SkillLibrary.to_skill(lib.get(TASK, 2))
    lib.edit(TASK, v2.render().replace("HUMAN-EDIT", "HUMAN-EDIT, again"), by="dana")  # v4, from v2
    lib.edit(TASK, SkillLibrary.to_skill(lib.get(TASK, 4)).render() + "more\n", by="dana")  # v5, from v4
    lib.add(TASK, make_skill(body="# programs\n"), kind="induced")  # v6
    assert lib.approve(TASK, 5, by="r").version == 5 and lib.get(TASK, 4).status == "draft"
    lib.edit(TASK, SkillLibrary.to_skill(lib.get(TASK, 5)).render() + "last\n", by="dana")  # v7, from v5
    assert lib.approve(TASK, by="r").version == 7  # v6 (induced) passed over: it serves unreviewed


def test_an_edit_of_an_edit_is_approved_by_default(lib, make_skill):
    """No approved version yet: the authored v1, then an edit of it; approving by default takes the edit."""
    lib.add(TASK, make_skill(), kind="authored")
    shown = SkillLibrary.to_skill(lib.get(TASK, 1)).render()
    lib.edit(TASK, shown.replace("Read the input.", "Read all of it."), by="dana")
    assert lib.approve(TASK, by="r").version == 2


def _induced_copy(lib) -> SkillRow:
    """A field programs' version, as `save_programs` stores one: a copy of its base with the programs' files."""
    from protege.programs.stored import base_skill

    skill = base_skill(lib, TASK, "Extract the order.")
    return lib.add(
        TASK, skill.model_copy(update={"files": {**skill.files, "scripts/fields.json": "{}"}}), kind="induced"
    )


def test_rejected_text_is_never_the_base_of_a_field_programs_version(lib, make_skill):
    """A reviewer rejected every draft; field programs stored a new version copying the newest one (rejected), and
    the next version copied that copy. A program version builds on the approved or pending text only."""
    lib.add(TASK, make_skill(body="# REJECT_ME\n"), kind="authored")
    lib.reject(TASK, by="strict")
    first = _induced_copy(lib)
    assert "REJECT_ME" not in first.text and "Extract the order." in SkillLibrary.to_skill(first).description
    lib.add(TASK, make_skill(body="# PENDING\n"), kind="authored")
    assert "PENDING" in _induced_copy(lib).text  # a draft awaiting review is carried
    lib.reject(TASK, 3, by="strict")
    assert "PENDING" not in _induced_copy(lib).text  # ... and not the copy of it once it is rejected


def test_approve_without_a_version_takes_the_draft_awaiting_review(lib, make_skill):
    """`skill approve TASK` approved a field programs' copy (the newest draft), which `pending` leaves out; it
    takes the newest pending draft, and refuses, naming the copy, when only such copies are drafts."""
    lib.add(TASK, make_skill(body="# Written\n"), kind="authored")
    _induced_copy(lib)
    assert lib.approve(TASK, by="ann").version == 1
    lib.add(TASK, make_skill(body="# REJECT_ME\n"), kind="authored")
    _induced_copy(lib)
    assert lib.reject(TASK, by="ann").version == 3
    with pytest.raises(UserError, match=r"no draft awaiting review .* v4 is a field programs' version.*-v 4"):
        lib.approve(TASK, by="ann")
    assert lib.approved(TASK).version == 1


def test_a_minimal_program_version_points_to_long_instructions_instead_of_copying_them(lib):
    """With no skill yet, a program version's SKILL.md copied the docstring into its body: the replay prompt has it
    already, and a long one broke the body budget (no program version could be stored)."""
    from protege.programs.stored import base_skill

    doc = "Extract the order. " + "A long rule about order emails. " * 1000
    skill = base_skill(lib, TASK, doc)
    assert "A long rule" not in skill.body and skill.description.startswith("Extract the order.")
    assert lib.add(TASK, skill, kind="induced").version == 1
