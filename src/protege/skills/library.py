"""The skill library: immutable versions of each task's skill, their review states, retrieval and skill folders.

States: draft -> approved | rejected; approved -> retired. Approving a version retires the one approved before it,
in the same transaction, so a task has at most one approved skill — the one replay uses.

A row's `text` is the SKILL.md without the two fields the row owns, its version and status; `to_skill(row)` adds
them back to `metadata` as `protege-version` and `protege-status` (namespaced: a skill's own `version`, as in the
spec's example `version: "1.0"`, is kept as the skill's), and that is what `export` writes. Skills exported before
the keys were namespaced (plain `version`/`status` beside `task`) still import as before. An edit, a revision, or
any version stored from a `to_skill` copy names the version it was made from in metadata `revises`: approving by
default refuses to pass over a pending draft the newest one was not made from.

What is reviewed: `pending_drafts`, the drafts newer than the approved version, less field programs' copies
("induced"). Approving or rejecting without a version takes the newest of those; versions protege builds itself
copy `content_base` (the approved version, else the newest pending draft), never a rejected or retired text.

Imports: each folder is validated (spec rules, folder name == skill name, no symlinks, no path escapes) before
anything is stored, and all are stored in one transaction — all or nothing. An import keeps the version number
written in its metadata when that number is newer than the task's newest version (so export -> import -> export is
byte-for-byte the same); otherwise it gets the next number. Imported skills arrive as drafts: a skill folder is
untrusted text that will steer a model. Only with `trust=True` does a folder whose metadata says
`status: approved` arrive approved (recorded as approved by the importer). Importing content a task already has
(same SKILL.md apart from version/status, same files) returns that version instead of adding a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from protege.errors import StoreError, UserError
from protege.skills.exemplar import OWNED_KEYS, ROW_KEYS
from protege.skills.folders import (
    check_export_target,
    make_export_dir,
    read_skill_folder,
    skill_folders,
    write_skill_folder,
)
from protege.skills.skill import STATUS_KEY, VERSION_KEY, Skill
from protege.store.models import SkillRow, utcnow

MAX_FAILED_CASES = 5  # failing evidence cases kept on a draft, for its revision
KINDS = ("authored", "exemplar", "revised", "edited", "imported", "induced")
TRANSITIONS = {("draft", "approved"), ("draft", "rejected"), ("approved", "retired")}
ALLOWED = "draft -> approved | rejected, approved -> retired"


class SkillLibrary:
    """Versions, reviews, retrieval and folders of skills, over a `Store`."""

    def __init__(self, store: Any):
        self.store = store

    # -- reading -----------------------------------------------------------------------------------------------

    def latest(self, task: str) -> SkillRow | None:
        return self.store.skill(task)

    def approved(self, task: str) -> SkillRow | None:
        """The task's approved skill (the newest, should there ever be two): what replay uses."""
        return self.store.skill(task, status="approved")

    def get(self, task: str, version: int) -> SkillRow:
        row = self.store.skill(task, version=version)
        if row is None:
            raise UserError(f"task {task!r} has no skill version {version!r}; list them with `protege skills`")
        return row

    def versions(self, task: str) -> list[SkillRow]:
        """Every version of the task's skill, newest first."""
        return self.store.skills(task)

    def content_base(self, task: str) -> SkillRow | None:
        """The version protege builds a new one on (field programs' versions copy its text and files): the approved
        one, else the newest draft awaiting review. Never a rejected or retired version, nor a field program's copy
        (which may carry a text rejected since it was copied)."""
        versions = self.versions(task)
        approved = next((v for v in versions if v.status == "approved"), None)
        return approved or next(iter(pending_drafts(versions)), None)

    @staticmethod
    def to_skill(row: SkillRow) -> Skill:
        """The row as a Skill, with its version and status in metadata (`protege-version`, `protege-status`)."""
        skill = Skill.parse(row.text, files=dict(row.files or {}))
        meta = {k: v for k, v in skill.metadata.items() if k not in ROW_KEYS}
        return skill.model_copy(update={"metadata": {**meta, VERSION_KEY: str(row.version), STATUS_KEY: row.status}})

    # -- writing -----------------------------------------------------------------------------------------------

    def add(
        self,
        task: str,
        skill: Skill,
        *,
        kind: str | None = None,
        source_trace_ids: Sequence[str] | None = None,
        author_model: str = "",
    ) -> SkillRow:
        """Store `skill` as the task's next version, a draft."""
        kind = kind or skill.kind or "authored"
        if kind not in KINDS:
            raise UserError(f"skill kind {kind!r} is not one of {', '.join(KINDS)}")
        meta = {"task": task, "kind": kind, **({"model": author_model} if author_model else {})}
        if skill.version is not None:  # read from a stored version (`to_skill`): the version it builds on
            meta["revises"] = str(skill.version)
        stored = _stored(skill, meta)
        ids = list(source_trace_ids) if source_trace_ids is not None else _trace_ids(stored)
        return self.store.add_skill(
            _row(
                task,
                stored,
                kind=kind,
                source_trace_ids=ids,
                author_model=author_model or stored.metadata.get("model", ""),
            )
        )

    def edit(self, task: str, text: str, *, by: str, base: int | None = None) -> SkillRow:
        """A reviewer's edit of the SKILL.md: a new draft version (kind 'edited', metadata `revises` naming the
        version it was made from); extra files carry over from that version. The base is `base`, else the
        `version:` the text carries (`skill show` writes it), else the newest version."""
        source = self._edit_base(task, text, base)
        skill = Skill.parse(text, files=dict(source.files or {}))
        if _same_content(skill, Skill.parse(source.text, files=dict(source.files or {}))):
            raise UserError(
                f"the edit changes nothing in skill {task!r} v{source.version} (the version it was made from); no "
                f"new version was stored"
            )
        meta = {"task": task, "kind": "edited", "model": f"human:{by}", "revises": str(source.version)}
        stored = _stored(skill, meta)
        sources = list(source.source_trace_ids or [])
        return self.store.add_skill(
            _row(task, stored, kind="edited", source_trace_ids=sources, author_model=f"human:{by}")
        )

    def _edit_base(self, task: str, text: str, base: int | None) -> SkillRow:
        if base is None:
            base = Skill.parse(text).version  # the version `skill show` wrote into the file
            if base is not None and self.store.skill(task, version=base) is None:
                raise UserError(
                    f"the edited SKILL.md says `{VERSION_KEY}: {base}`, but task {task!r} has no v{base}; remove "
                    f"that line to edit the newest version, or list versions with `protege skills {task}`"
                )
        if base is not None:
            return self.get(task, base)
        newest = self.latest(task)
        if newest is None:
            raise UserError(f"task {task!r} has no skill to edit; one is written after the teacher's first success")
        return newest

    # -- review ------------------------------------------------------------------------------------------------

    def approve(self, task: str, version: int | None = None, *, by: str, evidence: dict | None = None) -> SkillRow:
        """Approve a draft (default: the newest draft awaiting review, `pending_drafts`, when no other draft awaits
        review beside it); the previously approved version is retired."""
        if version is not None:
            return self._transition(self.get(task, version), "approved", by=by, evidence=evidence)
        row = self._awaiting_review(task, "approve")
        self._refuse_skipping(row)
        return self._transition(row, "approved", by=by, evidence=evidence)

    def reject(self, task: str, version: int | None = None, *, by: str, note: str | None = None) -> SkillRow:
        """Reject a draft (default: the newest draft awaiting review, `pending_drafts`, else the newest draft: one
        left behind by a newer approval)."""
        if version is None:
            pending = self.pending(task)
            row = pending[0] if pending else self._pick(task, None, "draft", "reject")
        else:
            row = self.get(task, version)
        return self._transition(row, "rejected", by=by, note=note)

    def retire(self, task: str, version: int | None = None, *, by: str, note: str | None = None) -> SkillRow:
        """Retire an approved skill (default: the approved one); replay stops using it."""
        return self._transition(self._pick(task, version, "approved", "retire"), "retired", by=by, note=note)

    def evidence_gate(
        self,
        task: str,
        replay_answers: Sequence[tuple[Any, Any]],
        score: Callable[[Any, Any], float],
        promote_at: float,
    ) -> dict[str, Any]:
        """Agreement of replay answers with the teacher's (mean `score`), and whether it reaches `promote_at`."""
        return _gate(_scores(task, replay_answers, score), promote_at)

    def approve_on_evidence(
        self,
        task: str,
        version: int | None,
        replay_answers: Sequence[tuple[Any, Any]],
        score: Callable[[Any, Any], float],
        promote_at: float,
        *,
        by: str = "policy:evidence",
        cases: Sequence[dict[str, str]] = (),
    ) -> SkillRow:
        """Approve a draft when replay agreement reaches `promote_at`; the evidence is stored on it either way, with
        when it was taken (`tried_at`) and, of `cases` (each answer pair's trace ids, {"replay": .., "teacher": ..},
        in the same order), those the replay got wrong (`failed`): what a revision of the draft learns from."""
        row = self.get(task, version) if version is not None else self._awaiting_review(task, "approve")
        scores = _scores(task, replay_answers, score)
        failed = [case for case, s in zip(cases, scores) if s < 1][:MAX_FAILED_CASES]
        evidence = {**_gate(scores, promote_at), "tried_at": utcnow().isoformat(), "failed": failed}
        if evidence["passed"]:
            return self._transition(row, "approved", by=by, evidence=evidence)
        return self.store.update_skill(row.id, evidence=evidence)

    def send_back(self, task: str, *, by: str, note: str | None = None) -> SkillRow:
        """Take the approved skill out of service and put the same content up for review again.

        The approved version is retired (replay stops using it) and a copy becomes the newest draft, with `note`
        saying why — what a falling shadow agreement does. Returns the new draft.
        """
        row = self._pick(task, None, "approved", "send back")
        self._transition(row, "retired", by=by, note=note)
        content = Skill.parse(row.text, files=dict(row.files or {}))
        return self.store.add_skill(
            _row(
                task,
                content,
                kind=row.kind,
                source_trace_ids=list(row.source_trace_ids or []),
                author_model=row.author_model,
                review_note=f"sent back from v{row.version}: {note or 'for review'}",
            )
        )

    # -- retrieval ---------------------------------------------------------------------------------------------

    def related(self, task: str, query_text: str, limit: int = 3) -> list[SkillRow]:
        """Approved skills of other tasks that match `query_text` best (full-text search), best first."""
        if not query_text.strip():
            return []
        hits = self.store.search_skills(query_text, status="approved", exclude_task=task, limit=limit)
        return [row for row, _rank in hits]

    # -- folders -----------------------------------------------------------------------------------------------

    def export(self, dest_dir: str | Path, task: str | None = None, *, force: bool = False) -> list[Path]:
        """Write approved skills as Agent Skills folders dest/<name>/SKILL.md (+ files); returns the folders.
        A skill folder already there is refused (nothing is written) unless `force`, which replaces it whole."""
        if task is not None:
            row = self.approved(task)
            if row is None:
                raise UserError(
                    f"task {task!r} has no approved skill to export; approve one with `protege skill approve`"
                )
            rows = [row]
        else:
            rows = list({r.task_name: r for r in reversed(self.store.skills(status="approved"))}.values())
        skills = [self.to_skill(r) for r in rows]
        names = [s.name for s in skills]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise UserError(
                f"skills of different tasks share the folder name {clash[0]!r}; rename one before exporting"
            )
        dest = Path(dest_dir)
        make_export_dir(dest)
        for skill in skills:  # every folder checked before any is written: all or nothing
            check_export_target(dest, skill.name, replace=force)
        return [write_skill_folder(dest, s, replace=force) for s in skills]

    def import_dir(
        self, src_dir: str | Path, *, by: str, trust: bool = False, known_only: bool = False
    ) -> list[SkillRow]:
        """Validate every skill folder under `src_dir` (or `src_dir` itself), then store them all or none.
        `known_only`: refuse skills for tasks not registered in the store (replay would never use them)."""
        folders = skill_folders(Path(src_dir))
        skills = [read_skill_folder(f) for f in folders]
        tasks = [s.task for s in skills]
        dup = sorted({t for t in tasks if tasks.count(t) > 1})
        if dup:
            raise UserError(f"two skill folders under {str(src_dir)!r} are for the same task {dup[0]!r}; keep one")
        if known_only:
            self._require_known(tasks, src_dir)
        try:
            with self.store.session() as session:
                rows = [_import_one(session, s, by=by, trust=trust, origin=str(f)) for s, f in zip(skills, folders)]
                session.commit()
                for row in rows:
                    session.refresh(row)
                return rows
        except IntegrityError as exc:
            raise StoreError(f"importing skills from {str(src_dir)!r} collided with another writer; retry") from exc

    # -- helpers -----------------------------------------------------------------------------------------------

    def _require_known(self, tasks: list[str], src_dir: str | Path) -> None:
        unknown = next((t for t in tasks if self.store.task(t) is None), None)
        if unknown is None:
            return
        known = ", ".join(t.name for t in self.store.tasks()) or "none yet"
        raise UserError(
            f"a skill folder under {str(src_dir)!r} is for task {unknown!r}, which is not in the store (tasks: "
            f"{known}); nothing was imported. Register the task with @app.task and call it, or set the task in "
            f"the SKILL.md's `metadata: task:`"
        )

    def _pick(self, task: str, version: int | None, status: str, verb: str) -> SkillRow:
        if version is not None:
            return self.get(task, version)
        row = self.store.skill(task, status=status)
        if row is None:
            newest = self.latest(task)
            has = f"its newest is v{newest.version} ({newest.status})" if newest else "it has no skills yet"
            raise UserError(f"task {task!r} has no {status} skill to {verb}: {has}")
        return row

    def _awaiting_review(self, task: str, verb: str) -> SkillRow:
        """The draft a review without a version decides on: the newest of `pending_drafts`, the same list
        `protege skills` and the review screens offer. A field program's copy ("induced") is not one: it copies a
        text that may have been rejected since."""
        pending = self.pending(task)
        if pending:
            return pending[0]
        draft = self._pick(task, None, "draft", verb)  # refuses when the task has no draft at all
        self._refuse_going_back(draft)
        raise UserError(
            f"task {task!r} has no draft awaiting review (`protege skills {task}` lists its versions): "
            f"v{draft.version} is a field programs' version (kind {draft.kind!r}), a copy of another version's text "
            f"rather than a skill to review; name it (-v {draft.version}, or version={draft.version}) to {verb} it "
            f"anyway"
        )

    def _refuse_going_back(self, draft: SkillRow) -> None:
        """Approving the newest draft by default must never replace a newer approved version: an older draft left
        unreviewed would silently take over from it (and approving again would go back one more)."""
        approved = self.approved(draft.task_name)
        if approved is not None and approved.version > draft.version:
            raise UserError(
                f"task {draft.task_name!r}: v{approved.version} is approved and newer than every draft (the newest "
                f"is v{draft.version}); name a version (-v {draft.version}, or version={draft.version}) to go back"
            )

    def pending(self, task: str) -> list[SkillRow]:
        """Drafts a reviewer has yet to decide on, newest first (`pending_drafts`)."""
        return pending_drafts(self.versions(task))

    def base(self, row: SkillRow) -> SkillRow | None:
        """The version `row` was made from (its metadata `revises`), if it names one that exists."""
        version = revises(row)
        return self.store.skill(row.task_name, version=version) if version is not None else None

    def _refuse_skipping(self, draft: SkillRow) -> None:
        """Approving the newest draft by default must not pass over another draft awaiting review (a reviewer's
        edit overtaken by a teacher's revision of the approved version was silently dropped). Drafts the newest
        was made from are not passed over: it carries them."""
        rows = {r.version: r for r in self.versions(draft.task_name)}
        carried: set[int] = set()
        version: int | None = draft.version
        while version is not None and version not in carried and version in rows:
            carried.add(version)
            version = revises(rows[version])
        others = [r for r in self.pending(draft.task_name) if r.version not in carried]
        if not others:
            return
        task, drafts = draft.task_name, [draft, *others]
        listed = ", ".join(f"v{r.version} ({_origin(r)})" for r in drafts)
        raise UserError(
            f"task {task!r} has {len(drafts)} drafts awaiting review, made apart: {listed}; approving the newest "
            f"would pass over the others. Name the one to approve (-v {draft.version}, or version={draft.version}) "
            f"and reject the rest, or edit one to take in the other's changes"
        )

    def _transition(
        self, row: SkillRow, to: str, *, by: str, note: str | None = None, evidence: dict | None = None
    ) -> SkillRow:
        if (row.status, to) not in TRANSITIONS:
            raise UserError(
                f"skill {row.task_name!r} v{row.version} is {row.status!r}: {row.status} -> {to} is not allowed "
                f"(allowed: {ALLOWED}); make a new version with an edit instead"
            )
        now = utcnow()
        values: dict[str, Any] = {"status": to, "reviewed_by": by, "reviewed_at": now, "review_note": note}
        if evidence is not None:
            values["evidence"] = evidence
        with self.store.engine.begin() as conn:  # one transaction: the check-and-set and the retirement
            done = conn.execute(
                update(SkillRow).where(col(SkillRow.id) == row.id, col(SkillRow.status) == row.status).values(**values)
            ).rowcount
            if done != 1:
                raise StoreError(f"skill {row.task_name!r} v{row.version} changed while being reviewed; reload, retry")
            if to == "approved":
                conn.execute(_retire_approved(row.task_name, row.id, by=by, note=f"superseded by v{row.version}"))
        return self.get(row.task_name, row.version)


def _stored(skill: Skill, meta: dict[str, str]) -> Skill:
    """The skill as stored: protege's fields set, the row-owned version/status taken out (the skill's own
    `version` or `status`, if any, kept), validated."""
    rest = {k: v for k, v in skill.metadata.items() if k not in ROW_KEYS}
    rest.update(meta)
    return Skill(**{**skill.model_dump(), "metadata": rest}).validate()


def _scores(task: str, replay_answers: Sequence[tuple[Any, Any]], score: Callable[[Any, Any], float]) -> list[float]:
    scores = []
    for i, (expected, actual) in enumerate(replay_answers):
        try:
            scores.append(float(score(expected, actual)))
        except Exception as exc:
            raise UserError(f"score of task {task!r} failed on answer {i} ({actual!r}): {exc}") from exc
    return scores


def _gate(scores: list[float], promote_at: float) -> dict[str, Any]:
    agreement = sum(scores) / len(scores) if scores else None
    passed = agreement is not None and agreement >= promote_at
    return {"agreement": agreement, "n": len(scores), "passed": passed, "promote_at": promote_at}


def _row(task: str, skill: Skill, **fields: Any) -> SkillRow:
    return SkillRow(
        task_name=task,
        name=skill.name,
        description=skill.description,
        text=skill.render(),
        files=dict(skill.files),
        **fields,
    )


def _trace_ids(skill: Skill) -> list[str]:
    return [t for t in skill.metadata.get("traces", "").split(",") if t]


def _retire_approved(task: str, keep_id: int | None, *, by: str, note: str) -> Any:
    return (
        update(SkillRow)
        .where(col(SkillRow.task_name) == task, col(SkillRow.status) == "approved", col(SkillRow.id) != keep_id)
        .values(status="retired", reviewed_by=by, reviewed_at=utcnow(), review_note=note)
    )


def _import_one(session: Any, skill: Skill, *, by: str, trust: bool, origin: str) -> SkillRow:
    task = skill.task
    stored = _stored(skill, {"task": task})
    text, files = stored.render(), dict(stored.files)
    existing = list(
        session.scalars(select(SkillRow).where(col(SkillRow.task_name) == task).order_by(col(SkillRow.version).desc()))
    )
    approve = trust and skill.status == "approved"
    same = next((r for r in existing if r.text == text and dict(r.files or {}) == files), None)
    if same is not None:  # already here: importing twice adds nothing
        if approve and same.status == "draft":
            session.execute(_retire_approved(task, same.id, by=by, note="superseded by an import"))
            same.status, same.reviewed_by, same.reviewed_at = "approved", by, utcnow()
            same.review_note = f"approved on trusted import from {origin}"
            session.add(same)
        return same
    newest = existing[0].version if existing else 0
    wanted = skill.version
    row = _row(
        task,
        stored,
        kind="imported",
        source_trace_ids=_trace_ids(stored),
        author_model=stored.metadata.get("model", ""),
        review_note=f"imported by {by} from {origin}",
    )
    row.version = wanted if wanted is not None and wanted > newest else newest + 1
    if approve:
        session.execute(_retire_approved(task, None, by=by, note="superseded by an import"))
        row.status, row.reviewed_by, row.reviewed_at = "approved", by, utcnow()
    session.add(row)
    session.flush()
    return row


def pending_drafts(versions: list[SkillRow]) -> list[SkillRow]:
    """Of a task's versions (newest first), the drafts a reviewer has yet to decide on: those newer than the
    approved version (all of them when none is approved). Field programs' drafts ("induced") are left out: their
    programs serve unreviewed, and their text is a copy of another version (or, before any skill is written, a
    pointer to the task's instructions)."""
    approved = next((v for v in versions if v.status == "approved"), None)
    floor = approved.version if approved is not None else 0
    return [r for r in versions if r.status == "draft" and r.kind != "induced" and r.version > floor]


def revises(row: SkillRow) -> int | None:
    """The version a stored version was made from (its metadata `revises`), or None when it names none."""
    try:
        value = Skill.parse(row.text).metadata.get("revises", "")
    except UserError:  # an old or hand-made row that is not valid SKILL.md
        return None
    return int(value) if value.isdigit() else None


def _origin(row: SkillRow) -> str:
    """'edited by human:dana from v1', 'revised by anthropic:claude-opus-4-5 from v1': for a refusal's list."""
    by = f" by {row.author_model}" if row.author_model else ""
    base = revises(row)
    return f"{row.kind}{by}" + (f" from v{base}" if base is not None else "")


def _same_content(a: Skill, b: Skill) -> bool:
    """Whether two skills say the same (protege's own metadata aside: an edit restamps its kind and author; the
    skill's own metadata, an author or version of its own, counts)."""
    return _content(a) == _content(b)


def _content(skill: Skill) -> dict[str, Any]:
    own = {k: v for k, v in skill.metadata.items() if k not in OWNED_KEYS + ROW_KEYS}
    return {**skill.model_dump(exclude={"metadata"}), "metadata": own}


__all__ = ["KINDS", "SkillLibrary", "TRANSITIONS", "pending_drafts", "revises"]
