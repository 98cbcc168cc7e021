"""What happens around calls: skills written by the teacher, approved on evidence, revised after a rescue,
and taken out of service when shadow agreement drops."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, Usage


class Q(BaseModel):
    text: str


class A(BaseModel):
    label: str


def right(req) -> ModelResponse:
    return ModelResponse(
        text=json.dumps({"label": req.task_input["q"]["text"].upper()}), usage=Usage(input_tokens=500, output_tokens=50)
    )


def wrong(req) -> ModelResponse:
    return ModelResponse(text=json.dumps({"label": "nope"}), usage=Usage(input_tokens=500, output_tokens=50))


SKILL_MD = """---
name: shout
description: Upper-cases the text of the input. Use for the shout task.
---
# Procedure
Return the input text in upper case as `label`.
"""


def prose_teacher(req) -> ModelResponse:
    """Writes a SKILL.md when asked to author one, else answers like `right`."""
    if req.task_name and req.task_name.startswith("protege:"):
        return ModelResponse(text=SKILL_MD, usage=Usage(input_tokens=3000, output_tokens=400))
    return right(req)


def make(tmp_path, teacher, replay, policy: Policy, prose: bool = False) -> tuple[Protege, object]:
    app = Protege(
        db=f"sqlite:///{tmp_path}/l.db",
        seed=7,
        teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5", writes_prose=prose),
        replay=FunctionModel(replay, price_as="anthropic:claude-haiku-4-5"),
    )

    @app.task(policy=policy)
    def shout(q: Q) -> A:
        """Upper-case the text."""

    return app, shout


def test_a_field_programs_draft_does_not_stand_in_for_a_written_skill(tmp_path):
    """Field programs store their own draft ("induced"; before any skill, the docstring alone). An author job cut
    short by a crash and resumed after induction found "a draft awaiting review" and ended: no SKILL.md ever."""
    from protege.skills.skill import Skill

    app, shout = make(tmp_path, right, right, Policy(program=False))
    stub = Skill(name="shout", description="Upper-case the text.", body="Upper-case the text.\n")
    app.skills.add("shout", stub, kind="induced")
    shout(Q(text="a"))
    app.wait()
    assert [(v.version, v.kind) for v in app.store.skills("shout")] == [(2, "exemplar"), (1, "induced")]
    shout(Q(text="b"))  # a written draft now awaits review: no second one
    app.wait()
    assert len(app.store.skills("shout")) == 2
    app.close()


def test_no_second_author_while_another_process_writes_the_skill(tmp_path):
    """Two workers on one store each wrote a skill (two author bills): a skill job another live process holds
    (another host's, its lease running) keeps this one from starting its own; once it lapses, this one writes."""
    app, shout = make(tmp_path, right, right, Policy(program=False))
    job = app.store.add_job("shout", "skill", {"trace_id": "t"}, owner="otherhost:41:tok", lease_s=60)
    shout(Q(text="a"))
    app.wait()
    assert app.store.skills("shout") == []
    app.store.finish_job(job.id)  # the other process is done (its skill would be in the store)
    shout(Q(text="b"))
    app.wait()
    assert len(app.store.skills("shout")) == 1
    app.close()


def test_a_process_whose_check_raced_another_does_not_write_a_second_skill(tmp_path):
    """Both workers' checks ran before either had stored its job row, so both passed and each paid an author
    (1-3 author calls per fresh store in a 4-process trial): writing takes the store lease "skill-author:TASK",
    and a job that finds another live process holding it leaves the skill to that one."""
    from protege.services.lifecycle import AUTHOR_LEASE

    app, shout = make(tmp_path, right, right, Policy(program=False))
    assert app.store.acquire_lease(AUTHOR_LEASE + "shout", owner="otherhost:41:tok", ttl_s=60)
    shout(Q(text="a"))
    app.wait()
    assert app.store.skills("shout") == [] and app.store.jobs("shout") == []  # the job ended: the skill is theirs
    app.store.release_lease(AUTHOR_LEASE + "shout", owner="otherhost:41:tok")
    shout(Q(text="b"))
    app.wait()
    assert len(app.store.skills("shout")) == 1
    app.close()


def test_successes_that_arrive_together_start_one_author(tmp_path, monkeypatch):
    """The task's author slot is taken before the cross-process check awaits the store: taken after it, two
    successes of one moment both passed the check and wrote two skills (the demo's test caught it under load)."""
    import asyncio
    import time

    app, shout = make(tmp_path, right, right, Policy(program=False))
    elsewhere = app.lifecycle._author_elsewhere
    monkeypatch.setattr(app.lifecycle, "_author_elsewhere", lambda name: (time.sleep(0.2), elsewhere(name))[1])

    async def together():
        await asyncio.gather(*(app.arun("shout", {"q": {"text": t}}) for t in ("a", "b", "c")))

    asyncio.run(together())
    app.wait()
    assert len(app.store.skills("shout")) == 1
    app.close()


def test_skill_is_approved_on_evidence_and_replay_takes_over(tmp_path):
    """With skill_approval='evidence', the draft is approved once the replay agrees with the teacher on K inputs."""
    app, shout = make(tmp_path, right, right, Policy(skill_approval="evidence", evidence_k=3, promote_at=0.9))
    for word in ("a", "b", "c"):
        shout(Q(text=word))
        app.wait()
    skill = app.skill("shout")
    assert skill.status == "approved" and skill.reviewed_by == "policy:evidence"
    assert skill.evidence["agreement"] == 1.0 and skill.evidence["n"] == 3
    assert app.store.count_traces("shout", tier="evidence") == 3
    assert app.run("shout", {"q": {"text": "d"}}).tier == "replay"
    app.close()


def test_skill_failing_evidence_stays_a_draft(tmp_path):
    """A replay that is schema-valid but wrong does not earn approval: schema-valid is not the same as right."""
    app, shout = make(tmp_path, right, wrong, Policy(skill_approval="evidence", evidence_k=2, promote_at=0.9))
    for word in ("a", "b"):
        shout(Q(text=word))
        app.wait()
    skill = app.skill("shout")
    assert skill.status == "draft" and skill.evidence["agreement"] == 0.0 and not skill.evidence["passed"]
    assert app.run("shout", {"q": {"text": "c"}}).tier == "teacher"
    app.close()


def test_teacher_rescue_of_a_failed_replay_revises_the_skill(tmp_path):
    """When the teacher rescues an invalid replay answer, the skill gets a new draft version with that case."""
    app, shout = make(tmp_path, right, lambda r: "not json", Policy())
    shout(Q(text="a"))
    app.wait()
    app.approve_skill("shout", reviewer="ana")
    res = app.run("shout", {"q": {"text": "b"}})
    app.wait()
    assert [a.tier for a in res.attempts] == ["replay", "teacher"]
    latest = app.skill("shout")
    assert latest.version == 2 and latest.status == "draft" and latest.kind == "revised"
    assert app.skills.approved("shout").version == 1  # replay keeps the reviewed version until the revision is approved
    for word in ("c", "d", "e"):  # more rescues while that revision awaits review: no more drafts (was one each)
        app.run("shout", {"q": {"text": word}})
        app.wait()
    assert [(s.version, s.status) for s in app.store.skills("shout")][:2] == [(2, "draft"), (1, "approved")]
    app.approve_skill("shout")
    app.run("shout", {"q": {"text": "f"}})  # v2 approved: the next rescue revises it
    app.wait()
    assert app.skill("shout").version == 3 and app.skill("shout").kind == "revised"
    app.close()


def test_a_reviewers_pending_edit_is_not_overtaken_by_a_revision(tmp_path):
    """v1 approved, a reviewer's edit v2 awaiting review, then a rescued replay: the revision was made from v1 as
    v3 (never seeing v2), and `skill approve` served it, dropping the edit. No revision is written while a draft
    awaits review; after the review, the next rescue revises the version then approved."""
    app, shout = make(tmp_path, right, lambda r: "not json", Policy(program=False))
    shout(Q(text="a"))
    app.wait()
    app.approve_skill("shout", reviewer="ana")
    shown = app.skills.to_skill(app.skills.get("shout", 1)).render()
    app.skills.edit("shout", shown + "\nHUMAN-EDIT\n", by="dana")
    assert [a.tier for a in app.run("shout", {"q": {"text": "b"}}).attempts] == ["replay", "teacher"]
    app.wait()
    assert [(s.version, s.kind, s.status) for s in app.store.skills("shout")] == [
        (2, "edited", "draft"),
        (1, "exemplar", "approved"),
    ]
    assert "HUMAN-EDIT" in app.approve_skill("shout", reviewer="ana").text
    app.run("shout", {"q": {"text": "c"}})
    app.wait()
    latest = app.skill("shout")
    assert (latest.version, latest.kind, app.skills.base(latest).version) == (3, "revised", 2)
    assert "HUMAN-EDIT" in latest.text
    app.close()


def test_a_failed_revision_is_paid_for_on_the_ledger_and_not_tried_again(tmp_path):
    """A revision of a skill too close to the body budget failed (UserError) after two paid author calls: no author
    trace, no cost, and the job was retried by each later process, paying again. The calls are an invalid author
    trace with the error, the job is kept as failed after one run, and later rescues of that version revise
    nothing until a new version is approved."""

    def teacher(req) -> ModelResponse:
        if req.task_name == "protege:revise-skill":
            return ModelResponse(text="no frontmatter here", usage=Usage(input_tokens=3000, output_tokens=400))
        return prose_teacher(req)

    from protege.skills.skill import MAX_BODY_TOKENS, estimate_tokens

    app, shout = make(tmp_path, teacher, lambda r: "not json", Policy(program=False), prose=True)
    shout(Q(text="a"))
    app.wait()
    v1 = app.skills.to_skill(app.skills.get("shout", 1))
    room = MAX_BODY_TOKENS - 10 - estimate_tokens(v1.body)
    full = v1.body + "\n" + "Mind the case. " * (room // estimate_tokens("Mind the case. "))  # just under the budget
    app.skills.edit("shout", v1.model_copy(update={"body": full}).render(), by="ana")
    app.approve_skill("shout", reviewer="ana")
    app.run("shout", {"q": {"text": "b"}})
    app.wait()
    (failed,) = [t for t in app.store.traces("shout", tier="author", limit=None) if not t.valid]
    assert failed.cost_usd == pytest.approx(2 * (3000 * 5e-6 + 400 * 25e-6))
    assert "too close to the spec's body budget" in failed.errors[0]
    (job,) = app.store.jobs("shout", state=None)
    assert (job.state, job.attempts) == ("failed", 1) and job.error.startswith("UserError: skill 'shout' is too")
    app.run("shout", {"q": {"text": "c"}})  # the same version rescued again: it would fail alike, and pay again
    app.wait()
    assert len(app.store.traces("shout", tier="author", limit=None)) == 2
    assert len(app.store.jobs("shout", state=None)) == 1 and app.skill("shout").version == 2
    app.close()


def test_low_shadow_agreement_sends_the_skill_back_to_review(tmp_path):
    """Every replay call shadowed by the teacher; the sequential test takes the skill out of service after 4
    straight disagreements, without waiting for the 10-shadow window."""
    app, shout = make(tmp_path, right, wrong, Policy(shadow_rate=1.0, shadow_window=10, demote_below=0.9))
    shout(Q(text="a"))
    app.wait()
    app.approve_skill("shout", reviewer="ana")
    tiers = []
    for i in range(14):
        tiers.append(app.run("shout", {"q": {"text": f"w{i}"}}).tier)
        app.wait()
    assert tiers == ["replay"] * 4 + ["teacher"] * 10
    assert app.skills.approved("shout") is None and app.skill("shout").status == "draft"
    agreement, n = app.store.shadow_agreement("shout", "replay", window=10)
    assert n == 4 and agreement == 0.0
    assert "by a sequential test" in app.skill("shout").review_note
    app.close()


def test_prose_teacher_writes_the_skill_and_its_cost_is_on_the_ledger(tmp_path):
    """A teacher that writes prose authors SKILL.md; that call is recorded as an 'author' trace with its cost."""
    app, shout = make(tmp_path, prose_teacher, right, Policy(), prose=True)
    shout(Q(text="a"))
    app.wait()
    skill = app.skill("shout")
    assert "Return the input text in upper case" in skill.text and skill.kind == "authored"
    (author,) = app.traces("shout", tier="author")
    assert author.cost_usd == pytest.approx(3000 * 5e-6 + 400 * 25e-6)
    assert app.ledger("shout").spend_by_tier["author"] == pytest.approx(author.cost_usd)
    app.close()


def _promoted_with_shadows(tmp_path, gate, agreements, policy):
    """A promoted student (with `gate` in its metrics) and shadow answers of these agreements, then one check."""
    from protege.distill.pipeline import promote
    from protege.store import StudentRow
    from protege.store.models import ShadowRow

    app, _ = make(tmp_path, right, wrong, policy)
    gate = gate and {"min_confidence": 0.9, "retention": 0.96, "kept_quality": 0.9, **gate}
    row = app.store.add_student(StudentRow(task_name="shout", base="b", adapter_path="a", metrics={"gate": gate}))
    promote(app.store, row.id)
    for i, agreement in enumerate(agreements):
        app.store.add_shadow(
            ShadowRow(
                task_name="shout",
                run_id=f"r{i}",
                tier="student",
                trace_id=f"s{i}",
                teacher_trace_id=f"t{i}",
                agreement=agreement,
            )
        )
    app.lifecycle._check_agreement(app.handle("shout").runtime, "student")
    return app, row


@pytest.mark.parametrize(("gate", "demoted"), [(None, True), ({"coverage": 0.3}, False)])
def test_a_gated_students_shadow_agreement_counts_end_to_end(tmp_path, gate, demoted):
    """Shadow agreement 0.7 over 50 answers a student keeps demotes an ungated student (at most 0.825 < 0.9), but
    not one whose gate keeps 30% of calls and escalates the rest to the teacher: its kept answers need only
    (0.9 − 0.7) / 0.3 = 0.67."""
    app, row = _promoted_with_shadows(tmp_path, gate, ([1.0] * 7 + [0.0] * 3) * 5, Policy(demote_below=0.9))
    assert (app.store.promoted_student("shout") is None) == demoted
    if demoted:
        assert "shadow agreement 0.700 over 50 calls" in app.store.student(row.id).metrics["demoted_reason"]
    app.close()


@pytest.mark.parametrize(
    ("agreements", "demoted"), [([1.0] * 4 + [0.0] + [1.0] * 4 + [0.0], False), ([0.0] * 10, True)]
)
def test_ten_shadows_demote_only_on_evidence(tmp_path, agreements, demoted):
    """8 agreements in 10 is what a student 91% right shows often enough: the window's mean, 0.80, is under the
    bar but its upper bound (0.95) is not, so it stays (a stream student was demoted on exactly that). Ten straight
    disagreements demote."""
    app, row = _promoted_with_shadows(tmp_path, None, agreements, Policy(shadow_window=10, demote_below=0.9))
    assert (app.store.promoted_student("shout") is None) == demoted
    app.close()


def test_skills_and_the_prior_art_they_become_are_redacted_by_each_tasks_policy(tmp_path):
    """A skill's worked examples are traces' inputs: the API key (always) and, under redact="pii", the email and
    card were copied raw into SKILL.md, its export, and — as prior art — another task's teacher prompt."""
    from protege import Policy, Protege
    from protege.agents import FunctionModel

    secret = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyz"
    note = f"Refund for ann.lee@example.com, card 4111 1111 1111 1111, key {secret}"
    app = Protege(
        db=f"sqlite:///{tmp_path}/r.db",
        teacher=FunctionModel(lambda req: '{"label": "refund"}', price_as="anthropic:claude-opus-4-5"),
        project_dir=tmp_path / ".p",
    )
    try:

        @app.task(policy=Policy(program=False))  # secrets only
        def route_refund_ticket(text: str) -> Label:
            """Route a refund ticket to a queue label."""

        @app.task(policy=Policy(redact="pii", program=False))
        def route_refund_email(text: str) -> Label:
            """Route a refund email to a queue label."""

        route_refund_ticket(note)
        app.wait()
        ticket = app.approve_skill("route_refund_ticket").text
        assert "refund" in ticket.lower() and secret not in ticket and "ann.lee@example.com" in ticket
        offered = app.tiers.prior_art(app.tasks["route_refund_email"].runtime)  # under the email task's policy
        assert offered and all(secret not in t and "ann.lee" not in t and "4111 1111" not in t for t in offered)
        route_refund_email(note)
        app.wait()
        email = app.skill("route_refund_email").text
        assert secret not in email and "ann.lee@example.com" not in email and "4111 1111 1111 1111" not in email
    finally:
        app.close()


class Label(BaseModel):
    label: str


def test_after_a_rejection_the_author_waits_for_new_teacher_answers(tmp_path, monkeypatch):
    """A reviewer rejecting every draft got a new one (a new author bill) on every teacher call: 31 versions from
    70 calls. After a rejection the author waits for REAUTHOR_TRACES new teacher answers, twice as many after each
    further rejection."""
    from protege.services import lifecycle

    monkeypatch.setattr(lifecycle, "DRAFT_RECHECK_S", 0.0)
    app, shout = make(tmp_path, right, right, Policy(program=False))
    for i in range(1 + lifecycle.REAUTHOR_TRACES + 2 * lifecycle.REAUTHOR_TRACES - 1):
        shout(Q(text=f"w{i}"))
        app.wait()
        for draft in app.skills.pending("shout"):
            app.skills.reject("shout", draft.version, by="strict")
    assert len(app.store.skills("shout")) == 2  # the first answer's, and one after REAUTHOR_TRACES more
    shout(Q(text="last"))  # 2 * REAUTHOR_TRACES answers since the second rejection
    app.wait()
    assert len(app.store.skills("shout")) == 3
    app.close()


def test_unapproved_replay_never_serves_a_rejected_text_through_a_field_programs_copy(tmp_path):
    """With allow_unapproved_skills, replay served the newest draft: a field programs' copy of a rejected text. It
    serves the draft awaiting review, and none once that is rejected."""
    from protege.programs.stored import base_skill

    app, shout = make(tmp_path, right, right, Policy(program=False, allow_unapproved_skills=True))
    shout(Q(text="a"))
    app.wait()
    copy = base_skill(app.skills, "shout", "Upper-case the text.")
    app.skills.add("shout", copy.model_copy(update={"files": {"scripts/fields.json": "{}"}}), kind="induced")
    app.tiers.invalidate("shout")
    assert app.run("shout", {"q": {"text": "b"}}).tier == "replay"  # v1, awaiting review
    app.skills.reject("shout", by="strict")
    app.tiers.invalidate("shout")
    assert app.run("shout", {"q": {"text": "c"}}).tier == "teacher"
    app.close()


def test_a_draft_failing_evidence_is_revised_and_tried_again_on_new_answers(tmp_path):
    """One failed evidence trial left the task without a replay tier for good: the draft kept its evidence and no
    new draft was written while it was pending. Once evidence_k new teacher answers have come, the draft is
    revised from a case it got wrong and the revision is tried on them."""
    replay = {"answer": wrong}
    app, shout = make(
        tmp_path, right, lambda r: replay["answer"](r), Policy(skill_approval="evidence", evidence_k=2, promote_at=0.9)
    )
    for word in ("a", "b"):
        shout(Q(text=word))
        app.wait()
    failed = app.skill("shout")
    assert failed.status == "draft" and not failed.evidence["passed"] and failed.evidence["failed"]
    replay["answer"] = right
    shout(Q(text="c"))  # one new answer of the two a new trial needs
    app.wait()
    assert len(app.store.skills("shout")) == 1
    shout(Q(text="d"))
    app.wait()
    revised = app.skill("shout")
    assert (revised.version, revised.kind, revised.status) == (2, "revised", "approved")
    assert app.skills.base(revised).version == 1 and revised.evidence["passed"]
    assert app.run("shout", {"q": {"text": "e"}}).tier == "replay"
    app.close()
