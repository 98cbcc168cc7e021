"""Where each tier's model and context come from: the app's implementation of the cascade's `TierSource`.

Eligibility lookups (promoted student, approved skill, prior art) run on every call, so they are cached for a
couple of seconds; changes made through this app invalidate at once, changes from other processes show up
within the TTL (protege.store.read_cache).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from protege.agents.budget import ALL_TASKS, BudgetedModel
from protege.agents.cascade import StudentPick, TaskEntry, TaskRuntime
from protege.agents.models.base import Model, resolve_model
from protege.agents.models.chat_format import trained_prompt
from protege.distill.gate import stored_gate
from protege.distill.prune import is_pruned
from protege.distill.redact import redact
from protege.errors import LocalModelUnavailable, MissingKeyError, UserError
from protege.skills.skill import replay_text
from protege.store.read_cache import ReadCache

if TYPE_CHECKING:
    from protege.agents.pricing import PriceTable
    from protege.programs.service import ProgramService
    from protege.settings import Settings
    from protege.skills.library import SkillLibrary
    from protege.store import Store, StudentRow

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_CHECKED_MODELS = 64
"""Model objects remembered as checked; past this the memo starts over (only an app that swaps models often)."""


class TierHost(Protocol):
    """What the tiers read of the app (the facade; they never import it)."""

    settings: Settings
    store: Store
    skills: SkillLibrary
    prices: PriceTable
    teacher_spec: str | Model
    replay_spec: str | Model

    @property
    def tasks(self) -> Mapping[str, TaskEntry]: ...
    @property
    def programs(self) -> ProgramService: ...  # made after the tiers: read only once calls run
    def base_dir(self, base: str) -> Path: ...


class AppTiers:
    """Resolves models lazily (a missing API key only matters when that tier is used) and caches them."""

    def __init__(self, app: TierHost):
        self.app = app
        self._models: dict[str, Model] = {}
        self._checked: dict[int, Model] = {}  # Model objects found to be models, by id (held: ids stay theirs)
        self._cache: ReadCache[tuple[str, str], Any] = ReadCache()
        self._lock = threading.Lock()
        self._unloadable: dict[str, str] = {}  # task -> why its promoted student cannot load in this process
        self._hosts: dict[str, dict[str, Any]] = {}  # "local:<id>" -> the serving record its loaded model follows

    # -- cache -------------------------------------------------------------------------------------------------

    def _cached(self, key: tuple[str, str], load: Callable[[], T]) -> T:
        return self._cache.get(key, load)

    def invalidate(self, task: str | None = None) -> None:
        self._cache.invalidate(None if task is None else lambda key: key[1] != task)
        if task is None:
            self._unloadable.clear()
        else:
            self._unloadable.pop(task, None)
        programs = getattr(self.app, "programs", None)
        if programs is not None and task is not None:
            programs.invalidate(task)

    # -- models ------------------------------------------------------------------------------------------------

    def model(self, spec: str | Model) -> Model:
        if not isinstance(spec, str):
            # the runtime Protocol check costs ~12 µs and the teacher object is the same on every call: check it once
            if self._checked.get(id(spec)) is not spec:
                if len(self._checked) >= MAX_CHECKED_MODELS:
                    self._checked.clear()
                self._checked[id(spec)] = resolve_model(spec)
            return spec
        with self._lock:
            if spec not in self._models:
                self._models[spec] = self._resolve(spec)
            return self._models[spec]

    def _resolve(self, spec: str) -> Model:
        if not spec.startswith("local:"):
            return resolve_model(spec)
        from protege.agents.models.local import LocalModel

        target = spec.removeprefix("local:")
        row = self.app.store.student(target)
        if row is not None:  # torch, llama.cpp or an OpenAI-compatible server, per the student's serving record
            from protege.services.serving import student_model

            handle = self.app.tasks.get(row.task_name)
            copy = handle.spec.policy.copy_constraint if handle is not None else True
            return student_model(
                row, self.app.base_dir, project_dir=self.app.settings.project_dir, copy_constraint=copy
            )
        return LocalModel(self.app.base_dir(target), name=spec)

    def _follow_host(self, row: StudentRow) -> None:
        """Drop the student's loaded model when its serving record changed since it was loaded: another process
        (`protege students serve`) moved it, and this one reads the row again each cache period."""
        from protege.services.serving import serving_of

        spec, host = f"local:{row.id}", serving_of(row)
        with self._lock:
            if self._hosts.get(spec, host) != host:
                self._models.pop(spec, None)
                log.info("student %s: now served by %s", row.id, host.get("host"))
            self._hosts[spec] = host

    def forget_student(self, row: StudentRow) -> None:
        """Drop the student's loaded model and cached pick: its serving host changed."""
        with self._lock:
            self._models.pop(f"local:{row.id}", None)
        self.invalidate(row.task_name)

    def _role_model(self, role: str, spec: str | Model) -> Model:
        try:
            return self.model(spec)
        except MissingKeyError as exc:
            name = spec if isinstance(spec, str) else spec.name
            raise MissingKeyError(exc.provider, exc.env_var, role=role, spec=name) from None

    def teacher(self, task: TaskRuntime) -> Model:
        model = self._role_model("teacher", self.app.teacher_spec)
        caps = {
            task.spec.name: task.spec.policy.teacher_budget_usd,
            ALL_TASKS: self.app.settings.teacher_budget_usd_per_day,
        }
        if all(cap is None for cap in caps.values()):
            return model
        return BudgetedModel(model, self.app.store, task.spec.name, caps, self.app.prices)

    def replay(self, task: TaskRuntime) -> Model:
        return self._role_model("replay", self.app.replay_spec)

    def student(self, task: TaskRuntime, *, forced: bool) -> StudentPick | None:
        name = task.spec.name
        if name in self._unloadable and not forced:
            return None
        try:
            pick = self._cached(("student", name), lambda: self._pick(self.app.store.promoted_student(name)))
        except LocalModelUnavailable as exc:  # files gone or moved: the calls go on to replay and teacher
            if forced:
                raise
            self.student_unavailable(task, exc)
            return None
        if pick is None and forced:
            rows = [r for r in self.app.store.students(name) if not is_pruned(r)]  # a pruned one has no weights
            pick = self._pick(rows[0] if rows else None)
        return pick

    def _pick(self, row: StudentRow | None) -> StudentPick | None:
        """The student's model and its gate, read once per cache period rather than on every call."""
        if row is None:
            return None
        self._follow_host(row)
        gate = stored_gate(row.metrics)
        return StudentPick(
            self.model(f"local:{row.id}"),
            row.id,
            gate.min_confidence if gate else None,
            (row.metrics or {}).get("field_accuracy"),
            trained_prompt(row.params),
        )

    def student_unavailable(self, task: TaskRuntime, exc: Exception) -> None:
        """The promoted student cannot load here (its files, base or engine missing): its calls skip it until
        the task's tiers change (a promotion, a new serving host), and a warning says so once."""
        name = task.spec.name
        if self._unloadable.get(name) != str(exc):
            log.warning("task %r: the student is not served in this process, its calls escalate: %s", name, exc)
        self._unloadable[name] = str(exc)

    def skill(self, task: TaskRuntime, *, forced: bool) -> tuple[str, int] | None:
        name, policy = task.spec.name, task.spec.policy
        row = self._cached(("skill", name), lambda: self.app.skills.approved(name))
        if row is None and policy.allow_unapproved_skills:
            # the newest draft awaiting review only: a text a reviewer rejected or retired is never replayed, nor a
            # field programs' draft ("induced"), which copies a text that may have been rejected since
            row = self._cached(("draft", name), lambda: next(iter(self.app.skills.pending(name)), None))
        return (replay_text(row.text), row.version) if row is not None else None

    def programs(self, task: TaskRuntime) -> Any:
        """The task's field programs (induced, and authored ones where they verify better) when its policy serves
        them, else None."""
        return self.app.programs.serving(task.spec.name) if task.spec.policy.program else None

    def prior_art(self, task: TaskRuntime) -> list[str]:
        name = task.spec.name

        def load() -> list[str]:
            if not task.spec.policy.prior_art or self.app.store.skill(name) is not None:
                return []
            try:
                found = self.app.store.search_skills(task.spec.instructions, exclude_task=name, limit=2)
                # redacted under this task's policy too: another task's skill must not weaken it
                return [redact(row.text, task.spec.policy.redact)[0] for row, _ in found]
            except UserError:
                return []

        return self._cached(("prior", name), load)

    def cost(self, model: Model, usage: Any) -> float:
        return self.app.prices.cost(getattr(model, "price_as", None) or model.name, usage)
