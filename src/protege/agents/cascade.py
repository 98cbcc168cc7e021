"""The cascade: route → tier → validate → done | escalate, as a state graph of tier nodes (DESIGN §1, §4).

Each call goes to the cheapest eligible tier (student if one is promoted, replay if the task has an approved
skill, then the teacher). Every attempt is written to the store as a trace the moment it ends — before any
escalation — so a crash never loses a paid answer. Shadow runs and skill writing happen off the caller's path.

The graph is small and fixed (an entry edge, one node per tier, one edge after each), so `TierGraph` runs it
directly: LangGraph's StateGraph ran the same nodes and edges with ~0.7 ms of its own machinery per call, most
of the framework's overhead (bench/overhead.py). The agent loop with tools stays a LangGraph subgraph (loop.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol, TypedDict

from pydantic import BaseModel

from protege.agents.fixed_fields import decide_fields, defer_to_student, with_fixed
from protege.agents.loop import LoopResult, billed_responses, run_loop
from protege.agents.models.base import FINISHED, TOKEN_LIMIT, Message, Model, ModelRequest, Usage
from protege.agents.models.chat_format import student_messages
from protege.agents.prompts import replay_messages, teacher_messages
from protege.agents.results import TIERS, Attempt, RunResult, gate_confidence, least_sure_field
from protege.agents.shadow_tools import SHADOW_REFUSED, RecordedTools, shadow_errors
from protege.agents.tools import ToolBox
from protege.agents.validate import validate_answer
from protege.errors import (
    AllTiersFailed,
    BudgetExceeded,
    LocalModelUnavailable,
    ModelError,
    ProtegeError,
    UserError,
    ValidationFailed,
)
from protege.store import Store
from protege.store.models import new_id
from protege.store.store import USD_DIGITS
from protege.tasks import TaskSpec, input_hash
from protege.telemetry.spans import Telemetry

log = logging.getLogger(__name__)
REPAIR = (
    "Your answer is not valid:\n{errors}\n"
    "Answer again with the whole corrected answer, as JSON that fits the schema and follows the instructions."
)


@dataclass
class TaskRuntime:
    """A registered task as the cascade needs it."""

    spec: TaskSpec
    version: int
    tools: ToolBox


class TaskEntry(Protocol):
    """A registered task as the app's parts see it (the facade's TaskHandle): they never import the facade."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> TaskSpec: ...
    @property
    def runtime(self) -> TaskRuntime: ...


@dataclass
class Plan:
    """The tiers one call will try, in order, with what each needs."""

    tiers: list[str]
    forced: bool
    escalate: bool


class StudentPick(NamedTuple):
    """The student that serves a task, and the confidence floor it was promoted with (None: no gate)."""

    model: Model
    id: str
    min_confidence: float | None = None
    field_accuracy: dict[str, float] | None = None  # exact match per output field on its eval split
    prompt: str = "instructions"  # the system-turn style it was trained with (chat_format.student_system)


class TierSource(Protocol):
    """Where the cascade gets each tier's model and context (the app implements it)."""

    def teacher(self, task: TaskRuntime) -> Model: ...
    def replay(self, task: TaskRuntime) -> Model: ...
    def student(self, task: TaskRuntime, *, forced: bool) -> StudentPick | None: ...
    def student_unavailable(self, task: TaskRuntime, exc: Exception) -> None: ...  # leave it out, say so once
    def skill(self, task: TaskRuntime, *, forced: bool) -> tuple[str, int] | None: ...
    def prior_art(self, task: TaskRuntime) -> list[str]: ...
    def programs(self, task: TaskRuntime) -> Any: ...  # a ProgramSet (protege.programs) or None
    def cost(self, model: Model, usage: Any) -> float: ...


class CascadeState(TypedDict, total=False):
    task: TaskRuntime
    input: BaseModel
    input_dict: dict[str, Any]
    run_id: str | None  # None for a trial outside any call
    plan: Plan
    attempts: list[Attempt]
    output: BaseModel | None
    failure: BaseException | None
    skill: tuple[str, int | None] | None  # a skill to replay instead of the approved one (evidence trials)
    input_hash: str
    run: dict[str, Any] | None  # the call's run row, written with its first attempt (None outside a call)
    run_written: bool
    finished: bool  # the run's outcome was written with its last attempt
    started: float
    latency_s: float
    fixed: dict[str, Any]  # output fields verified programs decided for this input (cheaper tiers keep them)
    program_errors: list[str]  # a program's failure on this input (sandbox timeout, crash, ...), if any
    program_skill: int | None  # the skill version the programs came from (the program tier's trace names it)


END = "__end__"  # where the graph stops (LangGraph's name for it)
LOW_CONFIDENCE = "low confidence"  # how a gate's refusal begins: the answer was valid, only unsure


@dataclass(frozen=True)
class TierGraph:
    """The cascade's graph: `entry` picks the first tier, `node(tier, state)` runs it and returns the state's
    updates, `after(state)` picks the next tier or END. State keys are last-value channels: an update replaces."""

    entry: Callable[[CascadeState], str]
    node: Callable[[str, CascadeState], Awaitable[CascadeState]]
    after: Callable[[CascadeState], str]

    async def ainvoke(self, state: CascadeState) -> CascadeState:
        """Run from the entry edge to END; returns the final state (the state passed in is left as it was)."""
        tier, steps = self.entry(state), 0
        while tier != END:
            if tier not in TIERS or steps == len(TIERS):  # a plan tries each tier at most once
                raise RuntimeError(f"the cascade routed to {tier!r} after {steps} tier(s): a bug in its plan")
            state = {**state, **await self.node(tier, state)}
            tier, steps = self.after(state), steps + 1
        return state


@dataclass
class Hooks:
    """Callbacks the app wires in; each runs in the background, never on the caller's path."""

    # (task, the teacher's trace id, the replay attempt it rescued if any)
    on_teacher_success: Callable[[TaskRuntime, str, Attempt | None], Awaitable[None]] | None = None
    on_shadow: Callable[[TaskRuntime, str, float], Awaitable[None]] | None = None
    # (task, the call's input, its attempts): sync and cheap, it runs on the caller's path after a served call
    on_call: Callable[[TaskRuntime, dict[str, Any], list[Attempt]], None] | None = None
    shadow_rate: Callable[[TaskRuntime], float] | None = None  # the task's shadow rate now (default: its policy's)


@dataclass
class Cascade:
    store: Store
    source: TierSource
    hooks: Hooks = field(default_factory=Hooks)
    rng: random.Random = field(default_factory=random.Random)
    background: set[asyncio.Task] = field(default_factory=set)
    telemetry: Telemetry = field(default_factory=Telemetry)  # OpenTelemetry spans (no-op unless configured)
    replay_warned: set[str] = field(default_factory=set)  # tasks told their replay model cannot be made
    unscored_warned: set[tuple[str, str]] = field(default_factory=set)  # (task, tier) told shadows go unscored
    unheld_warned: set[str] = field(default_factory=set)  # tasks told their student's answers carry no confidence

    def __post_init__(self) -> None:
        # Routing is the entry edge: the plan (cheapest eligible tier first) is made before the graph runs, so a
        # bad forced tier is a UserError before anything is recorded.
        self.graph = TierGraph(entry=_first_tier, node=self._tier_node, after=self._next)

    # -- the graph ---------------------------------------------------------------------------------------------

    def _next(self, state: CascadeState) -> str:
        plan, attempts = state["plan"], state["attempts"]
        if state.get("failure") is not None or attempts[-1].valid or not plan.escalate:
            return END
        return plan.tiers[len(attempts)] if len(attempts) < len(plan.tiers) else END

    async def _tier_node(self, tier: str, state: CascadeState) -> CascadeState:
        try:
            attempt, output = await (self._program_attempt(state) if tier == "program" else self._attempt(tier, state))
        except BudgetExceeded as exc:
            return {"failure": exc}
        attempts = [*state["attempts"], attempt]
        # the budget refused a turn after paid ones: the attempt is recorded with them, and the call ends as refused
        refused = attempt.raised if isinstance(attempt.raised, BudgetExceeded) else None
        if attempt.valid and tier == "teacher" and self.hooks.on_teacher_success:
            rescued = state["attempts"][-1] if state["attempts"] and state["attempts"][-1].tier == "replay" else None
            self._spawn(self.hooks.on_teacher_success(state["task"], attempt.trace_id, rescued))
        return {
            "attempts": attempts,
            "output": output if attempt.valid else state.get("output"),
            "run_written": True,
            "failure": refused,
            "finished": _is_last(state, attempt),
            "latency_s": time.perf_counter() - state["started"],
        }

    # -- a call ------------------------------------------------------------------------------------------------

    def plan(
        self,
        task: TaskRuntime,
        *,
        tier: str | None,
        escalate: bool,
        fixed: dict[str, Any] | None = None,
        failed: bool = False,
    ) -> Plan:
        """`failed`: a program failed on this input; the program tier's attempt records it, then escalates."""
        if tier is not None:
            if tier not in TIERS:
                raise UserError(f"tier {tier!r} is not one of {list(TIERS)}")
            start = TIERS.index(tier)
            return Plan(tiers=list(TIERS[start:]) if escalate else [tier], forced=True, escalate=escalate)
        complete = fixed and set(fixed) >= set(task.spec.output_model.model_fields)
        tiers = ["program"] if complete or (failed and escalate) else []
        if self.source.student(task, forced=False) is not None:
            tiers.append("student")
        if self.source.skill(task, forced=False) is not None and self._replay_usable(task):
            tiers.append("replay")
        return Plan(tiers=[*tiers, "teacher"], forced=False, escalate=escalate)

    def _replay_usable(self, task: TaskRuntime) -> bool:
        """An approved skill is replayed only where the replay model can be made: an app given only a teacher gets
        the default replay model, whose missing API key must not fail calls the teacher answers; nor may a bad
        replay setting fail calls the student answers (warned once; a forced replay tier raises it)."""
        try:
            self.source.replay(task)
        except UserError as exc:
            if task.spec.name not in self.replay_warned:
                self.replay_warned.add(task.spec.name)
                log.warning("task %r: its skill is not replayed, calls go to the teacher: %s", task.spec.name, exc)
            return False
        return True

    async def run(
        self, task: TaskRuntime, inp: BaseModel, *, tier: str | None = None, escalate: bool = True
    ) -> RunResult:
        started = time.perf_counter()
        data = inp.model_dump(mode="json", by_alias=True)
        # programs serve the cascade's own routing (and a forced program tier); a forced model tier answers alone,
        # so evaluating it measures that tier. `programs` is optional in a TierSource: older ones have none.
        programs = getattr(self.source, "programs", None) if tier in (None, "program") else None
        source = programs(task) if programs else None
        fixed, program_errors = await decide_fields(source, data)
        if tier is None and fixed:
            pick = self.source.student(task, forced=False)
            fixed = defer_to_student(fixed, source, pick.field_accuracy if pick is not None else None)
        plan = self.plan(task, tier=tier, escalate=escalate, fixed=fixed, failed=bool(program_errors))
        digest = input_hash(data)
        run: dict[str, Any] = {
            "id": new_id(),
            "task_name": task.spec.name,
            "task_version": task.version,
            "input": data,
            "input_hash": digest,
        }
        state: CascadeState = {
            "task": task,
            "input": inp,
            "input_dict": data,
            "input_hash": digest,
            "run_id": run["id"],
            "run": run,
            "run_written": False,
            "finished": False,
            "started": started,
            "plan": plan,
            "attempts": [],
            "output": None,
            "failure": None,
            "fixed": fixed,
            "program_errors": program_errors,
            "program_skill": getattr(source, "skill_version", None),
        }
        with self.telemetry.call(task.spec.name, run["id"]) as span:
            out = await self.graph.ainvoke(state)
            return span.served(await self._finish(out))

    async def _finish(self, out: CascadeState) -> RunResult:
        attempts: list[Attempt] = out["attempts"]
        last = attempts[-1] if attempts else None
        if last is None or not last.valid or out.get("failure") is not None:
            error = out.get("failure") or _failure(out, attempts)
            if not out["finished"]:  # refused by the budget: no attempt carried the outcome
                await asyncio.to_thread(self._write_outcome, out, _outcome(out, attempts, None, error))
            raise error
        output = out["output"]
        result = RunResult(
            output=output,
            tier=last.tier,
            model=last.model,
            cost_usd=round(sum(a.cost_usd for a in attempts), USD_DIGITS),
            latency_s=out["latency_s"],
            run_id=_run_id(out),
            trace_ids=[a.trace_id for a in attempts],
            attempts=attempts,
        )
        if self.hooks.on_call and not out["plan"].forced:
            self.hooks.on_call(out["task"], out["input_dict"], attempts)
        if last.tier != "teacher" and not out["plan"].forced and output is not None:
            self._maybe_shadow(out, last, output)
        return result

    def _write_outcome(self, state: CascadeState, outcome: dict[str, Any]) -> None:
        if state["run_written"]:
            self.store.finish_run(_run_id(state), **outcome)
        else:
            self.store.insert_run({**(state["run"] or {}), **outcome})

    # -- one attempt -------------------------------------------------------------------------------------------

    def _prepare(self, tier: str, state: CascadeState) -> tuple[Model, list[Message], dict[str, Any], float | None]:
        """The tier's model, its prompt, the trace fields it adds, and the confidence floor its answers must meet."""
        task, data, spec = state["task"], state["input_dict"], state["task"].spec
        forced = state["plan"].forced
        if tier == "student":
            pick = self.source.student(task, forced=forced)
            if pick is None:
                raise UserError(f"task {spec.name!r} has no student; run app.distill({spec.name!r}) first")
            floor = spec.policy.min_confidence if spec.policy.min_confidence is not None else pick.min_confidence
            messages = student_messages(spec.instructions, data, task.tools.specs or None, pick.prompt)
            return pick.model, messages, {"student_id": pick.id}, floor
        if tier == "replay":
            skill = state.get("skill") or self.source.skill(task, forced=forced)
            text, version = skill if skill else ("", None)
            msgs = (
                replay_messages(spec.name, spec.instructions, spec.output_schema, data, text)
                if skill
                else teacher_messages(spec.name, spec.instructions, spec.output_schema, data)
            )
            return self.source.replay(task), msgs, {"skill_version": version}, None
        prior = self.source.prior_art(task)
        msgs = teacher_messages(spec.name, spec.instructions, spec.output_schema, data, prior)
        return self.source.teacher(task), msgs, {}, None

    async def trial(
        self,
        task: TaskRuntime,
        inp: BaseModel,
        tier: str,
        *,
        skill: tuple[str, int | None] | None = None,
        record_as: str,
        recorded: list[Any] | None = None,
    ) -> tuple[Attempt, BaseModel | None]:
        """One attempt outside any call (skill evidence and the like), recorded as a trace of tier `record_as`.
        `recorded`: a transcript of the same input whose tool results answer this attempt's tool calls, so a check
        never repeats a side effect (shadow_tools.py)."""
        data = inp.model_dump(mode="json", by_alias=True)
        if recorded is not None and task.tools:
            task = replace(task, tools=RecordedTools(task.tools, recorded, purpose="evidence"))
        state: CascadeState = {
            "task": task,
            "input": inp,
            "input_dict": data,
            "run_id": None,
            "attempts": [],
            "skill": skill,
            "plan": Plan(tiers=[tier], forced=True, escalate=False),
        }
        return await self._attempt(tier, state, record_as=record_as)

    async def _program_attempt(self, state: CascadeState) -> tuple[Attempt, BaseModel | None]:
        """The program tier: every output field from a verified program — no model, no cost, no arbitrary code."""
        task, spec, fixed = state["task"], state["task"].spec, state.get("fixed") or {}
        t0 = time.perf_counter()
        text = json.dumps(fixed, ensure_ascii=False)
        if state.get("program_errors"):  # a program failed on this input: recorded here, the next tier answers
            output, errors = None, list(state["program_errors"])
        else:
            output, errors = validate_answer(spec, state["input"], text) if fixed else (None, ["no program applies"])
        valid = not errors
        latency = time.perf_counter() - t0
        trace: dict[str, Any] = {
            "id": new_id(),
            "run_id": state["run_id"],
            "task_name": spec.name,
            "task_version": task.version,
            "tier": "program",
            "model": "program",
            "skill_version": state.get("program_skill"),
            "attempt": len(state["attempts"]),
            "shadow": False,
            "input": state["input_dict"],
            "input_hash": state.get("input_hash") or input_hash(state["input_dict"]),
            "messages": [],
            "output": output.model_dump(mode="json", by_alias=True) if output is not None and valid else None,
            "output_text": text,
            "valid": valid,
            "errors": errors or None,
            "cost_usd": 0.0,
            "latency_s": latency,
        }
        attempt = Attempt(
            tier="program",
            model="program",
            valid=valid,
            errors=errors,
            text=text,
            latency_s=latency,
            trace_id=trace["id"],
            program_fields=sorted(fixed) if valid else [],
        )
        run, outcome = self._call_writes(state, attempt, output, False)
        await asyncio.to_thread(self.store.record_attempt, trace, run=run, finish=outcome)
        return attempt, output

    async def _attempt(
        self, tier: str, state: CascadeState, *, shadow: bool = False, record_as: str | None = None
    ) -> tuple[Attempt, BaseModel | None]:
        spec = state["task"].spec
        with self.telemetry.attempt(
            tier, run_id=state["run_id"], redact=spec.policy.redact, shadow=shadow, cost=self.source.cost
        ) as span:  # the loop's requests and tools nest under it
            attempt, output = await self._try_tier(tier, state, shadow=shadow, record_as=record_as)
            span.done(attempt)
            return attempt, output

    async def _ask(
        self, tier: str, model: Model, req: ModelRequest, task: TaskRuntime, *, forced: bool = False
    ) -> LoopResult:
        """The tier's model loop on `req`; a model's failure is the result's error (this tier failed)."""
        spec = task.spec
        try:
            return await run_loop(
                model,
                req,
                tools=task.tools,
                max_steps=spec.policy.max_steps,
                max_tool_result_chars=spec.policy.max_tool_result_chars,
            )
        except ModelError as exc:  # what it was billed, if the provider answered unreadably, is the attempt's cost
            paid = billed_responses(exc)
            usage = sum((r.usage for r in paid), Usage())
            error = f"{type(exc).__name__}: {exc}"
            return LoopResult(messages=req.messages, responses=paid, usage=usage, error=error, exception=exc)
        except LocalModelUnavailable as exc:  # a student whose engine is missing: escalate (asked by name: say why)
            if forced:
                raise
            self.source.student_unavailable(task, exc)
            return LoopResult(messages=req.messages, error=f"{type(exc).__name__}: {exc}", exception=exc)
        except ProtegeError:
            raise  # misuse (a missing key, a bad spec) and the budget guard: the caller's to see
        except Exception as exc:  # a model object's own failure (a dropped connection, a bug): this tier failed
            log.warning("task %r: the %s tier's model %r raised", spec.name, tier, model.name, exc_info=True)
            return LoopResult(messages=req.messages, error=f"{type(exc).__name__}: {exc}", exception=exc)

    async def _repair(
        self, model: Model, req: ModelRequest, task: TaskRuntime, result: LoopResult, errors: list[str]
    ) -> LoopResult:
        """The teacher's invalid answer, sent back with what is wrong with it (`Policy.repair_turns`): the answer
        is paid for, and one more turn usually fixes a field (`quantity: 0` where the schema says >= 1) where
        failing the call would pay the whole call again. The transcript keeps both turns; training rows are
        rendered from the validated output, so the wrong one never reaches a dataset. Where the reply cannot be
        had (the budget, a model error) the first answer stands, invalid."""
        feedback = Message(role="user", content=REPAIR.format(errors="\n".join(f"- {e}" for e in errors)))
        retry = req.model_copy(update={"messages": [*result.messages, feedback]})
        try:
            again = await self._ask("teacher", model, retry, task)
        except BudgetExceeded:
            return result
        responses = [*result.responses, *again.responses]
        usage = sum((r.usage for r in responses), Usage())
        return (result if again.error else again).model_copy(update={"responses": responses, "usage": usage})

    async def _try_tier(
        self, tier: str, state: CascadeState, *, shadow: bool, record_as: str | None
    ) -> tuple[Attempt, BaseModel | None]:
        task, spec = state["task"], state["task"].spec
        model, messages, extra, floor = self._prepare(tier, state)
        fixed = state.get("fixed") if tier in ("student", "replay") else None  # the teacher answers for itself
        req = ModelRequest(
            messages=messages,
            tools=task.tools.specs,
            output_schema=spec.output_schema,
            task_name=spec.name,
            task_input=state["input_dict"],
            max_tokens=spec.policy.max_tokens,
            fixed_output=fixed or None,
        )
        t0 = time.perf_counter()
        result = await self._ask(tier, model, req, task, forced=state["plan"].forced)
        text = with_fixed(result.text, fixed) if fixed and not result.error else result.text
        output, errors = _judged(spec, state["input"], result, text)
        for _ in range(spec.policy.repair_turns if tier == "teacher" else 0):
            if not errors or result.error or _stop_errors(result, req.max_tokens):
                break  # valid, failed, or cut short: nothing a reply could repair
            result = await self._repair(model, req, task, result, errors)
            text = result.text
            output, errors = _judged(spec, state["input"], result, text)
        latency = time.perf_counter() - t0
        errors = _stop_errors(result, req.max_tokens) + errors + self._confidence_errors(spec, result, floor)
        errors += shadow_errors(task.tools)  # a shadow's refused tool call: its answer is no reference
        usages = [r.usage for r in result.responses] or [Usage(compute_s=latency)]  # a local model that failed
        cost = round(sum(self.source.cost(model, u) for u in usages), USD_DIGITS)  # still ran: its machine time
        valid = not errors
        trace = {
            "id": new_id(),
            "run_id": state["run_id"],
            "task_name": spec.name,
            "task_version": task.version,
            "tier": record_as or tier,
            "model": model.name,
            "attempt": len(state["attempts"]),
            "shadow": shadow,
            "input": state["input_dict"],
            "input_hash": state.get("input_hash") or input_hash(state["input_dict"]),
            "messages": [m.model_dump(exclude_defaults=True) for m in result.messages],
            "tools": [t.model_dump() for t in task.tools.specs] or None,
            "output": output.model_dump(mode="json", by_alias=True) if output is not None and valid else None,
            "output_text": result.text,
            "valid": valid,
            "errors": errors or None,
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "cache_read_tokens": result.usage.cache_read_tokens,
            "cache_write_tokens": result.usage.cache_write_tokens,
            "cost_usd": cost,
            "latency_s": latency,
            "confidence": result.confidence,
            "field_confidences": result.field_confidences,
            "raw": [r.raw for r in result.responses if r.raw is not None] or None,
            **extra,
        }
        attempt = Attempt(
            tier=tier,
            model=model.name,
            valid=valid,
            errors=errors,
            text=result.text,
            cost_usd=cost,
            latency_s=latency,
            trace_id=trace["id"],
            confidence=result.confidence,
            field_confidences=result.field_confidences,
            program_fields=sorted(fixed or {}) if valid else [],
            **extra,
        )
        attempt._raised = result.exception
        run, outcome = self._call_writes(state, attempt, output, shadow)
        # one transaction, durable before anything else happens: a crash after it loses nothing paid for
        await asyncio.to_thread(self.store.record_attempt, trace, run=run, finish=outcome)
        return attempt, output

    def _call_writes(
        self, state: CascadeState, attempt: Attempt, output: BaseModel | None, shadow: bool
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """What a call's attempt writes beside its trace: the run row (first attempt), the outcome (last)."""
        if state.get("run") is None or shadow:
            return None, None
        run = None if state["run_written"] else state["run"]
        if not _is_last(state, attempt):
            return run, None
        attempts = [*state["attempts"], attempt]
        error = None if attempt.valid else _failure({**state, "attempts": attempts}, attempts)
        return run, _outcome(state, attempts, output if attempt.valid else None, error)

    # -- background work ---------------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def drain(self) -> None:
        """Wait for shadow runs and skill writing still in flight."""
        while self.background:
            await asyncio.gather(*list(self.background), return_exceptions=True)

    def _maybe_shadow(self, out: CascadeState, served: Attempt, output: BaseModel) -> None:
        rate = self.hooks.shadow_rate(out["task"]) if self.hooks.shadow_rate else out["task"].spec.policy.shadow_rate
        if rate > 0 and self.rng.random() < rate:
            self._spawn(self._shadow(out, served, output))

    async def _shadow(self, out: CascadeState, served: Attempt, output: BaseModel) -> None:
        from protege.store import ShadowRow

        state: CascadeState = {**out, "task": await self._shadow_task(out["task"], served), "attempts": [served]}
        try:
            teacher, teacher_output = await self._attempt("teacher", state, shadow=True)
        except BudgetExceeded:
            return  # a shadow is optional work: the budget wins
        if not teacher.valid or teacher_output is None:
            if any(e.startswith(SHADOW_REFUSED) for e in teacher.errors):
                self._warn_unscored(out["task"].spec.name, served.tier)
            return
        spec = out["task"].spec
        agreement = float(spec.score(teacher_output, output))
        row = ShadowRow(
            task_name=spec.name,
            run_id=_run_id(out),
            tier=served.tier,
            trace_id=served.trace_id,
            teacher_trace_id=teacher.trace_id,
            agreement=agreement,
        )
        await asyncio.to_thread(self.store.add_shadow, row)
        if self.hooks.on_shadow:
            await self.hooks.on_shadow(out["task"], served.tier, agreement)

    def _confidence_errors(self, spec: TaskSpec, result: LoopResult, floor: float | None) -> list[str]:
        """The gate goes by the least-sure field (one unsure field escalates the call), else the whole answer. An
        answer with no confidence at all (a server that sends no logprobs) cannot be held to a floor the task's
        policy asks for, so it escalates (said once per task); under a floor distill calibrated it is served, as
        a student promoted on its retention alone (README: Serving a student)."""
        conf = gate_confidence(result.confidence, result.field_confidences)
        if floor is None or result.error or (conf is not None and conf >= floor):
            return []
        if conf is None:
            return self._unheld(spec, floor) if spec.policy.min_confidence is not None else []
        field = least_sure_field(result.field_confidences)
        what = f"field {field!r}" if field else "answer"
        floor_text = f"the student's floor {floor:.3f} (Policy.min_confidence or its gate)"
        return [f"{LOW_CONFIDENCE}: {what} {conf:.3f} < {floor_text}"]

    def _unheld(self, spec: TaskSpec, floor: float) -> list[str]:
        if spec.name not in self.unheld_warned:
            self.unheld_warned.add(spec.name)
            log.warning(
                "task %r: the student's answers carry no confidence (its server sends no logprobs), so none can be "
                "held to Policy(min_confidence=%g): they escalate; serve the student where it gives logprobs, or "
                "set min_confidence=None to serve them ungated",
                spec.name,
                floor,
            )
        return [f"{LOW_CONFIDENCE}: no confidence to hold to min_confidence {floor:g} (its server sends no logprobs)"]

    def _warn_unscored(self, task: str, tier: str) -> None:
        """Once per task and tier: shadows that needed a tool call the served answer did not make are not scored,
        so that tier's quality goes unchecked by them (drift and demotion see no shadow)."""
        if (task, tier) not in self.unscored_warned:
            self.unscored_warned.add((task, tier))
            log.warning(
                "task %r: a shadow check of a %s answer needed a tool call that answer did not make; shadows never "
                "run tools again (side effects), so it was not scored — %s answers that skip the tools go unchecked "
                "(mark tools without side effects @protege.read_only and checks run them)",
                task,
                tier,
                tier,
            )

    async def _shadow_task(self, task: TaskRuntime, served: Attempt) -> TaskRuntime:
        """The task as its shadow runs it: tools answered from the served attempt's transcript, never run again
        (shadow_tools.py: a shadow must not repeat a side effect)."""
        if not task.tools:
            return task
        trace = await asyncio.to_thread(self.store.trace, served.trace_id)
        return replace(task, tools=RecordedTools(task.tools, trace.messages if trace is not None else None))


def _first_tier(state: CascadeState) -> str:
    """The graph's entry edge: the plan's first tier."""
    return state["plan"].tiers[0]


def _is_last(state: CascadeState, attempt: Attempt) -> bool:
    """Whether the call ends with this attempt (the graph's `_next` will route to END)."""
    plan = state["plan"]
    return attempt.valid or not plan.escalate or len(state["attempts"]) + 1 >= len(plan.tiers)


def _run_id(state: CascadeState) -> str:
    """The call's run id: only calls finish, shadow or fail a run (a trial outside any call has none)."""
    run_id = state["run_id"]
    if run_id is None:
        raise RuntimeError("a run outcome was asked of a trial outside any call")
    return run_id


def _judged(spec: TaskSpec, task_input: BaseModel, result: LoopResult, text: str) -> tuple[BaseModel | None, list[str]]:
    """The answer parsed and validated, or the model's failure as the one error."""
    return (None, [result.error]) if result.error else validate_answer(spec, task_input, text)


def _outcome(
    state: CascadeState, attempts: list[Attempt], output: BaseModel | None, error: BaseException | None
) -> dict[str, Any]:
    """The run row's final fields."""
    cost = round(sum(a.cost_usd for a in attempts), USD_DIGITS)
    common = {"cost_usd": cost, "latency_s": time.perf_counter() - state["started"]}
    if error is not None:
        return {"status": "failed", "error": str(error), **common}
    answer = output.model_dump(mode="json", by_alias=True) if output is not None else None
    return {"status": "ok", "tier": attempts[-1].tier, "output": answer, **common}


def _stop_errors(result: LoopResult, limit: int) -> list[str]:
    """An answer that did not finish is never served, even when what it wrote parses: cut off at the token limit,
    stopped at a bound learned from the traces (a runaway), or ended by the provider for another reason (a refusal,
    a content filter, a full context window). A model error already says what went wrong."""
    last = result.responses[-1] if result.responses else None
    if last is None or not last.cut_short or result.exception is not None:
        return []
    raw = last.raw if isinstance(last.raw, dict) else {}
    if last.stop_reason in TOKEN_LIMIT:
        return [
            f"Unfinished: the answer was cut off at its token limit ({raw.get('max_tokens') or limit} tokens): "
            f"a truncated answer is not served; raise Policy.max_tokens if answers need more"
        ]
    if last.stop_reason == "bound":
        return [
            f"Unfinished: the answer reached a bound (learned from the training traces, or a runaway guard: "
            f"{'; '.join(raw.get('bounds', []))}): a runaway answer is not served"
        ]
    return [
        f"Unfinished: the model stopped with {last.stop_reason!r} (finished answers stop with "
        f"{', '.join(FINISHED)}): an unfinished answer is not served"
    ]


def _failure(out: CascadeState, attempts: list[Attempt]) -> Exception:
    spec = out["task"].spec
    lines = "; ".join(f"{a.tier} ({a.model}): {'; '.join(a.errors)[:300]}" for a in attempts)
    if not out["plan"].escalate and len(attempts) == 1:
        a = attempts[0]
        err = ValidationFailed(
            f"task {spec.name!r}: the {a.tier} tier's answer failed and escalate=False: {lines}",
            errors=a.errors,
            text=a.text,
            tier=a.tier,
        )
        err.run_id = out["run_id"]  # type: ignore[attr-defined]
        err.attempts = attempts  # type: ignore[attr-defined]
        return err
    failed = AllTiersFailed(
        f"task {spec.name!r}: every tier failed ({lines}); `protege traces --run {out['run_id']}` lists the "
        f"attempts (`protege trace ID` shows each transcript)",
        run_id=_run_id(out),
        attempts=attempts,
    )
    # the last model failure as the cause: a service can branch on it (RateLimited and its retry_after -> a 503)
    failed.__cause__ = next((a.raised for a in reversed(attempts) if a.raised is not None), None)
    return failed
