"""`app.distill(task)`: dataset → train → evaluate → record → promote when retention passes the gate.
Also promotion and demotion of students (one promoted student per task at a time)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import BaseModel, Field

from protege.distill.prune import PRUNED_KEY, STUDENTS_DIR, is_pruned, sweep_unfinished, writing_student
from protege.errors import UserError
from protege.store import Store, StudentRow
from protege.store.models import new_id, utcnow
from protege.tasks import input_hash, same_wording

if TYPE_CHECKING:
    from protege.agents.cascade import TaskRuntime
    from protege.settings import Settings
    from protege.tasks import Policy, TaskSpec

log = logging.getLogger("protege")


class DistillReport(BaseModel):
    """What `app.distill` did: the dataset, the student, its metrics, and whether it was promoted.

    `retention` and `coverage` are the headline: end-to-end quality and the share of calls the student keeps, on
    eval answers nothing was tuned on (`measured_on` says how); the in-sample gate figures are in metrics."""

    task: str
    student_id: str
    dataset_id: str
    metrics: dict[str, Any]
    promoted: bool
    reason: str
    retention: float | None = Field(None, description="end-to-end retention on answers nothing was tuned on")
    coverage: float | None = Field(
        None, description="share of calls the student keeps (without a gate: those it answers validly)"
    )
    measured_on: str | None = Field(None, description="what the headline figures were counted on")


def promote(store: Store, student_id: str) -> StudentRow:
    """Make a student serve its task; the previously promoted one (if any) becomes a candidate again."""
    row = store.student(student_id)
    if row is None:
        raise UserError(f"no student {student_id!r}; list students with `protege students`")
    if is_pruned(row):
        when = (row.metrics or {})[PRUNED_KEY][:16]
        raise UserError(
            f"the weights of student {student_id!r} were pruned ({when}); it cannot serve again: "
            f"distill a new one with `protege distill {row.task_name}`"
        )
    current = store.promoted_student(row.task_name)
    if current is not None and current.id != row.id:
        store.update_student(current.id, state="candidate")
    return store.update_student(row.id, state="promoted", promoted_at=utcnow())


def demote(store: Store, task: str, *, reason: str = "demoted by a reviewer") -> StudentRow:
    """Take the task's promoted student out of service (calls go to replay/teacher again)."""
    row = store.promoted_student(task)
    if row is None:
        raise UserError(f"task {task!r} has no promoted student to demote; see `protege students {task}`")
    metrics = {**(row.metrics or {}), "demoted_reason": reason}
    return store.update_student(row.id, state="demoted", metrics=metrics)


def other_instructions(store: Store, task: str, version: int, instructions: str) -> list[int]:
    """The task's contract versions before `version` whose instructions differ from `instructions` (more than a
    re-wrapping): their answers may follow other instructions (a new rule for a field), so none of their traces is
    trained on."""
    rows = (store.task(task, v) for v in range(1, version))
    return [row.version for row in rows if row is not None and not same_wording(row.instructions, instructions)]


Progress = Callable[[str, int, "int | None"], None]
"""progress(stage, done, total): stages are select, near_dups, write (dataset), train, evaluate, and evaluate
behind programs (where the student is judged as it serves)."""

SERVED_FIGURES = {
    "n",
    "retention",
    "student_score",
    "exact_match",
    "field_accuracy",
    "parse_failure_rate",
    "median_latency_s",
    "scores",
    "confidences",
}
"""What `metrics["served"]` keeps of the judgement behind the programs (the mismatches stay with the student's own)."""


def distill(
    store: Store,
    task: TaskRuntime,
    settings: Settings,
    base_dir: Callable[[str], Path],
    *,
    force: bool = False,
    config: Any = None,
    progress: Progress | None = None,
    references: dict[str, dict] | None = None,
    auto_promote: bool = True,
    eval_fraction: float = 0.2,
    seed: int = 0,
    adapter: str | Path | None = None,
    programs_without: Callable[[Collection[str]], Any] | None = None,
) -> DistillReport:
    """Dataset → train → evaluate → record the student → promote when retention ≥ Policy.promote_at.

    Handed what it uses: the `store`, the registered `task`, the app's `settings` (project dir, student base) and
    `base_dir`, which turns a student base into a local checkpoint dir (`Protege.base_dir`).

    `adapter`: a student trained elsewhere (`python -m protege.distill.launch`, e.g. under `accelerate launch` on
    several GPUs) is evaluated and recorded instead of training one. It is evaluated on this build's eval split;
    the split is by input hash, so a build with the same `eval_fraction` and `seed` never holds out an input the
    adapter trained on.

    `programs_without(held_out)`: the task's field programs induced without the traces whose input hashes are in
    `held_out` (the app passes its program service's `without` when `Policy.program` is on). The student is then
    judged a second time as the cascade serves it — behind those programs, which fix the fields they decide — and
    promotion and its gate go by that judgement (`metrics["served"]`); its own per-field figures stay in
    `metrics` (the cascade leaves to it the fields it gets right more often than their program)."""
    from protege.agents.models.chat_format import with_student_prompt
    from protege.distill.answer_kinds import learn_for_student
    from protege.distill.dataset import build_dataset
    from protege.distill.train import CHECKPOINT_DIR, TrainConfig, train_student

    if adapter is not None and config is not None:
        raise UserError("pass either adapter= (a student trained elsewhere) or config= (train one here), not both")
    spec = task.spec
    stale = other_instructions(store, spec.name, task.version, spec.instructions)
    needed = spec.policy.min_traces
    if not force:
        _check_enough_traces(store, spec.name, needed, stale)
    if adapter is not None:  # checked before a dataset is built and written
        trained_student(Path(adapter), lambda: base_dir(settings.student_base))
    report = progress or (lambda stage, done, total: None)
    built = build_dataset(
        store,
        spec.name,
        instructions=spec.instructions,
        out_dir=settings.project_dir / "datasets",
        redact=spec.policy.redact,
        eval_fraction=eval_fraction,
        seed=seed,
        tools=[*task.tools.specs] or None,
        references=references,
        progress=report,
        contract=(task.version, spec.output_model),
        stale_versions=stale,
    )
    if not force and built.counts["selected"] < needed:  # earlier versions' answers that no longer fit are out
        _refuse_few_traces(
            spec.name,
            built.counts["selected"],
            needed,
            left_out=built.counts["stale_contract"],
            why="their instructions differ, or their answers no longer fit the output model",
        )
    train_rows, eval_rows = read_jsonl(built.train_path), read_jsonl(built.eval_path)
    if not train_rows or not eval_rows:
        raise UserError(
            f"task {spec.name!r}: {built.counts} — too few distinct inputs to train and evaluate; run more calls first"
        )
    base = base_dir(settings.student_base)
    swept = sweep_unfinished(store, settings.project_dir / STUDENTS_DIR, spec.name)
    if swept:
        mb = sum(p.freed_bytes for p in swept) / 1e6
        log.warning(
            "task %r: removed %d folder(s), %.0f MB, of distills that never finished", spec.name, len(swept), mb
        )
    student_id = new_id()
    # the folder goes if training, evaluating or recording fails or is interrupted: nothing could use its ~1 GB
    with writing_student(settings.project_dir / STUDENTS_DIR / spec.name / student_id) as folder:
        if adapter is not None:
            result, config = adopt_student(Path(adapter), base, folder)
        else:
            config = config or TrainConfig()
            result = train_student(
                train_rows,
                base,
                folder,
                config,
                output_schema=spec.output_schema,
                progress=lambda p: report("train", p.step, p.total_steps),
            )
            # never resumed: a rerun builds a new dataset (new traces, maybe a new contract) they never saw (a
            # fully fine-tuned student's checkpoints, with their optimizer state, are ~3 GB)
            shutil.rmtree(folder / CHECKPOINT_DIR, ignore_errors=True)
        adapter_dir = Path(result.adapter_path).absolute()  # read from any working directory
        profile = learn_for_student(
            train_rows, spec.output_schema, adapter_dir, copy_constraint=spec.policy.copy_constraint
        )  # read by LocalModel from here on
        eval_rows = with_student_prompt(eval_rows, config.prompt)  # asked as the student will be served
        metrics = _evaluate(spec, base, adapter_dir, student_id, eval_rows, programs_without, report)
        metrics["field_kinds"] = profile.kinds()
        metrics["train"] = result.model_dump(mode="json", exclude={"loss_history"}) | {
            "adapter_path": str(adapter_dir),
            "final_loss": result.loss_history[-1][1] if result.loss_history else result.train_loss,
        }
        if adapter is not None:
            metrics["train"]["trained_elsewhere"] = str(adapter)
        passed, reason = promotion_verdict(metrics, spec.policy)
        if "served_error" in metrics:
            reason += f" (judged alone: judging it behind its field programs failed: {metrics['served_error']})"
        metrics["headline"] = headline(metrics, spec.policy)
        metrics["verdict"] = {"passed": passed, "reason": reason}  # what a reviewer promoting by hand is reminded of
        store.add_student(
            StudentRow(
                id=student_id,
                task_name=spec.name,
                base=settings.student_base,
                adapter_path=str(adapter_dir),
                adapter_hash=dir_hash(adapter_dir),
                dataset_id=built.id,
                metrics=metrics,
                params=config.model_dump(mode="json"),
            )
        )
    if passed and auto_promote:
        promote(store, student_id)
    return DistillReport(
        task=spec.name,
        student_id=student_id,
        dataset_id=built.id,
        metrics=metrics,
        promoted=passed and auto_promote,
        reason=reason,
        **metrics["headline"],
    )


def headline(metrics: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The figures to quote: the gate's held-out ones when a calibrated gate serves, a policy floor's measured
    ones, else the ungated student's on the eval split (which it never trained on)."""
    from protege.distill.gate import gated, stored_gate

    gate, judged = stored_gate(metrics), serving_figures(metrics)
    behind = ", behind its field programs" if "served" in metrics else ""
    if gate is None and policy.min_confidence is not None:
        gate = gated(judged["confidences"], judged["scores"], policy.min_confidence)
        gate.measured_on = "fixed floor (Policy.min_confidence), eval split"
    if gate is not None:
        return {"retention": gate.retention, "coverage": gate.coverage, "measured_on": gate.measured_on + behind}
    # an invalid answer (unparseable, cut short) escalates as the cascade serves it: the student does not keep it
    coverage = 1.0 - (judged.get("parse_failure_rate") or 0.0)
    return {"retention": judged["retention"], "coverage": coverage, "measured_on": "eval split, no gate" + behind}


def serving_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The eval figures a student is promoted, gated and watched by: as it serves behind its task's field
    programs when it was judged so (`metrics["served"]`), else its own."""
    return metrics.get("served") or metrics


def adopt_student(trained: Path, base_dir: Path, folder: Path) -> tuple[Any, Any]:
    """Copy a student trained elsewhere into `folder`/adapter; its TrainResult and TrainConfig from its metadata.
    `trained`: the launch script's OUT dir or its adapter dir. Its base must be this app's student base."""
    from protege.distill.train import ADAPTER_DIR, TrainConfig, TrainResult

    trained, meta = trained_student(trained, lambda: base_dir)
    target = folder / ADAPTER_DIR
    shutil.copytree(trained, target)
    result = TrainResult(**{**meta["metrics"], "adapter_path": target})
    # a student trained before the prompt styles existed saw the whole instructions
    return result, TrainConfig(**{"prompt": "instructions", **meta["config"]})


def trained_student(trained: Path, base_dir: Callable[[], Path]) -> tuple[Path, dict[str, Any]]:
    """The folder of a student trained elsewhere (the launch script's OUT dir or its adapter dir) and its metadata;
    a UserError unless protege trained it on this app's student base (`base_dir()`: resolved only then)."""
    from protege.distill.train import ADAPTER_DIR, read_metadata

    if not trained.exists():
        raise UserError(
            f"{str(trained)!r} does not exist; pass the OUT folder of `python -m protege.distill.launch DATASET OUT`"
        )
    if (trained / ADAPTER_DIR).is_dir() and read_metadata(trained) is None:
        trained = trained / ADAPTER_DIR
    meta = read_metadata(trained) if trained.is_dir() else None
    if meta is None:
        raise UserError(
            f"{str(trained)!r} is not a student protege trained (no protege_student.json); train one with "
            f"`python -m protege.distill.launch DATASET OUT` and pass OUT"
        )
    base = base_dir()
    if Path(meta["base"]).name != base.name:
        raise UserError(
            f"{str(trained)!r} was trained on base {meta['base']!r}, but this app's student base is "
            f"{str(base)!r}; train it on the same base (launch --base) or set student_base to match"
        )
    return trained, meta


def refused_because(metrics: dict[str, Any] | None) -> str | None:
    """Why distill kept a student as a candidate (its verdict's reason), or None where it passed or is older."""
    verdict = (metrics or {}).get("verdict") or {}
    return None if verdict.get("passed", True) else verdict.get("reason")


def promotion_verdict(metrics: dict[str, Any], policy: Policy) -> tuple[bool, str]:
    """Promote on retention; failing that, on the end-to-end retention of a confidence gate (which then goes into
    `metrics["gate"]` and serves with the student). Both as the student serves: behind its task's field programs
    where it was judged so (`serving_figures`). A calibrated floor is judged by its cross-fitted figures (on
    eval answers it was not chosen on), never by the in-sample ones; a floor set in the policy is measured."""
    from protege.distill.gate import cross_fitted, gated

    judged = serving_figures(metrics)
    retention, target = judged["retention"], policy.promote_at
    n = judged.get("n")
    if n is not None and n < policy.min_eval:  # one right answer is retention 1.0, and says next to nothing
        answers = "answer" if n == 1 else "answers"
        return False, (
            f"judged on {n} eval {answers}, fewer than Policy.min_eval {policy.min_eval}: too few to promote on "
            f"(retention {retention:.3f}); distill again once the task has more traces, or promote it by hand "
            f"(`protege promote ID`)"
        )
    served = "served behind its field programs, " if "served" in metrics else ""
    if policy.min_confidence is not None:
        gate = gated(judged["confidences"], judged["scores"], policy.min_confidence)
        passed = gate.retention >= target
        return passed, (
            f"{served}with Policy.min_confidence {gate.min_confidence:.3f} the student keeps {gate.coverage:.0%} "
            f"of eval answers; end-to-end retention {gate.retention:.3f} "
            f"{'≥' if passed else '<'} Policy.promote_at {target:.3f}"
        )
    if retention >= target:
        return True, f"{served}retention {retention:.3f} ≥ Policy.promote_at {target:.3f}"
    reason = f"{served}retention {retention:.3f} < Policy.promote_at {target:.3f}"
    floor = cross_fitted(judged["confidences"], judged["scores"], target=target)
    if floor is None:
        return False, f"{reason}, and no confidence floor reaches it"
    chosen_on = (
        f"; {floor.in_sample.retention:.3f} on the answers the floor was chosen on"
        if floor.in_sample is not None
        else ""
    )
    honest = (
        f"gated at confidence ≥ {floor.min_confidence:.3f} it keeps {floor.coverage:.0%} of eval answers "
        f"(their quality {floor.kept_quality:.3f}) and escalates the rest: end-to-end retention "
        f"{floor.retention:.3f} ({floor.measured_on}{chosen_on})"
    )
    if floor.retention < target:
        return False, f"{reason}; {honest} < {target:.3f}"
    if floor.coverage < policy.min_coverage:
        return False, f"{reason}; {honest}, but {floor.coverage:.0%} < Policy.min_coverage {policy.min_coverage:.0%}"
    metrics["gate"] = floor.model_dump()
    return True, f"{reason} ungated; {honest} ≥ {target:.3f}"


def _check_enough_traces(store: Store, task: str, needed: int, stale: list[int]) -> None:
    """Counts the traces a dataset is built from, not every valid trace: the teacher's and imported ones (replay
    answers passed the gate and then left a handful of rows to train on: 34 "validated", 10 trained), none of the
    `stale` versions, whose instructions differ (counted, 80 traces of v1 passed min_traces 60 for 2 of v2, and
    the student trained on 1 row)."""
    have = store.count_dataset_traces(task, exclude_versions=stale)
    if have < needed:
        left_out = store.count_dataset_traces(task) - have
        _refuse_few_traces(task, have, needed, left_out=left_out, why="their instructions differ from the current ones")


def _refuse_few_traces(task: str, have: int, needed: int, *, left_out: int, why: str) -> NoReturn:
    out = f" ({left_out} traces of earlier task versions are left out: {why})" if left_out else ""
    raise UserError(
        f"task {task!r} has {have} teacher or imported traces to train on and Policy.min_traces is {needed}{out}; "
        f"run more calls, lower min_traces, or pass force=True (`protege distill --force`)"
    )


def _evaluate(
    spec: TaskSpec,
    base_dir: Path,
    adapter: Path,
    student_id: str,
    eval_rows: list[dict],
    programs_without: Callable[[Collection[str]], Any] | None,
    report: Progress,
) -> dict[str, Any]:
    from protege.agents.models.local import LocalModel
    from protege.distill.evaluate import evaluate_student

    model = LocalModel(base_dir, adapter=adapter, name=f"local:{student_id}")
    alone = evaluate_student(
        model,
        eval_rows,
        output_model=spec.output_model,
        score=spec.score,
        progress=lambda done, total: report("evaluate", done, total),
    )
    metrics = alone.model_dump(mode="json")
    if programs_without is None:
        return metrics
    try:
        served = _behind_programs(model, spec, eval_rows, alone, programs_without, report)
    except Exception as exc:  # the trained student is kept, judged alone; the error says why
        log.exception("task %r: judging the student behind its field programs failed; it is judged alone", spec.name)
        metrics["served_error"] = f"{type(exc).__name__}: {exc}"[:500]
        return metrics
    if served is not None:
        metrics["served"] = served
    return metrics


def _behind_programs(
    model: Any,
    spec: TaskSpec,
    eval_rows: list[dict],
    alone: Any,
    programs_without: Callable[[Collection[str]], Any],
    report: Progress,
) -> dict[str, Any] | None:
    """The student judged as the cascade serves it: programs induced without the eval split's traces fix the
    fields they decide on each eval input (left to the student where it beat their program, as the cascade
    does), the student answers the rest. None when no program decides a field of any eval input."""
    from protege.agents.fixed_fields import defer_to_student, program_values
    from protege.distill.evaluate import evaluate_student

    programs = programs_without({row.get("input_hash") or input_hash(row["input"]) for row in eval_rows})
    fixed = [
        defer_to_student(program_values(programs, row["input"]), programs, alone.field_accuracy) for row in eval_rows
    ]
    if not any(fixed):
        return None
    judged = evaluate_student(
        model,
        eval_rows,
        output_model=spec.output_model,
        score=spec.score,
        fixed=fixed,
        progress=lambda done, total: report("evaluate behind programs", done, total),
    )
    figures = judged.model_dump(mode="json", include=SERVED_FIGURES)
    every = set(spec.output_model.model_fields)
    # where programs decide every field the program tier serves the call, not the student: no gate applies (a
    # missing confidence passes it) and the drift monitor never sees a student confidence for it
    figures["confidences"] = [None if set(f) >= every else c for f, c in zip(fixed, figures["confidences"])]
    return figures | {
        "programs": sorted(programs.served),
        "fields_fixed_mean": sum(map(len, fixed)) / len(fixed),
    }


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dir_hash(path: Path) -> str:
    """sha256 over a folder's files (names and bytes), to pin the adapter a student row points at."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()
