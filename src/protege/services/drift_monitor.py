"""`DriftMonitor`: watches each promoted student's calls (.drift) and raises its task's shadow rate when
they move. In memory, per process: each process serving a task watches its own calls; the reference is built
once per promoted student, in the background, from the store."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from protege.services.drift import (
    CHECK_EVERY,
    MIN_RECENT,
    REFERENCE_INPUTS,
    Reference,
    TaskDrift,
    build_reference,
    shifts,
)
from protege.store.models import utcnow

if TYPE_CHECKING:
    from protege.agents.cascade import Cascade, TaskEntry, TaskRuntime
    from protege.agents.results import Attempt
    from protege.services.tiers import AppTiers
    from protege.store import Store

log = logging.getLogger("protege")
REFERENCE_TIERS = ("teacher", "import")  # the tiers a student is distilled from


class DriftHost(Protocol):
    """What the monitor uses of the app (the facade; this module never imports it)."""

    store: Store
    tiers: AppTiers

    @property
    def tasks(self) -> Mapping[str, TaskEntry]: ...
    @property
    def cascade(self) -> Cascade: ...  # made after the monitor: read only once calls run


class DriftMonitor:
    def __init__(self, app: DriftHost):
        self.app = app
        self.tasks: dict[str, TaskDrift] = {}

    # -- hooks (on the portal loop) ----------------------------------------------------------------------------

    def on_call(self, task: TaskRuntime, inp: dict[str, Any], attempts: list[Attempt]) -> None:
        """After a call: if the student was tried, note what it saw and did (in memory; a check every few calls)."""
        first = attempts[0] if attempts else None
        if first is None or first.tier != "student" or first.student_id is None:
            return
        if task.spec.policy.drift_shadow_rate <= 0:
            return
        st = self._state(task.spec.name, first.student_id)
        st.calls += 1
        # the gate's figure (least-sure field), as the reference's eval confidences are: the answer's mean would
        # sit above them always, so a real fall in one field would hide behind it
        raw = (inp, first.gate_confidence, not first.valid)
        if st.ref is None:
            st.pending.append(raw)  # observed once the reference is ready
            return
        self._observe(task, st, raw)

    def shadow_rate(self, task: TaskRuntime) -> float:
        policy = task.spec.policy
        st = self.tasks.get(task.spec.name)
        if st is not None and st.boost_left > 0:
            return max(policy.drift_shadow_rate, policy.shadow_rate)
        return policy.shadow_rate

    def status(self, task: str) -> dict[str, Any] | None:
        """What the monitor knows of a task, for people: alerts, the last one, and the boost left."""
        st = self.tasks.get(task)
        if st is None:
            return None
        return {
            "student_id": st.student_id,
            "calls": st.calls,
            "alerts": st.alerts,
            "last_alert": st.last_alert,
            "last_alert_at": st.last_alert_at,
            "boost_calls_left": st.boost_left,
        }

    # -- internals ---------------------------------------------------------------------------------------------

    def _state(self, name: str, student_id: str) -> TaskDrift:
        st = self.tasks.get(name)
        if st is None or st.student_id != student_id:  # a new student: a new reference
            st = self.tasks[name] = TaskDrift(student_id=student_id)
        if st.ref is None and not st.loading:
            st.loading = True
            bg = self.app.cascade.background  # drained at exit with the rest of the background work
            t = asyncio.ensure_future(self._load(name, st))
            bg.add(t)
            t.add_done_callback(bg.discard)
        return st

    async def _load(self, name: str, st: TaskDrift) -> None:
        try:
            st.ref = await asyncio.to_thread(self._reference, name, st.student_id)
        except Exception:  # the early signal is optional: without a reference the task is shadowed as its policy says
            log.exception("drift reference for task %r could not be built", name)
            return
        pending = list(st.pending)
        st.pending.clear()
        task = self.app.tasks.get(name)
        for raw in pending:
            if task is not None:
                self._observe(task.runtime, st, raw)

    def _reference(self, name: str, student_id: str) -> Reference:
        from protege.distill.gate import stored_gate
        from protege.distill.pipeline import serving_figures

        store = self.app.store
        row = store.student(student_id)
        metrics = (row.metrics if row else None) or {}
        gate = stored_gate(metrics)
        inputs: list[dict] = []
        for tier in REFERENCE_TIERS:
            traces = store.traces(
                name,
                tier=tier,
                valid=True,
                shadow=False,
                limit=REFERENCE_INPUTS,
                created_before=row.created_at if row else None,
            )
            inputs += [t.input for t in traces if isinstance(t.input, dict)]
        return build_reference(
            inputs[:REFERENCE_INPUTS],
            list(serving_figures(metrics).get("confidences") or []),  # as its gate compares them: behind programs
            gate.coverage if gate else None,
        )

    def _observe(self, task: TaskRuntime, st: TaskDrift, raw: tuple[dict, float | None, bool]) -> None:
        assert st.ref is not None
        obs = st.ref.observe(*raw)
        if st.boost_left > 0:
            st.during_boost.append((obs, raw[0]))
            st.boost_left -= 1
            if st.boost_left == 0:
                self._boost_ended(task, st)
            return
        st.recent.append(obs)
        if len(st.recent) >= MIN_RECENT and st.calls % CHECK_EVERY == 0:
            moved = shifts(st.ref, list(st.recent))
            if moved:
                self._alert(task, st, moved)

    def _alert(self, task: TaskRuntime, st: TaskDrift, moved: list[str]) -> None:
        policy = task.spec.policy
        st.alerts += 1
        st.last_alert, st.last_alert_at = "; ".join(moved), utcnow()
        st.boost_left = policy.drift_shadow_calls
        st.recent.clear()
        log.warning(
            "task %r: the student's calls moved from their distribution at promotion (%s); shadowing %.0f%% "
            "of calls for the next %d to measure agreement",
            task.spec.name,
            st.last_alert,
            100 * max(policy.drift_shadow_rate, policy.shadow_rate),
            policy.drift_shadow_calls,
        )

    def _boost_ended(self, task: TaskRuntime, st: TaskDrift) -> None:
        """The student kept its place through the boost: a benign shift; the reference learns it."""
        seen = st.during_boost
        st.during_boost = []
        if self.app.tiers.student(task, forced=False) is None or st.ref is None:
            return
        st.ref.absorb([o for o, _ in seen], [inp for _, inp in seen])
        log.info(
            "task %r: agreement held through the drift check; the new inputs join the student's reference",
            task.spec.name,
        )
