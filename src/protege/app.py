"""`Protege`: the facade that ties tasks, the cascade, the store, skills and distillation together (DESIGN §3)."""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from protege.agents.cascade import Cascade, Hooks, TaskRuntime
from protege.agents.models.base import Model
from protege.agents.results import Attempt, RunResult
from protege.agents.tools import ToolBox
from protege.errors import UserError
from protege.services.portal import Portal
from protege.services.tiers import AppTiers
from protege.settings import Settings
from protege.store import Ledger, Store, TraceRow
from protege.store.engine import make_project_folder
from protege.tasks import CheckFn, Policy, ScoreFn, TaskSpec

log = logging.getLogger(__name__)
STUCK_GRACE_S = 30.0  # past the drain timeout, how long close() waits on a loop that never yields before giving up

__all__ = ["Attempt", "Protege", "RunResult", "TaskHandle", "TraceRecord"]


class TraceRecord(BaseModel):
    """A trace as the public API shows it (the store's row minus transcript internals)."""

    id: str
    run_id: str | None
    task_name: str
    tier: str
    model: str
    output: dict | None
    output_text: str
    valid: bool
    errors: list | None
    cost_usd: float
    latency_s: float
    skill_version: int | None
    student_id: str | None
    shadow: bool
    created_at: Any

    @classmethod
    def of(cls, row: TraceRow) -> TraceRecord:
        return cls.model_validate({name: getattr(row, name) for name in cls.model_fields})


class TaskHandle:
    """What `@app.task` returns: call it like the function (sync), `await .acall(...)`, or `.run(...)`."""

    def __init__(self, app: Protege, runtime: TaskRuntime):
        self.app = app
        self.runtime = runtime
        self.spec = runtime.spec
        self.name = runtime.spec.name
        self.__doc__ = runtime.spec.instructions
        self.__wrapped__ = runtime.spec.fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run_args(args, kwargs).output

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        self.app._reopen_if_closed(self.name)
        inp = self.spec.parse_input(args, kwargs)
        return (await self.app.portal.acall(self.app.cascade.run(self.runtime, inp))).output

    def run_args(self, args: tuple, kwargs: dict, *, tier: str | None = None, escalate: bool = True) -> RunResult:
        self.app._reopen_if_closed(self.name)
        inp = self.spec.parse_input(args, kwargs)
        return self.app.portal.call(self.app.cascade.run(self.runtime, inp, tier=tier, escalate=escalate))

    def __repr__(self) -> str:
        return f"<protege task {self.name!r} v{self.runtime.version}>"


class Protege:
    """The app: register tasks with `@app.task`, call them, distill students, review skills."""

    def __init__(
        self,
        db: str | None = None,
        teacher: str | Model | None = None,
        replay: str | Model | None = None,
        student_base: str | None = None,
        *,
        project_dir: str | Path | None = None,
        prices: dict | str | Path | None = None,
        teacher_budget_usd_per_day: float | None = None,
        seed: int | None = None,
        otel: str | Any | None = None,
        otel_content: bool | None = None,
        program_author: str | Model | None = None,
        cache_dir: str | Path | None = None,
        local_cost_per_hour: float | None = None,
        drain_timeout_s: float | None = None,
    ):
        """`otel`: an OTLP/HTTP collector URL (or PROTEGE_OTEL_ENDPOINT) to export spans to, or a TracerProvider;
        by default spans go to the global TracerProvider, if the app configured one. `otel_content`: record
        prompts and answers on spans (redacted by each task's policy); default: the conventions' environment switch
        OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT, off. `program_author`: who writes programs for tasks
        with Policy(program=True) once they have program_min_traces teacher traces — "teacher", a model spec or a
        Model; default None: off, since authoring spends teacher money (induced programs need no author).
        `cache_dir`, `local_cost_per_hour`, `drain_timeout_s`: as their PROTEGE_* settings (README, Settings)."""
        overrides: dict[str, Any] = {
            "db": db,
            "project_dir": project_dir,
            "student_base": student_base,
            "prices": prices,
            "teacher_budget_usd_per_day": teacher_budget_usd_per_day,
            "cache_dir": cache_dir,
            "local_cost_per_hour": local_cost_per_hour,
            "drain_timeout_s": drain_timeout_s,
        }
        overrides.update({k: v for k, v in (("teacher", teacher), ("replay", replay)) if isinstance(v, str)})
        self.settings = Settings(**{k: v for k, v in overrides.items() if v is not None and not isinstance(v, dict)})
        self.teacher_spec: str | Model = teacher if teacher is not None else self.settings.teacher
        self.replay_spec: str | Model = replay if replay is not None else self.settings.replay
        from protege.telemetry.exporter import make_telemetry

        # checked first: a bad endpoint fails before anything is opened
        self.telemetry = make_telemetry(otel, self.settings.otel_endpoint, capture_content=otel_content)
        make_project_folder(self.settings.db_url, self.settings.project_dir)  # the default store's folder only
        self.store = Store(self.settings.db_url)
        from protege.agents.pricing import load_prices
        from protege.skills.library import SkillLibrary

        self.prices = load_prices(
            prices if prices is not None else self.settings.prices,
            local_cost_per_hour=self.settings.local_cost_per_hour,
        )
        self.skills = SkillLibrary(self.store)
        self.tasks: dict[str, TaskHandle] = {}
        self.tiers = AppTiers(self)
        self.portal = Portal()
        from protege.services.lifecycle import Lifecycle

        self.lifecycle = Lifecycle(self)
        from protege.programs.service import ProgramService

        self.programs = ProgramService(self)
        from protege.programs.authored import AuthoredPrograms

        self.authored = AuthoredPrograms(self, program_author)
        lc = self.lifecycle
        hooks = Hooks(
            on_teacher_success=lc.on_teacher_success,
            on_shadow=lc.on_shadow,
            on_call=lc.drift.on_call,
            shadow_rate=lc.drift.shadow_rate,
        )
        self.cascade = Cascade(self.store, self.tiers, hooks, rng=random.Random(seed), telemetry=self.telemetry)
        self._closed = False
        self._closing = False  # close() is draining: calls are refused, not served (nor the app opened again)
        at_exit(self._settle_at_exit)  # drains while threads can still be started...
        atexit.register(self.close)  # ...and this closes, after the threads of the program have ended

    # -- tasks -------------------------------------------------------------------------------------------------

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        check: CheckFn | None = None,
        score: ScoreFn | None = None,
        tools: list[Callable[..., Any]] | None = None,
        policy: Policy | None = None,
    ) -> Any:
        """Register a typed function as a task (usable bare, `@app.task`, or with options, `@app.task(...)`)."""

        def register(f: Callable[..., Any]) -> TaskHandle:
            spec = TaskSpec(f, name=name, check=check, score=score, tools=tools, policy=policy)
            toolbox = ToolBox(spec.tools, timeout=spec.policy.tool_timeout_s)  # a refused tool registers nothing
            before = self.store.task(spec.name)
            row = self.store.register_task(
                name=spec.name,
                contract_hash=spec.contract_hash,
                input_schema=spec.input_schema,
                output_schema=spec.output_schema,
                instructions=spec.instructions,
                policy=spec.policy.model_dump(mode="json"),
            )
            if before is not None and row.version > before.version:  # this registration made the new version
                from protege.services.contract_change import retire_stale

                retire_stale(self.store, self.skills, spec.name, before.version, row.version)
                self.tiers.invalidate(spec.name)
            runtime = TaskRuntime(spec=spec, version=row.version, tools=toolbox)
            handle = TaskHandle(self, runtime)
            self.tasks[spec.name] = handle
            self.lifecycle.work.resume(runtime)  # background work an earlier process left unfinished
            return handle

        return register(fn) if fn is not None else register

    def handle(self, task: str | TaskHandle) -> TaskHandle:
        if isinstance(task, TaskHandle):
            return task
        if task not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none registered"
            raise UserError(f"no task {task!r} in this app (tasks: {known}); register it with @app.task")
        return self.tasks[task]

    def run(
        self,
        task: str | TaskHandle,
        input: dict[str, Any] | BaseModel,
        *,
        tier: str | None = None,
        escalate: bool = True,
    ) -> RunResult:
        """Call a task with a dict of its parameters (or its input model); returns the full RunResult."""
        h = self.handle(task)
        data = input.model_dump(by_alias=True) if isinstance(input, BaseModel) else input
        if not isinstance(data, dict):
            raise UserError(
                f"input for task {h.name!r} must be a dict of its parameters {h.spec.params!r}, got {data!r}"
            )
        return h.run_args((), data, tier=tier, escalate=escalate)

    async def arun(
        self, task: str | TaskHandle, input: dict[str, Any], *, tier: str | None = None, escalate: bool = True
    ) -> RunResult:
        h = self.handle(task)
        self._reopen_if_closed(h.name)
        inp = h.spec.parse_input((), input)
        return await self.portal.acall(self.cascade.run(h.runtime, inp, tier=tier, escalate=escalate))

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until background work (shadow runs, skill writing) is done, or `timeout_s` passes; True if done."""
        if self.portal._loop is None:
            return True
        return not self.portal.run(self.lifecycle.work.drain(self.cascade.background, timeout_s))

    # -- reading -----------------------------------------------------------------------------------------------

    def traces(self, task: str, tier: str | None = None, limit: int = 100) -> list[TraceRecord]:
        self._require_known(task)
        return [TraceRecord.of(r) for r in self.store.traces(task, tier=tier, limit=limit)]

    def ledger(self, task: str) -> Ledger:
        self._require_known(task)
        return self.store.ledger(task)

    def _require_known(self, task: str) -> None:
        """A task this app registered, or one its store knows (registered by another process, or imported traces):
        else a misspelt name would read as a task with no traces, no skill and no spend."""
        if task not in self.tasks and not self.store.knows_task(task):
            known = ", ".join(sorted({*self.tasks, *(t.name for t in self.store.tasks())})) or "none yet"
            raise UserError(f"no task {task!r} in this app or its store (tasks: {known}); check the name")

    def label(self, trace_id: str, verdict: str, *, reviewer: str = "reviewer", note: str | None = None) -> None:
        self.store.add_label(trace_id, verdict, reviewer=reviewer, note=note)

    # -- skills ------------------------------------------------------------------------------------------------

    def skill(self, task: str) -> Any:
        """The task's newest skill version (a SkillRow: name, version, status, text, ...) or None."""
        self._require_known(task)
        return self.skills.latest(task)

    def approve_skill(self, task: str, version: int | None = None, *, reviewer: str = "reviewer") -> Any:
        self._require_known(task)
        row = self.skills.approve(task, version, by=reviewer)
        self.tiers.invalidate(task)
        return row

    def reject_skill(
        self, task: str, version: int | None = None, *, reviewer: str = "reviewer", note: str | None = None
    ) -> Any:
        self._require_known(task)
        row = self.skills.reject(task, version, by=reviewer, note=note)
        self.tiers.invalidate(task)
        return row

    def export_skills(self, dest: str | Path, task: str | None = None, *, force: bool = False) -> list[Path]:
        """Write approved skills as dest/<name>/ folders; `force` replaces folders already there (else refused)."""
        return self.skills.export(Path(dest), task=task, force=force)

    def import_skills(self, src: str | Path, *, reviewer: str = "import") -> list[Any]:
        return self.skills.import_dir(Path(src), by=reviewer)

    # -- students ----------------------------------------------------------------------------------------------

    def base_dir(self, base: str) -> Path:
        """A student base as a local checkpoint dir (the bundled default is converted once and cached)."""
        from protege.distill.base_models import resolve_base

        return resolve_base(base, self.settings.model_cache_dir)

    def distill(
        self,
        task: str,
        *,
        config: Any = None,
        force: bool = False,
        progress: Any = None,
        adapter: str | Path | None = None,
        auto_promote: bool = True,
        eval_fraction: float = 0.2,
        seed: int = 0,
        references: dict[str, dict] | None = None,
        programs_without: Any = None,
    ) -> Any:
        """Build a dataset from the task's validated traces, train a student, evaluate it, promote if it passes.

        `config`: a `protege.distill.train.TrainConfig` (epochs, learning rate, method, ...; default: the measured
        default recipe). `force`: distill with fewer validated traces than `Policy.min_traces`. `progress(stage,
        done, total)`: called as each stage advances. `adapter`: evaluate and record a student trained elsewhere
        instead of training one. `auto_promote=False` keeps it a candidate whatever it scores. `eval_fraction` and
        `seed`: the held-out split. `references`: reference outputs by input hash, to score against instead of the
        teacher's. The rest: `protege.distill.pipeline.distill`."""
        from protege.distill.pipeline import distill

        entry = self.handle(task)
        if entry.spec.policy.program and programs_without is None:
            programs_without = partial(self.programs.without, task)  # judged as the cascade serves it
        report = distill(
            self.store,
            entry.runtime,
            self.settings,
            self.base_dir,
            config=config,
            force=force,
            progress=progress,
            adapter=adapter,
            auto_promote=auto_promote,
            eval_fraction=eval_fraction,
            seed=seed,
            references=references,
            programs_without=programs_without,
        )
        self.tiers.invalidate(task)
        return report

    def promote(self, student_id: str) -> Any:
        from protege.distill.pipeline import promote

        row = promote(self.store, student_id)
        self.tiers.invalidate(row.task_name)
        return row

    def demote(self, task: str) -> Any:
        from protege.distill.pipeline import demote

        row = demote(self.store, task)
        self.tiers.invalidate(task)
        return row

    def export_student(
        self, student_id: str, out: str | Path, *, format: str = "gguf", quant: str | None = None
    ) -> Path:
        """Write a student to the new folder `out`: "hf" (merged checkpoint) or "gguf" (+ Ollama Modelfile), each
        with protege_serving.json (prompt template, output schema, GBNF grammar). README: Serving a student."""
        from protege.distill.student_export import export_student

        return export_student(
            self.store,
            student_id,
            out,
            fmt=format,
            quant=quant,
            base_dir=self.base_dir,
            project_dir=self.settings.project_dir,
        )

    def serve_student(
        self,
        student_id: str,
        host: str,
        *,
        base_url: str | None = None,
        quant: str = "q8_0",
        response_format: str = "json_schema",
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Serve a student with "torch" (default), "llama.cpp" (its GGUF, exported once), or an OpenAI-compatible
        server: "openai:<served model name>" with base_url=... (vLLM, llama.cpp's server, Ollama;
        response_format="json_object" for llama-cpp-python's server; timeout_s: how long a call waits for it
        before escalating, default 10)."""
        from protege.services.serving import serve_student

        return serve_student(
            self,
            student_id,
            host,
            base_url=base_url,
            quant=quant,
            response_format=response_format,
            timeout_s=timeout_s,
        )

    def _reopen_if_closed(self, task: str) -> None:
        """A call after close() opens the app again (its loop and the store's connections start on use), so that
        its background work (skill upkeep, programs) is drained at exit as any other call's: closed, it was
        served and that work silently dropped. A CLI command run twice in one process closes the app between.
        A call while close() runs is refused: it would be started on a loop that is being stopped."""
        if self._closing:
            raise UserError(
                f"task {task!r} was called while the app is closing: close() finishes the calls in flight and "
                "takes no new ones; stop sending calls before close(), or call again after it returns"
            )
        if self._closed:
            log.info("app used after close(): opened again")
            self._closed = False
            self.telemetry.reopen()

    def close(self, timeout_s: float | None = None) -> None:
        """Finish the calls in flight and background work (for up to `timeout_s`, default
        `Settings.drain_timeout_s`), then release the loop and the store's connections. Calls still running then
        are stopped: their callers get a RunError, and the attempts they finished are in the store. Background work
        still running is stopped and left pending in the store, for the next process that opens it. Calls made
        while close() runs get a UserError. It blocks its thread; from a coroutine, `await app.aclose()`. Runs by
        itself at interpreter exit; safe to call twice."""
        if self._closed:
            return
        self._closed = self._closing = True
        try:
            self._settle(self.settings.drain_timeout_s if timeout_s is None else timeout_s, stop_calls=True)
        finally:
            self._release()

    async def aclose(self, timeout_s: float | None = None) -> None:
        """`close()` from a coroutine: it waits in a worker thread, so this loop keeps running meanwhile and hands
        each call that finishes its result (a signal handler calling close() pauses the loop until it returns)."""
        await asyncio.to_thread(self.close, timeout_s)

    def _release(self) -> None:
        try:
            self.authored.close()
            self.portal.close()
            self.store.close()
            self.telemetry.shutdown()
        finally:
            self._closing = False

    def _settle_at_exit(self) -> None:
        """The first exit hook: drain while worker threads can still start (`close` follows at atexit). Calls
        still running are left to their threads (the interpreter waits for them); `close` stops what remains."""
        if not self._closed:
            self._settle(self.settings.drain_timeout_s, stop_calls=False)

    def _settle(self, timeout: float, *, stop_calls: bool) -> None:
        """Wait for the calls in flight and background work; past `timeout` (or on Ctrl-C) stop them."""
        if self.portal._loop is None:
            return
        try:
            if self.portal.run(self._drain(timeout), timeout_s=timeout + STUCK_GRACE_S):
                return
            why = f"after {timeout:.3g} s at exit"
        except KeyboardInterrupt:  # a second Ctrl-C while waiting: stop waiting, keep the work queued
            why = "when exit was interrupted"
        except TimeoutError:  # the loop never yielded (something blocks it): nothing on it can be stopped either
            log.warning("protege: the app's event loop is blocked; closing without waiting for its calls and work")
            return
        self._stop(why, stop_calls=stop_calls)

    async def _drain(self, timeout: float) -> bool:
        """Calls first (one that finishes may start background work), then background work; one deadline.
        True if nothing is left running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        calls_done = await self.portal.drain(timeout)
        left = await self.lifecycle.work.drain(self.cascade.background, max(0.0, deadline - loop.time()))
        return calls_done and not left

    def _stop(self, why: str, *, stop_calls: bool) -> None:
        """Stop the calls still running (their callers get a RunError saying why) and hand background jobs back."""
        work, others = self.lifecycle.work, self.cascade.background
        if stop_calls:
            message = (
                f"the app closed while this call was running: close() stopped it {why} (PROTEGE_DRAIN_TIMEOUT_S); "
                "the attempts it finished are in the store. Call again once the app is open"
            )
            if n := self.portal.run(self.portal.stop_calls(message)):
                log.warning(
                    "protege: %d call(s) still running %s were stopped; their callers got a RunError%s",
                    n,
                    why,
                    "; raise PROTEGE_DRAIN_TIMEOUT_S to let calls finish" if "interrupted" not in why else "",
                )
        stopped = self.portal.run(work.abandon(others))
        work.hand_back(stopped, why)

    def __enter__(self) -> Protege:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def at_exit(fn: Callable[[], None]) -> None:
    """Run `fn` at interpreter exit while threads can still be started: before concurrent.futures shuts its
    executors down (after which asyncio.to_thread raises "cannot schedule new futures after shutdown"), so
    background work can still finish. Falls back to atexit where threading's hook is missing (the fallback drains
    what needs no new thread)."""
    import concurrent.futures.thread  # noqa: F401  (its exit hook must be registered before ours: ours runs first)
    import threading

    register = getattr(threading, "_register_atexit", None)
    try:
        (register or atexit.register)(fn)
    except RuntimeError:  # the interpreter is already shutting down
        atexit.register(fn)
