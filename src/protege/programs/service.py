"""The app's field-program service: induce a task's programs from its teacher traces, store them as a skill
version (scripts/fields.py for reviewers, scripts/fields.json for protege), reload and serve them.

Programs are induced from teacher (and imported) traces only: the teacher never gets program values fixed (it is
the authority of last resort), so its traces are independent evidence; cheaper tiers' answers carry the programs'
own values.
Induction runs in the background once `Policy.program_min_traces` teacher traces exist, and again each time they
have grown by half since the last induction. One process at a time does a task's background program work (induction,
then writing an authored program): it holds the store lease `programs:<task>`, whose info keeps how many traces the
last induction read, so a process that comes next skips an induction another just made from the same traces.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Collection
from datetime import UTC
from typing import TYPE_CHECKING, Any, Protocol

from protege.programs.render import render
from protege.programs.stored import base_skill, shadow_verdict
from protege.programs.verify import ProgramSet, build
from protege.store.background import process_owner
from protege.store.read_cache import ReadCache
from protege.tasks import input_hash

if TYPE_CHECKING:
    from protege.agents.cascade import TaskEntry, TaskRuntime
    from protege.programs.authored import AuthoredPrograms
    from protege.store import Store

log = logging.getLogger("protege")
PROGRAMS_FILE = "scripts/fields.json"
RENDERED_FILE = "scripts/fields.py"
REGROW = 1.5  # induce again when the teacher traces have grown by this factor
MAX_TRACES = 1000  # newest teacher traces induction reads (time grows with them; 1,000 is plenty)
SOURCE_TIERS = ("teacher", "import")  # the answers programs are induced from: the teacher's, and imported logs
CHECK_EVERY = 10  # teacher successes between looks at whether an induction is due
LEASE_PREFIX = "programs:"  # the store lease one process holds while it induces (and writes) a task's programs
# Induction takes seconds, authoring with a real teacher minutes. A holder that died frees the lease at once on its
# own host; from another host this is how long it waits (a live holder past it may see a second process start).
LEASE_TTL_S = 600.0


class Invalidates(Protocol):
    """The tiers' cache, which forgets a task's eligibility when its programs change."""

    def invalidate(self, task: str | None = None) -> None: ...


class ProgramHost(Protocol):
    """What the program service uses of the app (the facade; programs never import it)."""

    store: Store

    @property
    def tiers(self) -> Invalidates: ...
    @property
    def authored(self) -> AuthoredPrograms: ...  # made after the service: read with getattr
    def handle(self, task: str) -> TaskEntry: ...


class ProgramService:
    def __init__(self, app: ProgramHost):
        self.app = app
        self._cache: ReadCache[str, ProgramSet | None] = ReadCache()
        self._busy: set[str] = set()
        self._last_n: dict[str, int] = {}  # teacher traces at each task's last induction in this process
        self.background = True  # induce after teacher successes when due (off: only `induce` calls do)
        self._successes: dict[str, int] = {}  # teacher successes seen per task in this process

    # -- serving -----------------------------------------------------------------------------------------------

    def current(self, task: str) -> ProgramSet | None:
        """The task's newest stored program set (from its newest skill version that carries one), or None."""
        return self._cache.get(task, lambda: stored_programs(self.app.store, task))

    def serving(self, task: str) -> Any:
        """What the program tier serves: the induced set, or per field the better of it and an authored program."""
        induced = self.current(task)
        authored = getattr(self.app, "authored", None)
        return authored.serving(task, induced) if authored is not None else induced

    def without(self, task: str, held_out: Collection[str]) -> ProgramSet:
        """What `app.distill` judges a student behind (not stored, not served): the fields the task's induced
        programs serve now, each with its program induced and verified again without the traces whose inputs hash
        to `held_out`. A field no program serves now is left to the student, even where the smaller induction
        finds one (a program that verifies on fewer traces and not on all of them must not count against it)."""
        spec = self.app.handle(task).spec
        now = self.current(task)
        programs = induce_without(
            self.app.store,
            task,
            list(spec.output_model.model_fields),
            promote_at=spec.policy.promote_at,
            held_out=held_out,
        )
        return programs.only(now.served if now is not None else (), "no program serves this field now")

    def invalidate(self, task: str) -> None:
        self._cache.invalidate(lambda key: key != task)
        authored = getattr(self.app, "authored", None)
        if authored is not None:
            authored.invalidate(task)

    # -- induction ---------------------------------------------------------------------------------------------

    def induce(self, task: str) -> ProgramSet:
        """Induce and verify the task's field programs from its valid teacher traces; store them as a new skill
        version when any field has a verified program. Returns the set (every field, with or without one)."""
        spec = self.app.handle(task).spec
        programs = induce_stored(
            self.app.store,
            task,
            list(spec.output_model.model_fields),
            promote_at=spec.policy.promote_at,
            instructions=spec.instructions,
        )
        self._last_n[task] = programs.traces
        self.app.tiers.invalidate(task)
        return programs

    def due(self, task: TaskRuntime) -> bool:
        """Whether enough new teacher traces exist for an induction."""
        policy = task.spec.policy
        if not policy.program:
            return False
        n = self.source_traces(task.spec.name)
        stored = self.current(task.spec.name)
        # the newest of this process's inductions, another's (read from the lease) and the stored set's
        last = max(self._last_n.get(task.spec.name, 0), stored.traces if stored is not None else 0)
        return n >= policy.program_min_traces and (last == 0 or n >= last * REGROW)

    def source_traces(self, task: str) -> int:
        """How many valid traces induction reads from (the teacher's and imported ones, of the current contract)."""
        store = self.app.store
        version = _current_version(store, task)
        return sum(store.count_traces(task, tier=tier, valid=True, task_version=version) for tier in SOURCE_TIERS)

    def from_every_trace(self, task: str) -> ProgramSet:
        """The task's programs induced from all its source traces (up to MAX_TRACES): the stored set when it saw
        them all, else a new induction (seconds, no model). Background induction reruns only when the traces have
        grown by half, so the stored set may have seen two thirds of them."""
        current = self.current(task)
        if current is not None and current.traces >= min(self.source_traces(task), MAX_TRACES):
            return current
        return self.induce(task)

    def check_shadows(self, task: TaskRuntime) -> None:
        """After a shadow of a program-served call: demote the programs if the teacher disagrees too often."""
        try:
            current = self.current(task.spec.name)
            demoted = bool(
                current is not None and current.served and demote_if_disagreeing(self.app.store, task, current)
            )
            authored = getattr(self.app, "authored", None)  # a program-served call may hold authored fields too
            if authored is not None and authored.demote_if_disagreeing(task):
                demoted = True
            if demoted:
                self.app.tiers.invalidate(task.spec.name)
        except Exception:
            log.exception("shadow check of the field programs of task %r failed", task.spec.name)

    async def maybe_induce(self, task: TaskRuntime) -> None:
        """Background induction (and authoring) when due, under the task's store lease; failures are logged, never
        raised into the app."""
        name = task.spec.name
        if not self.background or not task.spec.policy.program or name in self._busy:
            return
        seen = self._successes.get(name, -1) + 1
        self._successes[name] = seen
        if seen and (seen + 1) % CHECK_EVERY:  # count the store's traces now and then, not on every success
            return
        self._busy.add(name)  # one upkeep per task in this process; the store lease makes it one across processes
        try:
            if not await asyncio.to_thread(self._work_due, task):
                return  # read first: the lease is a store write, taken only when there is work to do
            if not await asyncio.to_thread(self._claim, name):
                return  # another process is inducing or writing the task's programs now
            try:
                await self._upkeep(task)
            finally:
                await asyncio.to_thread(self._release, name)
        except Exception:
            log.exception("program induction for task %r failed", name)
        finally:
            self._busy.discard(name)

    def _work_due(self, task: TaskRuntime) -> bool:
        authored = getattr(self.app, "authored", None)
        return self.due(task) or (authored is not None and authored.due(task))

    async def _upkeep(self, task: TaskRuntime) -> None:
        """Induce, then write an authored program, each when due: asked again under the lease (another process may
        have done it since the first look)."""
        if await asyncio.to_thread(self.due, task):
            await asyncio.to_thread(self.induce, task.spec.name)
        authored = getattr(self.app, "authored", None)
        if authored is not None:
            await authored.maybe_write(task)  # teacher-written programs, when the app has an author

    def _claim(self, task: str) -> bool:
        """Take the task's program lease unless another live process holds it. What the last holder induced from
        (the lease's info) counts as if this process had, and the cached programs are read again: one stored by
        another process moments ago must not be induced or written a second time."""
        store, name = self.app.store, LEASE_PREFIX + task
        before = store.lease(name)  # read first: taking the lease replaces its info
        induced = int((before.info or {}).get("induced_from") or 0) if before is not None else 0
        if not store.acquire_lease(name, owner=process_owner(), ttl_s=LEASE_TTL_S, info={"induced_from": induced}):
            return False
        self._last_n[task] = max(self._last_n.get(task, 0), induced)
        self.invalidate(task)
        return True

    def _release(self, task: str) -> None:
        info = {"induced_from": self._last_n.get(task, 0)}
        self.app.store.release_lease(LEASE_PREFIX + task, owner=process_owner(), info=info)


def stored_programs(store: Any, task: str) -> ProgramSet | None:
    for row in store.skills(task):
        if row.status in ("rejected", "retired"):
            continue
        text = (row.files or {}).get(PROGRAMS_FILE)
        if text:
            programs = ProgramSet.from_json(json.loads(text))
            programs.skill_version = row.version  # program-served traces name it
            return programs
    return None


def demote_if_disagreeing(store: Any, task: Any, programs: ProgramSet) -> ProgramSet | None:
    """Take a task's programs out of service (a new skill version with no field served) when the teacher's
    shadow answers on program-served calls agree less than `Policy.demote_below`; None when they hold."""
    from datetime import datetime

    why = shadow_verdict(store, task, programs.created_at)
    if why is None:
        return None
    log.warning("task %r: field programs %s", task.spec.name, why)
    demoted = ProgramSet.from_json(programs.to_json())
    demoted.created_at = datetime.now(UTC).isoformat(timespec="seconds")
    for fp in demoted.fields.values():
        if fp.promoted:
            fp.promoted, fp.reason = False, why
    save_programs(store, task.spec.name, demoted, instructions=task.spec.instructions, source_trace_ids=[])
    return demoted


def induce_stored(store: Any, task: str, fields: list[str], *, promote_at: float, instructions: str) -> ProgramSet:
    """Induction from the store alone (the app, or the CLI on imported traces): build, and store when any field
    has a verified program."""
    rows = _source_rows(store, task)
    programs = build(task, _examples(rows), fields, promote_at=promote_at)
    if programs.served and _served_programs(programs) != _served_programs(stored_programs(store, task)):
        save_programs(store, task, programs, instructions=instructions, source_trace_ids=[r.id for r in rows[:50]])
    return programs


def induce_without(
    store: Any, task: str, fields: list[str], *, promote_at: float, held_out: Collection[str]
) -> ProgramSet:
    """The programs induction would give without the traces whose inputs hash to `held_out` (a student's eval
    split): what the student is judged behind must not have been induced on the answers it is judged on. Not
    stored."""
    rows = [r for r in _source_rows(store, task) if (r.input_hash or input_hash(r.input or {})) not in held_out]
    return build(task, _examples(rows), fields, promote_at=promote_at)


def _source_rows(store: Any, task: str) -> list[Any]:
    """The newest valid teacher (and imported) traces of the task's current contract, up to MAX_TRACES: what
    induction reads (an earlier contract's answers may follow other instructions)."""
    version = _current_version(store, task)
    rows = [
        r
        for tier in SOURCE_TIERS
        for r in store.traces(task, tier=tier, valid=True, limit=MAX_TRACES, task_version=version)
    ]
    return sorted(rows, key=lambda r: r.created_at, reverse=True)[:MAX_TRACES]


def _current_version(store: Any, task: str) -> int | None:
    """The task's registered contract version (None for a task known only by imported traces: all of them)."""
    row = store.task(task)
    return row.version if row is not None else None


def _examples(rows: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(r.input, r.output) for r in rows if isinstance(r.input, dict) and isinstance(r.output, dict)]


def _served_programs(programs: ProgramSet | None) -> dict[str, list[Any]]:
    """What a set serves: a new version is stored only when this changes (not for new held-out counts alone)."""
    if programs is None:
        return {}
    return {name: [p.to_json() for p in fp.programs] for name, fp in programs.served.items()}


def save_programs(
    store: Any, task: str, programs: ProgramSet, *, instructions: str, source_trace_ids: list[str]
) -> Any:
    """A new skill version: the task's newest skill (or a minimal one) with the programs as extra files, less any
    authored program: a copy here would keep it serving after a reviewer rejects the version that wrote it."""
    from protege.programs.authored import without_authored
    from protege.skills.library import SkillLibrary

    library = SkillLibrary(store)
    skill = without_authored(base_skill(library, task, instructions))
    files = {
        **skill.files,
        RENDERED_FILE: render(programs),
        PROGRAMS_FILE: json.dumps(programs.to_json(), indent=1, ensure_ascii=False),
    }
    return library.add(
        task, skill.model_copy(update={"files": files}), kind="induced", source_trace_ids=source_trace_ids
    )
