"""Teacher-written programs in the program tier (issue 17 wired into issue 22's tier).

Once a task with `Policy(program=True)` has `program_min_traces` validated teacher traces and the app has an author
(`Protege(program_author="teacher" | spec | Model)`, off by default: authoring spends teacher money), the author
writes `solve(**inputs)` in the background; protege verifies it per field on traces the author never saw
(skills.program_author) and stores it as a skill version: scripts/solve.py plus scripts/solve.json (its record).

Serving, per output field, whichever program verified better on held-out traces: the induced one (in-process, no
arbitrary code) or the authored one (in the app's sandbox); ties go to the induced program. The sandbox is asked
only for the fields the authored program wins. A sandbox failure (exception, timeout, crash, bad answer) leaves
those fields to the next tier and is recorded on the call's program attempt; the app keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol

from protege.errors import UserError
from protege.programs.interpret import REFUSED
from protege.programs.stored import base_skill, shadow_verdict
from protege.skills.program_author import PROGRAM_FILE
from protege.store.read_cache import ReadCache

if TYPE_CHECKING:
    from protege.agents.cascade import TaskEntry, TaskRuntime
    from protege.agents.models.base import Model
    from protege.programs.verify import ProgramSet
    from protege.skills.library import SkillLibrary
    from protege.store import Store

log = logging.getLogger("protege")
RECORD_FILE = "scripts/solve.json"
SERVE_TIMEOUT_S = 1.0  # a verified program answers in milliseconds; a call past this is a failure, not slowness
REGROW = 2.0  # write again when the teacher traces have doubled and some field is still unverified
MAX_TRACES = 400  # newest teacher traces the author is shown a sample of and verified on


@dataclass
class AuthoredProgram:
    """A stored authored program and its held-out record, per field."""

    source: str
    field_agreement: dict[str, float]
    verified: list[str]
    held_out: int = 0
    failed_cases: int = 0  # held-out cases the kept program got wrong or failed on
    author: str = ""
    written_by: str = "model"
    traces: int = 0  # valid teacher traces when it was written
    created_at: str = ""
    reason: str = ""  # why no field is served any more (shadow disagreement), when so

    @property
    def by(self) -> str:
        """Who wrote it, as people read it (a FunctionModel author is never passed off as a model)."""
        kind = "function" if self.written_by == "function" else "model"
        return f"written by {self.author or 'an unnamed author'}" + (" (a function)" if kind == "function" else "")

    def record(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "source"}, indent=1)

    @classmethod
    def from_files(cls, files: dict[str, str]) -> AuthoredProgram | None:
        source, record = files.get(PROGRAM_FILE), files.get(RECORD_FILE)
        if not source or not record:
            return None
        try:
            data = json.loads(record)
            return cls(source=source, **{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            log.warning("%s could not be read; the authored program is not served", RECORD_FILE)
            return None


SUPERSEDED = "superseded by"  # the review note of a version retired by a later approval (skills.library)
PROGRAM_METADATA = "program-"  # with_program's metadata keys (program-fields, program-agreement, ...)


def stored_authored(store: Any, task: str, *, reviewed: bool = False) -> AuthoredProgram | None:
    """The authored program in service: the newest one stored in a version a reviewer did not reject whose
    program is in service (`in_service`). With `reviewed` (`Policy.program_review`), only once a reviewer
    approved it."""
    versions = store.skills(task)
    for row in versions:
        if row.status == "rejected":
            continue
        found = AuthoredProgram.from_files(row.files or {})
        if found is not None and in_service(versions, row, reviewed=reviewed):
            return found
    return None


def last_written(store: Any, task: str) -> AuthoredProgram | None:
    """The newest authored program stored for the task, in service or not (when to write again goes by it)."""
    for row in store.skills(task):
        found = AuthoredProgram.from_files(row.files or {})
        if found is not None:
            return found
    return None


def in_service(versions: list[Any], row: Any, *, reviewed: bool = False) -> bool:
    """Whether the authored program `row` carries may serve: its provenance decides, not where copies of it went.
    Rejecting the version that wrote it takes it out, whatever later versions copied it (an edit, a revision, an
    older store's field-program version); so does a reviewer retiring (or sending back) a version that carries
    it, until a version carrying it is approved again. A version retired because a later one was approved is not
    taken out: that is a verdict on the skill's text, and the program keeps its own (the shadow checks'
    demotion). With `reviewed`, a version carrying it must have been approved."""
    copies = [v for v in versions if _program_key(v) == _program_key(row)]
    writer = min(copies, key=lambda v: v.version)  # each write stores a new record: later holders are copies
    approved = any(v.status == "approved" for v in copies)
    if writer.status == "rejected" or (reviewed and not any(v.status in ("approved", "retired") for v in copies)):
        return False
    pulled = any(v.status == "retired" and not _superseded(v) for v in copies)
    return approved or not pulled


def _superseded(row: Any) -> bool:
    """Retired because a later version was approved (not by a reviewer's retire or send-back)."""
    return row.status == "retired" and (row.review_note or "").startswith(SUPERSEDED)


def _program_key(row: Any) -> tuple[str | None, str | None]:
    files = row.files or {}
    return files.get(PROGRAM_FILE), files.get(RECORD_FILE)


def without_authored(skill: Any) -> Any:
    """`skill` without an authored program (scripts/solve.py, its record and metadata): what a version that does
    not write one (field programs') stores, so the program's own version alone decides whether it serves."""
    files = {k: v for k, v in skill.files.items() if k not in (PROGRAM_FILE, RECORD_FILE)}
    metadata = {k: v for k, v in skill.metadata.items() if not k.startswith(PROGRAM_METADATA)}
    return skill.model_copy(update={"files": files, "metadata": metadata})


def choose(induced: ProgramSet | None, authored: AuthoredProgram | None) -> dict[str, str]:
    """Per served field, its source: "induced" or "authored" (the better held-out accuracy; ties: induced)."""
    choice = {name: "induced" for name in (induced.served if induced is not None else {})}
    if authored is None:
        return choice
    for name in authored.verified:
        mine = authored.field_agreement.get(name, 0.0)
        theirs = induced.fields.get(name) if induced is not None else None
        if theirs is None or not theirs.promoted or (theirs.accuracy or 0.0) < mine:
            choice[name] = "authored"
    return choice


@dataclass
class FieldChoice:
    """What the cascade asks once per call: the fields programs decide, and any sandbox failure to record."""

    induced: ProgramSet | None
    authored: AuthoredProgram
    sandbox: Any
    choice: dict[str, str]
    output_fields: list[str]
    timeout_s: float = SERVE_TIMEOUT_S
    sandbox_fields: list[str] = field(init=False)
    induced_fields: list[str] = field(init=False)

    @property
    def skill_version(self) -> int | None:
        """The skill version the induced programs were read from (the authored one is recorded in the same skill)."""
        return self.induced.skill_version if self.induced is not None else None

    def __post_init__(self) -> None:
        self.sandbox_fields = [f for f, src in self.choice.items() if src == "authored"]
        self.induced_fields = [f for f, src in self.choice.items() if src == "induced"]

    def field_accuracy(self) -> dict[str, float]:
        """Held-out accuracy of the program serving each field (induced or authored, as chosen)."""
        induced = self.induced.field_accuracy() if self.induced is not None else {}
        return {
            f: self.authored.field_agreement.get(f, 0.0) if src == "authored" else induced.get(f, 0.0)
            for f, src in self.choice.items()
        }

    async def adecide(self, data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        from protege.skills.program_run import arun_program

        values: dict[str, Any] = {}
        induced = self.induced.fields if self.induced is not None else {}
        for name in self.induced_fields:  # only the fields the induced programs serve: no work thrown away
            value = induced[name].apply(data)
            if value is not REFUSED:
                values[name] = value
        try:
            answer = await arun_program(
                self.sandbox,
                self.authored.source,
                data,
                self.sandbox_fields,
                self.output_fields,
                timeout_s=self.timeout_s,
            )
        except Exception as exc:  # the sandbox itself broke (closed, could not restart): the models answer
            return values, [f"authored program: sandbox error {type(exc).__name__}: {exc}"[:500]]
        if not answer.ok:
            fields = ", ".join(self.sandbox_fields)
            return values, [
                f"authored program {answer.kind or 'failed'}: {answer.error or ''}"[:400]
                + f" (fields {fields} left to the next tier)"
            ]
        return {**values, **answer.fields}, []


def authored_markdown(induced: ProgramSet | None, authored: AuthoredProgram) -> str:
    """The authored program's per-field record as markdown (the TUI's skill preview)."""
    choice = choose(induced, authored)
    lines = [
        f"### Authored program (scripts/solve.py), {authored.by}",
        "",
        f"Verified on {authored.held_out} teacher traces the author was not shown; {authored.failed_cases} "
        "held-out cases wrong or failed.",
        "",
        "| field | held-out accuracy | verified | served by |",
        "|---|---|---|---|",
    ]
    for name, value in authored.field_agreement.items():
        lines.append(
            f"| {name} | {value:.1%} | {'yes' if name in authored.verified else 'no'} | {choice.get(name, '–')} |"
        )
    return "\n".join(lines) + "\n"


class AuthorModels(Protocol):
    """The tiers: the models an author writes with, and the cache that forgets a task's programs."""

    def teacher(self, task: TaskRuntime) -> Model: ...
    def model(self, spec: str | Model) -> Model: ...
    def invalidate(self, task: str | None = None) -> None: ...


class AuthorLedger(Protocol):
    """The lifecycle, which records an author's model calls as paid traces."""

    async def record_author(self, task: TaskRuntime, author: Any) -> None: ...


class AuthorHost(Protocol):
    """What the authored-program service uses of the app (the facade; programs never import it)."""

    store: Store
    skills: SkillLibrary

    @property
    def tiers(self) -> AuthorModels: ...
    @property
    def lifecycle(self) -> AuthorLedger: ...
    def handle(self, task: str) -> TaskEntry: ...


class AuthoredPrograms:
    """The app's authored-program service: one lazily started Sandbox, background writing, per-field serving."""

    def __init__(self, app: AuthorHost, author: Any = None):
        if author is not None and not isinstance(author, str) and not hasattr(author, "request"):
            raise UserError(
                f"Protege(program_author={author!r}) must be None (off), 'teacher', a model spec "
                f"string like 'anthropic:claude-opus-4-5', or a Model object"
            )
        self.app, self.author = app, author
        self._sandbox: Any = None
        self._unavailable: str | None = None
        self._cache: ReadCache[str, AuthoredProgram | None] = ReadCache()
        self._busy: set[str] = set()
        self._written: dict[str, int] = {}  # teacher traces at each task's last authoring in this process

    # -- sandbox -----------------------------------------------------------------------------------------------

    def sandbox(self) -> Any:
        """The app's Sandbox, started on first use; None where it cannot run here (logged once)."""
        if self._sandbox is not None or self._unavailable is not None:
            return self._sandbox
        from protege.sandbox import Sandbox, SandboxUnavailable

        try:
            self._sandbox = Sandbox().start()
        except SandboxUnavailable as exc:
            self._unavailable = str(exc)
            log.warning("authored programs are not served or written in this process: %s", exc)
        return self._sandbox

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    # -- serving -----------------------------------------------------------------------------------------------

    def current(self, task: str) -> AuthoredProgram | None:
        return self._cache.get(task, lambda: stored_authored(self.app.store, task, reviewed=self._reviewed(task)))

    def _reviewed(self, task: str) -> bool:
        """Whether the task's policy holds authored programs back until a reviewer approves them."""
        try:
            return self.app.handle(task).spec.policy.program_review
        except UserError:  # not registered in this process: the store's rule alone
            return False

    def invalidate(self, task: str) -> None:
        self._cache.invalidate(lambda key: key != task)

    def serving(self, task: str, induced: ProgramSet | None) -> Any:
        """What the program tier serves for a task: the induced set alone, or a FieldChoice with the sandbox."""
        authored = self.current(task)
        if authored is None:
            return induced
        choice = choose(induced, authored)
        if "authored" not in choice.values() or self.sandbox() is None:
            return induced
        fields = list(self.app.handle(task).spec.output_model.model_fields)
        return FieldChoice(induced, authored, self._sandbox, choice, fields)

    def demote_if_disagreeing(self, task: TaskRuntime) -> bool:
        """Take the authored program out of service when the teacher's shadow answers on program-served calls
        since it was written agree less than `Policy.demote_below` (the rule induced programs and students
        follow): a new skill version whose record verifies no field, the reason kept beside it."""
        name = task.spec.name
        program = self.current(name)
        if program is None or not program.verified:
            return False
        why = shadow_verdict(self.app.store, task, program.created_at)
        if why is None:
            return False
        log.warning("task %r: the authored program is %s", name, why)
        demoted = replace(program, verified=[], reason=why, created_at=_now())
        skill = base_skill(self.app.skills, name, task.spec.instructions)
        skill = skill.model_copy(  # the source too: a record without it is not read, and the base may lack it
            update={
                "files": {**skill.files, PROGRAM_FILE: demoted.source, RECORD_FILE: demoted.record()},
                "metadata": {**skill.metadata, "program-fields": ""},
            }
        )
        self.app.skills.add(name, skill, kind="authored", author_model=program.author)
        self.invalidate(name)
        return True

    # -- writing -----------------------------------------------------------------------------------------------

    def due(self, task: TaskRuntime) -> bool:
        policy, name = task.spec.policy, task.spec.name
        if self.author is None or not policy.program or self._unavailable is not None:
            return False
        n = self.app.store.count_traces(name, tier="teacher", valid=True, shadow=False)
        if n < policy.program_min_traces:
            return False
        last = self._written.get(name)
        if last is None:
            stored = self.current(name)
            if stored is not None and set(stored.verified) >= set(task.spec.output_model.model_fields):
                return False
            # one a reviewer took out counts too: rejecting it must not have it written again on the next call
            written = stored or last_written(self.app.store, name)
            if written is None:
                return True
            last = written.traces
        return n >= max(last, 1) * REGROW

    async def maybe_write(self, task: TaskRuntime) -> None:
        """Write when due (the program service calls this beside induction); failures are logged, never raised."""
        name = task.spec.name
        if self.author is None or name in self._busy:
            return
        self._busy.add(name)
        try:
            if await asyncio.to_thread(self.due, task):
                await self.write(task)
        except Exception:
            log.exception("program authoring for task %r failed", name)
        finally:
            self._busy.discard(name)

    async def write(self, task: TaskRuntime) -> Any:
        """Author, verify and store (when any field verifies); every author call is recorded as a paid trace."""
        from protege.skills.program_author import ProgramAuthor

        name, store = task.spec.name, self.app.store
        sandbox = await asyncio.to_thread(self.sandbox)
        if sandbox is None:
            raise UserError(f"no sandbox for authored programs here: {self._unavailable}")
        traces = await asyncio.to_thread(store.traces, name, tier="teacher", valid=True, shadow=False, limit=MAX_TRACES)
        self._written[name] = len(traces)
        author = ProgramAuthor(self._model(task), sandbox)
        latest = await asyncio.to_thread(self.app.skills.latest, name)
        try:
            result = await author.write(
                task.spec, traces, skill=latest.text if latest else None, promote_at=task.spec.policy.promote_at
            )
        finally:
            await self.app.lifecycle.record_author(task, author)  # paid work, recorded whatever happened next
        verdict = result.report().splitlines()[0]
        if not (result.source and result.fields_verified):  # paid for and refused: say so where people look
            log.warning("task %r: the written program verifies no field and is not served (%s)", name, verdict)
        else:
            log.info("task %r: %s", name, verdict)
        if result.source and result.fields_verified:
            await asyncio.to_thread(self._save, task, result, len(traces))
        return result

    def _model(self, task: TaskRuntime) -> Any:
        if self.author == "teacher":
            return self.app.tiers.teacher(task)  # budgeted like any teacher call
        return self.app.tiers.model(self.author)

    def _save(self, task: TaskRuntime, result: Any, traces: int) -> None:
        from protege.skills.program_author import with_program

        program = AuthoredProgram(
            source=result.source,
            field_agreement=result.field_agreement,
            verified=result.fields_verified,
            held_out=result.held_out,
            failed_cases=len(result.failures),
            author=result.author_model,
            written_by=result.written_by,
            traces=traces,
            created_at=_now(),
        )
        skill = with_program(base_skill(self.app.skills, task.spec.name, task.spec.instructions), result)
        skill = skill.model_copy(update={"files": {**skill.files, RECORD_FILE: program.record()}})
        self.app.skills.add(
            task.spec.name,
            skill,
            kind="authored",
            author_model=result.author_model,
            source_trace_ids=result.shown_trace_ids,
        )
        self.app.tiers.invalidate(task.spec.name)


def _now() -> str:
    from datetime import datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = [
    "RECORD_FILE",
    "AuthoredProgram",
    "AuthoredPrograms",
    "FieldChoice",
    "authored_markdown",
    "choose",
    "in_service",
    "last_written",
    "stored_authored",
    "without_authored",
]
