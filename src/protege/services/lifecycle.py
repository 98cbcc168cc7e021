"""What happens around calls, off the caller's path: skills are written and revised after teacher successes,
approved on evidence when the policy says so, cheaper tiers are demoted when shadow agreement drops (a sequential
test, .sequential; the early drift signal raises the shadow rate, .drift_monitor), and a task is distilled again
by itself when the policy opts in (.redistill starts protege.auto_distill).

Skill upkeep runs as a durable job (.background): a row in the store before it starts, finished by the next
process if this one exits or dies first. Another kind of background work registers its own handler:
`self.work.register("kind", handler)`, then `await self.work.run(task, "kind", payload)` from a hook.

Every model call made here is paid for and recorded as a trace (tier "author" or "evidence"), so the ledger
shows the whole cost of the loop, and none of these traces ever reaches a training set.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from protege.agents.cascade import TaskEntry, TaskRuntime
from protege.agents.models.base import Usage
from protege.agents.results import Attempt
from protege.services.drift_monitor import DriftHost, DriftMonitor
from protege.services.redistill import LaunchHost
from protege.skills.skill import replay_text
from protege.store import StudentRow, TraceRow
from protege.store.background import held_elsewhere, process_owner

if TYPE_CHECKING:
    from protege.programs.service import ProgramService
    from protege.services.portal import Portal
    from protege.skills.library import SkillLibrary

log = logging.getLogger("protege")
AUTHOR_LEASE = "skill-author:"  # the store lease one process holds while it writes or revises a task's skill
AUTHOR_LEASE_TTL_S = 900.0  # a real author call takes minutes; a holder that died frees it at once on its host
AUTHOR_TRACES = 8
REAUTHOR_TRACES = AUTHOR_TRACES
"""After a reviewer rejects the task's written skill (and none is approved or awaits review), the author writes
again only once this many new valid teacher answers have come since the rejection, twice as many for each further
rejection in a row (at most MAX_REAUTHOR_TRACES): writing again on the next teacher call showed the reviewer much
the same skill from much the same answers, and paid the author for each rejection (31 versions from 70 calls)."""
MAX_REAUTHOR_TRACES = 512
FAILED_DISTILL_BACKOFF_S = 3600.0
SEQUENTIAL_SHADOWS = 500  # the newest shadows the sequential test reads (its CUSUM forgets older ones anyway)
DRAFT_RECHECK_S = 2.0  # like the tiers' cache: a fresh approval or rejection is seen within this


class LifecycleHost(DriftHost, LaunchHost, Protocol):
    """What the lifecycle uses of the app (the facade; this module never imports it)."""

    skills: SkillLibrary
    portal: Portal

    @property
    def programs(self) -> ProgramService: ...  # made after the lifecycle: read only once calls run
    def handle(self, task: str) -> TaskEntry: ...


class Lifecycle:
    def __init__(self, app: LifecycleHost):
        from protege.services.background import BackgroundWork

        self.app = app
        self._busy: set[str] = set()
        self._draft_seen: dict[str, float] = {}
        self._distill_wait: dict[str, tuple[int, float]] = {}  # task -> (traces missing, when checked)
        self.work = BackgroundWork(app.store, app.portal)
        self.work.register("skill", self._skill_job)
        self.drift = DriftMonitor(app)

    # -- skills ------------------------------------------------------------------------------------------------

    async def on_teacher_success(self, task: TaskRuntime, trace_id: str, rescued: Attempt | None) -> None:
        name = task.spec.name
        await self.app.programs.maybe_induce(task)  # field programs learn from every teacher success
        if task.spec.policy.auto_distill:
            await self.maybe_auto_distill(task)
        if self._nothing_to_do(task, rescued) or name in self._busy:
            return  # the common case, decided from the tiers' cache without touching the store
        self._busy.add(name)  # one author per task at a time (taken before any await: successes come together)
        try:
            if await asyncio.to_thread(self._author_elsewhere, name):
                return
            payload = {"trace_id": trace_id, "rescued_trace_id": rescued.trace_id if rescued else None}
            await self.work.run(task, "skill", payload)  # a job row first: paid work survives an early exit
        finally:
            self._busy.discard(name)

    def _author_elsewhere(self, name: str) -> bool:
        """Whether another live process runs a skill job for the task: one author per task across processes, as
        `_busy` is within one (two workers on one store each wrote a skill, two author bills)."""
        return any(j.kind == "skill" and held_elsewhere(j, self.work.owner) for j in self.app.store.jobs(name))

    async def _skill_job(self, task: TaskRuntime, payload: dict[str, Any]) -> None:
        """The "skill" job: write, revise or approve the task's skill as its state calls for (safe to re-run). A job
        resumed from an earlier process holds the task's author slot too: a teacher success meanwhile wrote a
        second skill beside it (two author bills)."""
        name = task.spec.name
        resumed = name not in self._busy  # a job from `on_teacher_success` runs with the slot already taken
        self._busy.add(name)
        try:
            # across processes the store lease: two workers' successes each checked for a job elsewhere before
            # either had written one, and each wrote a skill (two or three author bills, identical drafts)
            if not await asyncio.to_thread(self._claim_author, name):
                return  # another process writes the task's skill now; what this success would add, it sees
            try:
                await self._skill_step(task, payload["trace_id"], payload.get("rescued_trace_id"))
            finally:
                await asyncio.to_thread(self._release_author, name)
        finally:
            if resumed:
                self._busy.discard(name)

    def _claim_author(self, name: str) -> bool:
        return self.app.store.acquire_lease(AUTHOR_LEASE + name, owner=process_owner(), ttl_s=AUTHOR_LEASE_TTL_S)

    def _release_author(self, name: str) -> None:
        self.app.store.release_lease(AUTHOR_LEASE + name, owner=process_owner())

    def _nothing_to_do(self, task: TaskRuntime, rescued: Attempt | None) -> bool:
        """No rescue to learn from, approval not on evidence, and a skill is replayable or a draft awaits review
        (seen within the last DRAFT_RECHECK_S): no upkeep due."""
        if rescued is not None or task.spec.policy.skill_approval == "evidence":
            return False
        seen = self._draft_seen.get(task.spec.name)
        if seen is not None and time.monotonic() - seen < DRAFT_RECHECK_S:
            return True
        return self.app.tiers.skill(task, forced=False) is not None

    async def _skill_step(self, task: TaskRuntime, trace_id: str, rescued: str | None) -> None:
        from protege.skills.library import pending_drafts

        name = task.spec.name
        versions = await asyncio.to_thread(self.app.store.skills, name)  # newest first
        approved = next((v for v in versions if v.status == "approved"), None)  # as `SkillLibrary.approved`
        if rescued is not None and approved is not None:
            # a written draft awaits review (a reviewer's edit, an earlier revision): a revision is made from the
            # approved version, so written beside an edit it would pass over it (and each rescue wrote another)
            if bool(pending_drafts(versions)) or await asyncio.to_thread(self._revision_failed, name, approved):
                return
            rescue = await asyncio.to_thread(self.app.store.trace, trace_id)
            if rescue is not None:
                await self._revise(task, approved, rescued, rescue)
        elif approved is None and not pending_drafts(versions):
            if await asyncio.to_thread(self._rejected_lately, task, versions):
                self._draft_seen[name] = time.monotonic()  # waiting for new answers: don't re-query on every call
            else:
                await self._write(task)
        elif approved is None:
            self._draft_seen[name] = time.monotonic()  # a reviewer's turn: don't re-query on every teacher call
        if task.spec.policy.skill_approval == "evidence":
            await self._try_evidence(task)

    def _revision_failed(self, name: str, approved: Any) -> bool:
        """Whether a skill job ended failed since `approved` was approved (a revision too big for the spec's
        budget, say): another revision of it would most likely fail the same way, and pay the author again. The
        failure is listed by `protege tasks`; a newly approved version lets revisions start again."""
        return self._job_failed_since(name, approved.reviewed_at)

    def _job_failed_since(self, name: str, since: Any) -> bool:
        return any(
            j.kind == "skill" and (since is None or _aware(j.created_at) >= _aware(since))
            for j in self.app.store.jobs(name, state="failed")
        )

    def _rejected_lately(self, task: TaskRuntime, versions: list[Any]) -> bool:
        """Whether the skill written last was rejected and too few teacher answers have come since to write again
        (REAUTHOR_TRACES). Field programs' copies ("induced") are not written skills: they are passed over."""
        written = [v for v in versions if v.kind != "induced"]
        streak = list(itertools.takewhile(lambda v: v.status == "rejected", written))
        if not streak:
            return False
        wait = min(REAUTHOR_TRACES * 2 ** (len(streak) - 1), MAX_REAUTHOR_TRACES)
        return not self._answers_since(task, streak[0].reviewed_at, wait)

    def _answers_since(self, task: TaskRuntime, since: Any, n: int) -> bool:
        """Whether at least `n` valid teacher answers of the task's contract came after `since` (the n-th newest
        one read: a single row)."""
        nth = self.app.store.traces(
            task.spec.name, tier="teacher", valid=True, shadow=False, limit=1, offset=n - 1, task_version=task.version
        )
        return bool(nth) and (since is None or _aware(nth[0].created_at) > _aware(since))

    def _contract(self, task: TaskRuntime) -> Any:
        from protege.skills.author import TaskContract

        s = task.spec
        return TaskContract(
            name=s.name, instructions=s.instructions, input_schema=s.input_schema, output_schema=s.output_schema
        )

    async def _write(self, task: TaskRuntime) -> None:
        from protege.skills.author import SkillAuthor

        store, name = self.app.store, task.spec.name
        traces = await asyncio.to_thread(  # of this contract: an earlier one's answers may follow other instructions
            store.traces, name, tier="teacher", valid=True, shadow=False, limit=AUTHOR_TRACES, task_version=task.version
        )
        if not traces:
            return
        prior = self.app.tiers.prior_art(task)
        author = SkillAuthor(self.app.tiers.teacher(task))
        async with self._recorded(task, author):
            skill = await author.write(self._contract(task), traces, prior_art=prior)
        await asyncio.to_thread(
            self.app.skills.add,
            name,
            redacted_skill(skill, task.spec.policy.redact),
            kind=skill.kind,
            source_trace_ids=[t.id for t in traces],
            author_model=author.model.name,
        )
        self.app.tiers.invalidate(name)

    async def _revise(self, task: TaskRuntime, base: Any, rescued: str, rescue: TraceRow) -> Any:
        """A revision of `base` from the answer of trace `rescued` the teacher's `rescue` corrected; the new draft
        (None when that trace is gone)."""
        from protege.skills.author import SkillAuthor
        from protege.skills.library import SkillLibrary

        failed = await asyncio.to_thread(self.app.store.trace, rescued)
        if failed is None:
            return None
        author = SkillAuthor(self.app.tiers.teacher(task))
        async with self._recorded(task, author):
            skill = await author.revise(SkillLibrary.to_skill(base), failed, rescue)
        return await asyncio.to_thread(
            self.app.skills.add,
            task.spec.name,
            redacted_skill(skill, task.spec.policy.redact),
            kind="revised",
            source_trace_ids=[failed.id, rescue.id],
            author_model=author.model.name,
        )

    @contextlib.asynccontextmanager
    async def _recorded(self, task: TaskRuntime, author: Any) -> AsyncIterator[None]:
        """Record the author's calls whatever the block ends with: a revision that fails after two paid calls
        (its body past the spec's budget) left them off the ledger."""
        try:
            yield
        except BaseException as exc:  # cancelled at exit too: the calls made so far were paid
            await self.record_author(task, author, error=exc)
            raise
        await self.record_author(task, author)

    async def record_author(self, task: TaskRuntime, author: Any, *, error: BaseException | None = None) -> None:
        """The author's model calls are paid teacher work: record them so the ledger shows them (with `error`, as
        an invalid trace: what was paid for was not used)."""
        responses = author.last_responses
        if not responses:
            return
        usage = sum((r.usage for r in responses), Usage())
        trace = TraceRow(
            task_name=task.spec.name,
            task_version=task.version,
            tier="author",
            model=author.model.name,
            valid=error is None,
            errors=[f"{type(error).__name__}: {error}"] if error is not None else None,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_usd=sum(self.app.tiers.cost(author.model, r.usage) for r in responses),
            output_text=responses[-1].text,
        )
        await asyncio.to_thread(self.app.store.insert_trace, trace)

    async def _try_evidence(self, task: TaskRuntime) -> None:
        """Replay the draft awaiting review on K inputs the teacher solved; approve it when agreement reaches
        promote_at. A draft that failed does not stand for good (the task had no replay tier ever after): once K
        new teacher answers have come since its trial, it is revised from a case it got wrong (as a teacher rescue
        revises an approved skill) and the revision is tried on those new inputs; without a case to learn from, or
        when a revision failed, the draft itself is tried again on them."""
        lib, name = self.app.skills, task.spec.name
        pending = await asyncio.to_thread(lib.pending, name)
        if not pending:
            return
        draft, evidence = pending[0], pending[0].evidence
        if evidence:
            if evidence.get("passed") or not await asyncio.to_thread(self._evidence_due, task, evidence):
                return
            draft = await self._revise_on_evidence(task, draft, evidence) or draft
        await self._trial(task, draft)

    def _evidence_due(self, task: TaskRuntime, evidence: dict[str, Any]) -> bool:
        """Whether a failed trial is due again: K teacher answers since it (at once for one from before the trial
        time was kept)."""
        tried_at = evidence.get("tried_at")
        since = datetime.fromisoformat(tried_at) if tried_at else None
        return since is None or self._answers_since(task, since, task.spec.policy.evidence_k)

    async def _revise_on_evidence(self, task: TaskRuntime, draft: Any, evidence: dict[str, Any]) -> Any:
        """A revision of `draft` from the first case its trial got wrong, or None (no case kept, its teacher trace
        gone, or a skill job failed since the draft was made: a revision would most likely fail alike, and pay)."""
        cases = evidence.get("failed") or []
        if not cases or await asyncio.to_thread(self._job_failed_since, task.spec.name, draft.created_at):
            return None
        rescue = await asyncio.to_thread(self.app.store.trace, cases[0]["teacher"])
        if rescue is None:
            return None
        return await self._revise(task, draft, cases[0]["replay"], rescue)

    async def _trial(self, task: TaskRuntime, draft: Any) -> None:
        """Replay `draft` on the K newest inputs the teacher solved and approve it if it agrees enough; the evidence
        (with the cases it got wrong) is kept on it either way."""
        lib, store, spec = self.app.skills, self.app.store, task.spec
        k = spec.policy.evidence_k
        solved = await asyncio.to_thread(
            store.traces, spec.name, tier="teacher", valid=True, shadow=False, limit=k, task_version=task.version
        )
        if len(solved) < k:
            return  # not enough evidence yet; the next teacher success tries again
        pairs, cases = [], []
        for t in solved:
            inp = spec.input_model.model_validate(t.input)
            attempt, output = await self.app.cascade.trial(
                task,
                inp,
                "replay",
                skill=(replay_text(draft.text), draft.version),
                record_as="evidence",
                recorded=t.messages,
            )
            expected = spec.parse_output(t.output)
            pairs.append((expected, output if attempt.valid else None))
            cases.append({"replay": attempt.trace_id, "teacher": t.id})
        await asyncio.to_thread(
            lib.approve_on_evidence, spec.name, draft.version, pairs, spec.score, spec.policy.promote_at, cases=cases
        )
        self.app.tiers.invalidate(spec.name)

    # -- re-distillation ---------------------------------------------------------------------------------------

    async def maybe_auto_distill(self, task: TaskRuntime, *, now: bool = False) -> Any:
        """With Policy(auto_distill=True): start a distill in another process when one is due; returns the worker
        process, if one was started. Counts are read again only when they may have changed enough (or `now`)."""
        from protege.services.redistill import RECHECK_S, WORKER_ENV

        name = task.spec.name
        if os.environ.get(WORKER_ENV):
            return None
        missing, checked = self._distill_wait.get(name, (0, -1e9))
        if not now and missing > 1 and time.monotonic() - checked < RECHECK_S:
            self._distill_wait[name] = (missing - 1, checked)  # this success is one of the missing traces
            return None
        self._distill_wait[name] = (1 << 30, time.monotonic())  # concurrent successes wait for this check
        gap: int | None = None
        proc = None
        try:
            gap, proc = await asyncio.to_thread(self._auto_distill_step, task)
        except Exception:  # optional background work: never the caller's problem
            log.exception("auto_distill check for task %r failed", name)
        self._distill_wait[name] = (gap if gap else 1 << 30, time.monotonic())
        return proc

    def _auto_distill_step(self, task: TaskRuntime) -> tuple[int | None, Any]:
        from protege.services.redistill import distill_gap, launch, lease_name

        store, name = self.app.store, task.spec.name
        held = store.lease(lease_name(name))
        if store.lease_live(held):
            return None, None  # a distill of this task is running somewhere
        last = (held.info or {}) if held else {}
        if last.get("outcome") == "failed" and time.time() - last.get("ended_at", 0) < FAILED_DISTILL_BACKOFF_S:
            return None, None  # it failed lately (see PROJECT_DIR/logs): not again on every check
        missing, why = distill_gap(store, name, task.spec.policy)
        if missing != 0:
            return missing, None
        return None, launch(self.app, self.app.handle(name), why)

    # -- shadows -----------------------------------------------------------------------------------------------

    async def on_shadow(self, task: TaskRuntime, tier: str, agreement: float) -> None:
        if tier == "program":  # field programs keep their own record (protege.programs.service)
            await asyncio.to_thread(self.app.programs.check_shadows, task)
            return
        try:
            await asyncio.to_thread(self._check_agreement, task, tier)
        except Exception:
            log.exception("shadow check for task %r failed", task.spec.name)

    def _check_agreement(self, task: TaskRuntime, tier: str) -> None:
        """Take the tier out of service when its shadow agreement is below the bar: at once when the sequential
        test (.sequential) says so, or when the rolling `shadow_window` mean does (the older rule)."""
        store, policy, name = self.app.store, task.spec.policy, task.spec.name
        if tier == "student":
            row: StudentRow | Any = store.promoted_student(name)
            since = row.promoted_at if row else None
        else:
            row = self.app.skills.approved(name)
            since = row.reviewed_at if row else None
        if row is None:
            return
        coverage = _gate_coverage(row, policy) if tier == "student" else 1.0
        why = self._sequential_verdict(name, tier, since, coverage, policy) or self._window_verdict(
            name, tier, since, coverage, policy
        )
        if why is None:
            return
        log.warning("task %r: %s; taking the %s tier out of service", name, why, tier)
        if tier == "student":
            from protege.distill.pipeline import demote

            demote(store, name, reason=why)
            self._distill_wait.pop(name, None)  # the next teacher success looks at once
        else:
            self.app.skills.send_back(name, by="policy:shadow", note=why)
        self.app.tiers.invalidate(name)

    def _sequential_verdict(self, name: str, tier: str, since: Any, coverage: float, policy: Any) -> str | None:
        from protege.services.sequential import ALPHA, below_bar

        bar = _kept_bar(policy, coverage)
        scores = self.app.store.shadow_scores(name, tier, since=since, limit=SEQUENTIAL_SHADOWS)
        if bar <= 0 or not below_bar(scores, bar):
            return None
        mean = sum(scores) / len(scores)
        return (
            f"shadow agreement {mean:.3f} over {len(scores)} calls is below {bar:.3f} by a sequential test "
            f"(e-detector, α={ALPHA:g})"
            + (f" on the ~{coverage:.0%} of calls its gate keeps" if coverage < 1 else "")
            + f"; Policy.demote_below {policy.demote_below:.3f}"
        )

    def _window_verdict(self, name: str, tier: str, since: Any, coverage: float, policy: Any) -> str | None:
        from protege.stats import window_below

        mean, n = self.app.store.shadow_agreement(name, tier, window=policy.shadow_window, since=since)
        upper = window_below(mean, n, policy.shadow_window, _kept_bar(policy, coverage))
        if upper is None:
            return None
        why = f"shadow agreement {mean:.3f} over {n} calls (at most {upper:.3f}, 99% bound)"
        if coverage < 1:
            why += f" on the ~{coverage:.0%} of calls its gate keeps, {coverage * upper + 1 - coverage:.3f} end to end,"
        return why + f" < Policy.demote_below {policy.demote_below:.3f}"


def _aware(value: Any) -> Any:
    """SQLite gives datetimes back without their UTC zone: compare them as UTC."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def redacted_skill(skill: Any, mode: Literal["secrets", "pii"]) -> Any:
    """The skill with secrets (and personal data, under `redact="pii"`) replaced in its text, as a dataset's rows
    are: its worked examples are traces' inputs, and a skill is exported, shown to reviewers and offered to other
    tasks' teachers. Field programs (scripts/fields.*) are left whole: their literals are what every training
    text shared, and a placeholder inside a pattern would break it."""
    from protege.distill.redact import redact

    def clean(text: str) -> str:
        return redact(text, mode)[0] if text else text

    files = {path: text if path.startswith("scripts/fields") else clean(text) for path, text in skill.files.items()}
    return skill.model_copy(update={"description": clean(skill.description), "body": clean(skill.body), "files": files})


def _kept_bar(policy: Any, coverage: float) -> float:
    """The agreement a gated tier's kept answers need: the calls its gate escalates get the teacher's answer."""
    return (policy.demote_below - (1 - coverage)) / coverage if coverage > 0 else 0.0


def _gate_coverage(row: StudentRow, policy: Any) -> float:
    """Share of calls a gated student keeps (by its calibration); 1 when it has no gate or the policy sets one."""
    from protege.distill.gate import stored_gate

    gate = stored_gate(row.metrics)
    return gate.coverage if gate is not None and policy.min_confidence is None else 1.0
