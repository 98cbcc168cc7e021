"""Quality and cost per tier on real workloads, on held-out inputs the student never trained on.

Per workload (bench/data.py): the app's teacher is a ReferenceModel over the labelled examples, priced as
claude-opus-4-5; the pool inputs are called through the app (teacher traces, and the teacher's exemplar skill);
`app.distill` trains a student on those traces. Then each tier answers the held-out inputs with the tier forced
(`app.run(..., tier=..., escalate=False)`): the student; replay by the local base model (`local:smollm2-135m`)
without a skill and with the approved skill; the teacher. TF-IDF + logistic regression, trained on the same pool,
stands beside them. Quality is exact match against the labels (the task's `score`); retention = tier / teacher.
Order matters: held-out replay answers are valid traces, so they are made after distillation, never before.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from bench.common import Context, Headline, Result, Table, newest_with_student, percentile, ungated
from bench.data import Workload, output_of, workloads
from protege.agents.pricing import load_prices

TITLE = "Quality and cost per tier"
TEACHER_PRICE = "anthropic:claude-opus-4-5"
REPLAY = "local:smollm2-135m"
PROMOTE_AT = 0.95
TIERS = ("teacher", "replay, no skill", "replay + skill", "student", "TF-IDF + LR", "TF-IDF + LR, whole pool")


@dataclass
class Prepared:
    """A workload's app after warm-up and distillation (shared with the stream and inference benchmarks)."""

    workload: Workload
    app: Any
    warmup: dict[str, Any]
    report: Any = None
    distill_error: str | None = None
    distill_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def run(ctx: Context) -> Result:
    result = Result(data={"workloads": {}})
    for w in workloads(ctx):
        ctx.log(f"[bench] quality: {w.name} ({len(w.pool)} pool, {len(w.heldout)} held out)")
        tiers, p = evaluate(ctx, w)
        result.data["workloads"][w.name] = tiers
        result.tables.append(_tier_table(w, tiers))
        result.notes.extend(f"{w.name}: {note}" for note in p.notes)
        teacher, student = tiers["teacher"], tiers["student"]
        if teacher.get("quality") and student.get("quality") is not None:
            retention = student["quality"] / teacher["quality"]
            result.headlines.append(
                Headline(
                    metric=f"student retention, {w.name}",
                    value=student["quality"],
                    unit="exact match",
                    baseline=teacher["quality"],
                    baseline_label="teacher exact match",
                    target=f"≥ {PROMOTE_AT:g}",
                    met=retention >= PROMOTE_AT,
                )
            )
            tfidf = tiers["TF-IDF + LR"]
            if tfidf.get("quality") is not None:
                result.headlines.append(
                    Headline(
                        metric=f"student vs TF-IDF + LR on the same training examples, {w.name}",
                        value=student["quality"],
                        unit="exact match",
                        baseline=tfidf["quality"],
                        baseline_label=f"TF-IDF + LR trained on the same {tfidf['train_rows']} rows",
                        target="above the classic baseline",
                        met=student["quality"] > tfidf["quality"],
                    )
                )
        else:
            result.notes.append(f"{w.name}: student not evaluated: {student.get('error') or p.distill_error}")
        with_skill, without = tiers["replay + skill"], tiers["replay, no skill"]
        if with_skill.get("quality") is not None and without.get("quality") is not None:
            result.headlines.append(
                Headline(
                    metric=f"value of the skill: replay quality with vs without, {w.name}",
                    value=with_skill["quality"],
                    unit="exact match",
                    baseline=without["quality"] or None,
                    baseline_label="replay without skill",
                )
            )
        if p.report is not None:
            result.tables.append(_distill_table(w, p))
    result.notes.append(
        f"Teacher: ReferenceModel answering from the labels, priced as {TEACHER_PRICE} on real token counts of its "
        f"prompt and answer (so its quality is 1 by construction and its cost is what Opus would charge). Replay: "
        f"{REPLAY}, the untrained local base model, with the teacher's approved skill in the prompt or without. "
        f"Local tiers (and the TF-IDF baseline) cost their wall time at the machine price "
        f"(settings.local_cost_per_hour; default a 2-vCPU cloud instance at $0.0893/h). Invalid = the answer failed "
        f"validation (counted as wrong)."
    )
    return result


# -- preparation (shared) --------------------------------------------------------------------------------------------


def prepare(ctx: Context, w: Workload) -> Prepared:
    """Warm up the workload's app on its pool, then distill a student; cached per run."""
    cache = ctx.shared.setdefault("prepared", {})
    if w.name in cache:
        return cache[w.name]
    os.environ.setdefault("PROTEGE_CACHE_DIR", str(ctx.cache_dir))  # one converted base for every app
    if ctx.reuse:
        cache[w.name] = reuse(ctx, w)
        return cache[w.name]
    app = _app(w, ctx.folder("quality", _slug(w.name), str(time.time_ns())))
    calls = run_calls(app, w.task_name, w.pool, tier=None)
    app.wait()
    p = Prepared(w, app, warmup=calls)
    start = time.perf_counter()
    try:
        _require_student_pieces()
        p.report = app.distill(w.task_name, config=quick_train_config() if ctx.quick else None)
        ctx.shared.setdefault("distill", {})[w.name] = p.report.metrics
    except Exception as exc:  # the other tiers still get measured
        p.distill_error = f"{type(exc).__name__}: {exc}"
    p.distill_s = time.perf_counter() - start
    cache[w.name] = p
    return p


def _app(w: Workload, folder: Any) -> Any:
    from protege import Policy, Protege
    from protege.agents import ReferenceModel

    teacher = ReferenceModel([(r["input"], output_of(r)) for r in w.pool + w.heldout], price_as=TEACHER_PRICE)
    app = Protege(db=f"sqlite:///{folder / 'protege.db'}", teacher=teacher, replay=REPLAY, project_dir=folder)
    app.task(w.task, policy=Policy(min_traces=min(200, len(w.pool))))
    return app


def reuse(ctx: Context, w: Workload) -> Prepared:
    """--reuse: the newest earlier run of this workload that trained a student, its promotion decided again by
    the current rules (`promotion_verdict`), instead of warming up and training anew."""
    from protege.distill.pipeline import DistillReport, promote, promotion_verdict

    runs = ctx.scratch / "quality" / _slug(w.name)
    app, row, folder = newest_with_student(ctx, runs, w.name, w.task_name, lambda f: _app(w, f))
    metrics = dict(row.metrics or {})
    passed, reason = promotion_verdict(metrics, app.handle(w.task_name).spec.policy)
    app.store.update_student(row.id, metrics=metrics, state="candidate")
    if passed:
        promote(app.store, row.id)
    ctx.log(f"[bench] reusing student {row.id[:8]} of {folder}: {reason}")
    report = DistillReport(
        task=w.task_name,
        student_id=row.id,
        dataset_id=row.dataset_id or "",
        metrics=metrics,
        promoted=passed,
        reason=reason,
    )
    p = Prepared(w, app, warmup={}, report=report, notes=[f"reused the student of {folder.name} (--reuse)"])
    ctx.shared.setdefault("distill", {})[w.name] = metrics
    return p


def quick_train_config() -> Any:
    """Quick mode trains one LoRA epoch at lr 2e-3: ~2 min on 2 cores, not the full run (and a weak student)."""
    from protege.distill.train import TrainConfig

    return TrainConfig(method="lora", epochs=1, learning_rate=2e-3)


def _require_student_pieces() -> None:
    """Fail fast (before minutes of training) when the local model or the evaluator has not landed yet."""
    import importlib.util

    for module in ("protege.agents.models.local", "protege.distill.evaluate"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"{module} is not there yet")


def run_calls(app: Any, task: str, rows: list[dict[str, Any]], *, tier: str | None) -> dict[str, Any]:
    """Call the task on each row (tier forced, no escalation, when given); score against the labels."""
    from protege.errors import AllTiersFailed, ModelError, ValidationFailed

    spec = app.handle(task).spec
    fields = list(spec.output_model.model_fields)
    scores, field_hits, costs, latencies, invalid, served, confidences = [], [], [], [], 0, [], []
    for row in rows:
        expected = spec.output_model.model_validate(output_of(row))
        start = time.perf_counter()
        try:
            res = app.run(task, row["input"], tier=tier, escalate=tier is None)
            actual, cost, served_by = res.output, res.cost_usd, res.tier
            confidences.append(res.attempts[-1].gate_confidence)  # the figure the floor was calibrated on
        except (ValidationFailed, AllTiersFailed, ModelError) as exc:
            # a failed answer counts as wrong, and its cost still counts
            attempts = getattr(exc, "attempts", None) or []
            actual, cost, served_by, invalid = None, sum(a.cost_usd for a in attempts), "failed", invalid + 1
            confidences.append(0.0)  # for a gate: a failed answer escalates whatever its confidence
        latencies.append(time.perf_counter() - start)
        scores.append(float(spec.score(expected, actual)) if actual is not None else 0.0)
        field_hits.append(fmean(getattr(expected, f) == getattr(actual, f) for f in fields) if actual else 0.0)
        costs.append(cost)
        served.append(served_by)
    return {
        "n": len(rows),
        "quality": fmean(scores),
        "field_accuracy": fmean(field_hits),
        "invalid": invalid / len(rows),
        "cost_per_1k_usd": fmean(costs) * 1000,
        "latency_p50_ms": percentile(latencies, 50) * 1e3,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "scores": scores,
        "served": served,
        "confidences": confidences,
    }


# -- evaluation ------------------------------------------------------------------------------------------------------


def _recipe(metrics: dict[str, Any]) -> str:
    method = (metrics.get("train") or {}).get("method", "lora")
    return "full fine-tune of" if method == "full" else "LoRA on"


def evaluate(ctx: Context, w: Workload) -> tuple[dict[str, dict[str, Any]], Prepared]:
    p = prepare(ctx, w)
    app, task = p.app, w.task_name
    replay_n = min(len(w.heldout), ctx.pick(10, 200))  # the untrained base on a CPU: slow, and a sample will do
    same = student_train_rows(p)  # the classic baseline learns from exactly what the student learned from
    tiers: dict[str, dict[str, Any]] = {"TF-IDF + LR": _guard(lambda: tfidf_tier(w, same or w.pool))}
    if same and len(same) < len(w.pool):
        tiers["TF-IDF + LR, whole pool"] = _guard(lambda: tfidf_tier(w, w.pool))
    if p.report is not None:
        tiers["student"] = _guard(lambda: _student_alone(app, task, w.heldout, p))
        tiers["student"]["model"] = f"local:{p.report.student_id[:8]} ({_recipe(p.report.metrics)} smollm2-135m)"
    else:
        tiers["student"] = {"error": f"app.distill failed: {p.distill_error}"}
    tiers["replay, no skill"] = _guard(lambda: run_calls(app, task, w.heldout[:replay_n], tier="replay"))
    tiers["replay + skill"] = _guard(lambda: _with_skill(app, task, w.heldout[:replay_n], p))
    tiers["teacher"] = _guard(lambda: run_calls(app, task, w.heldout, tier="teacher"))
    for name, model in (
        ("teacher", f"reference (priced as {TEACHER_PRICE})"),
        ("replay, no skill", REPLAY),
        ("replay + skill", REPLAY),
        ("TF-IDF + LR", "scikit-learn, the student's train split"),
        ("TF-IDF + LR, whole pool", f"scikit-learn, all {len(w.pool)} pool rows"),
    ):
        if name in tiers:
            tiers[name].setdefault("model", model)
    return tiers, p


def _student_alone(app: Any, task: str, rows: list[dict[str, Any]], p: Prepared) -> dict[str, Any]:
    """The student's own answers to every held-out input: a confidence gate it was promoted behind is lifted for
    the measurement (the stream measures the gate at work); what that gate would have done here is noted."""
    from protege.distill.gate import gated, stored_gate

    with ungated(app, task):
        out = run_calls(app, task, rows, tier="student")
    gate = stored_gate(p.report.metrics)
    if gate is not None:
        held_out = gated(out["confidences"], out["scores"], gate.min_confidence)
        p.notes.append(
            f"the student's gate on the held-out inputs: confidence ≥ {gate.min_confidence:.3f} keeps "
            f"{held_out.coverage:.0%} of them at quality {held_out.kept_quality:.3f}, end to end "
            f"{held_out.retention:.3f} with the teacher answering the rest (on its eval split: {gate.coverage:.0%}, "
            f"{gate.retention:.3f})"
        )
    return out


def _with_skill(app: Any, task: str, rows: list[dict[str, Any]], p: Prepared) -> dict[str, Any]:
    """Approve the teacher's newest skill, replay with it, then retire it (replay stays out of later routing)."""
    app.wait()
    skill = app.skill(task)
    if skill is None:
        raise RuntimeError("the teacher wrote no skill during warm-up")
    app.approve_skill(task, reviewer="bench")
    try:
        out = run_calls(app, task, rows, tier="replay")
    finally:
        app.skills.retire(task, by="bench", note="benchmark: measured replay quality only")
        app.tiers.invalidate(task)
    out["skill"] = f"v{skill.version} ({skill.kind}, {len(skill.text.splitlines())} lines)"
    p.notes.append(f"skill replayed: {out['skill']}, approved for the measurement and retired after it")
    return out


def student_train_rows(p: Prepared) -> list[dict[str, Any]]:
    """The pool rows in the student's training split (its dataset's train file), [] without a student."""
    import json

    from protege.tasks import input_hash

    dataset = p.app.store.dataset(p.report.dataset_id) if p.report is not None else None
    if dataset is None:
        return []
    by_hash = {input_hash(r["input"]): r for r in p.workload.pool}
    with open(f"{dataset.path}/train.jsonl", encoding="utf-8") as lines:
        hashes = [input_hash(json.loads(json.loads(line)["messages"][1]["content"])) for line in lines]
    return [by_hash[h] for h in hashes if h in by_hash]


def tfidf_tier(w: Workload, train: list[dict[str, Any]]) -> dict[str, Any]:
    from bench.tfidf import TfidfBaseline

    base = TfidfBaseline().fit(train, [output_of(r) for r in train])
    spec_model = _output_model(w)
    scores, fields, latencies, invalid = [], [], [], 0
    for row in w.heldout:
        expected = spec_model.model_validate(output_of(row))
        start = time.perf_counter()
        predicted = base.predict(row["input"])
        latencies.append(time.perf_counter() - start)
        try:
            actual = spec_model.model_validate(predicted)
        except ValueError:
            actual, invalid = None, invalid + 1
        scores.append(1.0 if actual == expected else 0.0)
        fields.append(fmean(predicted.get(f) == v for f, v in output_of(row).items()))
    return {
        "n": len(w.heldout),
        "quality": fmean(scores),
        "field_accuracy": fmean(fields),
        "invalid": invalid / len(w.heldout),
        "cost_per_1k_usd": fmean(latencies) * load_prices().machine_price_per_hour() / 3600 * 1000,
        "latency_p50_ms": percentile(latencies, 50) * 1e3,
        "latency_p99_ms": percentile(latencies, 99) * 1e3,
        "train_s": base.train_s,
        "train_rows": len(train),
    }


def _output_model(w: Workload) -> Any:
    from protege.tasks import TaskSpec

    return TaskSpec(w.task).output_model


def _guard(fn: Any) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:  # a tier whose piece has not landed is reported, not fatal
        return {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}


# -- tables and plot -------------------------------------------------------------------------------------------------


def _tier_table(w: Workload, tiers: dict[str, dict[str, Any]]) -> Table:
    teacher = tiers["teacher"]
    rows = []
    for name in TIERS:
        t = tiers.get(name)
        if t is None:
            continue
        if "error" in t:
            rows.append([name, t.get("model", ""), f"not run: {t['error']}", None, None, None, None, None, None, None])
            continue
        retention = t["quality"] / teacher["quality"] if teacher.get("quality") else None
        cost_ratio = t["cost_per_1k_usd"] / teacher["cost_per_1k_usd"] if teacher.get("cost_per_1k_usd") else None
        rows.append(
            [
                name,
                t.get("model", ""),
                t["n"],
                t["quality"],
                t["field_accuracy"],
                t["invalid"],
                retention,
                t["cost_per_1k_usd"],
                cost_ratio,
                t["latency_p50_ms"],
            ]
        )
    return Table(
        f"{w.name}: held-out quality and cost per tier ({len(w.pool)} pool traces)",
        [
            "tier",
            "model",
            "held-out n",
            "exact match",
            "field accuracy",
            "invalid",
            "retention vs teacher",
            "$ per 1k calls",
            "cost vs teacher",
            "latency p50 ms",
        ],
        rows,
    )


def _distill_table(w: Workload, p: Prepared) -> Table:
    m = p.report.metrics
    train = m.get("train", {})
    return Table(
        f"{w.name}: app.distill",
        ["student", "promoted", "reason", "distill wall s", "train rows", "train tokens/s", "its own eval retention"],
        [
            [
                p.report.student_id[:8],
                p.report.promoted,
                p.report.reason,
                p.distill_s,
                train.get("rows"),
                train.get("tokens_per_s"),
                m.get("retention"),
            ]
        ],
    )


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def plot(ax: Any, record: dict[str, Any]) -> None:
    """Grouped bars: held-out exact match per tier, one group per workload."""
    workloads_ = record["data"]["workloads"]
    width = 0.8 / len(TIERS)
    for j, tier in enumerate(TIERS):
        values = [(wl.get(tier) or {}).get("quality") or 0.0 for wl in workloads_.values()]
        ax.bar(
            [i + (j - len(TIERS) / 2 + 0.5) * width for i in range(len(workloads_))], values, width=width, label=tier
        )
    ax.set_xticks(range(len(workloads_)), list(workloads_))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("held-out exact match")
    ax.set_title("Quality per tier (teacher = labels)")
    ax.legend(fontsize=7)
