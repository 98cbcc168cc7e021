"""A recurring stream through the cascade after warm-up: which tier serves each call, end-to-end quality, total cost
— each against teacher-only, measured in the same run on the same calls.

Warm-up is the quality benchmark's preparation (the pool called through the teacher, `app.distill`, the student
promoted when its retention passes `Policy.promote_at`, alone or behind the confidence gate `app.distill`
calibrated). The stream then calls held-out inputs (drawn with replacement, seeded) with normal routing: the
student when one is promoted (escalating answers that fail validation or fall under its gate), the teacher
otherwise. Replay is not
eligible: the teacher's skill is not approved (the default review policy; the quality benchmark measures replay
on its own). Total cost is every trace the stream caused, shadow runs and skill upkeep included. Teacher-only is
a fresh app with only the teacher, on the same calls.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from statistics import fmean
from typing import Any

from bench.common import Context, Headline, NotRun, Result, Table
from bench.data import Workload, output_of, workloads

TITLE = "Recurring stream vs teacher-only"
TARGET_QUALITY = 0.99
TARGET_CUT = 0.95


def run(ctx: Context, calls: int | None = None) -> Result:
    from bench.quality import prepare

    n = calls or ctx.pick(100, 1000)
    chosen = workloads(ctx)[:1] if ctx.quick else workloads(ctx)
    result = Result(data={"calls": n, "workloads": {}})
    skipped = []
    for w in chosen:
        p = prepare(ctx, w)
        if p.report is None:
            skipped.append(f"{w.name}: no student ({p.distill_error})")
            continue
        ctx.log(f"[bench] stream: {w.name}, {n} calls")
        data = stream(ctx, p, w, n)
        result.data["workloads"][w.name] = data
        _report(result, w, data)
    if not result.data["workloads"]:
        raise NotRun("; ".join(skipped) or "no workload to stream")
    result.notes += [f"not streamed: {s}" for s in skipped]
    result.notes.append(
        "Quality = exact match against the labels of the called inputs; teacher-only answers from the labels, so "
        "its quality is 1. Costs are priced from the package's price table (teacher as claude-opus-4-5); local "
        "tiers cost their wall time at the machine price (settings.local_cost_per_hour; default a 2-vCPU cloud "
        "instance at $0.0893/h). 'Total' includes shadow teacher runs (Policy.shadow_rate) and skill upkeep."
    )
    return result


def stream(ctx: Context, p: Any, w: Workload, n: int) -> dict[str, Any]:
    from bench.quality import run_calls
    from protege.distill.gate import stored_gate

    app, task = p.app, w.task_name
    gate = stored_gate(p.report.metrics)  # applied by the cascade itself: the student was promoted with it
    rng = random.Random(0)
    rows = [rng.choice(w.heldout) for _ in range(n)]
    before = {t.id for t in app.store.traces(task, limit=None)}
    start = time.perf_counter()
    served = run_calls(app, task, rows, tier=None)
    wall = time.perf_counter() - start
    app.wait()
    spent = Counter()
    for t in app.store.traces(task, limit=None):
        if t.id not in before:
            spent["shadow" if t.shadow else t.tier] += t.cost_usd
    baseline = teacher_only(ctx, w, rows)
    return {
        "served": served,
        "spend_by_tier": dict(spent),
        "total_usd": sum(spent.values()),
        "wall_s": wall,
        "teacher_only": baseline,
        "promoted": p.report.promoted,
        "gate": gate.model_dump() if gate is not None else None,
    }


def teacher_only(ctx: Context, w: Workload, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from bench.quality import TEACHER_PRICE, run_calls
    from protege import Protege
    from protege.agents import ReferenceModel

    folder = ctx.folder("stream", f"teacher-only-{time.time_ns()}")
    teacher = ReferenceModel([(r["input"], output_of(r)) for r in w.pool + w.heldout], price_as=TEACHER_PRICE)
    app = Protege(db=f"sqlite:///{folder / 'protege.db'}", teacher=teacher, project_dir=folder)
    try:
        app.task(w.task)
        out = run_calls(app, w.task_name, rows, tier=None)
        app.wait()
        out["total_usd"] = sum(t.cost_usd for t in app.store.traces(w.task_name, limit=None))
        return out
    finally:
        app.close()


def _report(result: Result, w: Workload, d: dict[str, Any]) -> None:
    served, base = d["served"], d["teacher_only"]
    n = served["n"]
    quality_ratio = served["quality"] / base["quality"] if base["quality"] else None
    cost_ratio = d["total_usd"] / base["total_usd"] if base["total_usd"] else None
    result.headlines += [
        Headline(
            metric=f"end-to-end quality, {n} calls, {w.name}",
            value=served["quality"],
            unit="exact match",
            baseline=base["quality"],
            baseline_label="teacher-only",
            target=f"≥ {TARGET_QUALITY:g}× teacher-only",
            met=quality_ratio is not None and quality_ratio >= TARGET_QUALITY,
        ),
        Headline(
            metric=f"total cost per 1k calls, {w.name}",
            value=d["total_usd"] / n * 1000,
            unit="USD",
            baseline=base["total_usd"] / n * 1000,
            baseline_label="teacher-only, USD per 1k",
            target=f"≥ {TARGET_CUT:.0%} cut (ratio ≤ {1 - TARGET_CUT:.2f})",
            met=cost_ratio is not None and cost_ratio <= 1 - TARGET_CUT,
        ),
    ]
    tiers = Counter(served["served"])
    rows = []
    for tier in ("student", "replay", "teacher", "failed"):
        idx = [i for i, s in enumerate(served["served"]) if s == tier]
        rows.append(
            [
                tier,
                len(idx),
                len(idx) / n,
                fmean(served["scores"][i] for i in idx) if idx else None,
                d["spend_by_tier"].get(tier, 0.0),
            ]
        )
    rows.append(["shadow runs (teacher)", None, None, None, d["spend_by_tier"].get("shadow", 0.0)])
    rows.append(["= protege total", n, 1.0, served["quality"], d["total_usd"]])
    rows.append(["teacher-only (baseline)", n, None, base["quality"], base["total_usd"]])
    result.tables.append(
        Table(
            f"{w.name}: {n} calls after warm-up (student promoted: {d['promoted']}; {_gate_text(d['gate'])})",
            ["served by", "calls", "share", "quality of its answers", "spend USD"],
            rows,
        )
    )
    result.notes.append(
        f"{w.name}: tier mix {dict(tiers)}; latency p50 {served['latency_p50_ms']:.0f} ms, p99 "
        f"{served['latency_p99_ms']:.0f} ms (teacher-only p50 {base['latency_p50_ms']:.1f} ms, "
        f"a local reference model, not a network call)."
    )


def _gate_text(gate: dict[str, Any] | None) -> str:
    if not gate:
        return "no confidence gate"
    return (
        f"confidence gate ≥ {gate['min_confidence']:.3f}, which kept {gate['coverage']:.0%} of the eval split at "
        f"end-to-end retention {gate['retention']:.3f}"
    )


def plot(ax: Any, record: dict[str, Any]) -> None:
    """Cost per 1k calls: teacher-only vs protege, per workload (log scale)."""
    wls = record["data"]["workloads"]
    n = record["data"]["calls"]
    names = list(wls)
    ax.bar(
        [i - 0.2 for i in range(len(names))],
        [wls[k]["teacher_only"]["total_usd"] / n * 1000 for k in names],
        width=0.4,
        color="#999999",
        label="teacher-only",
    )
    ax.bar(
        [i + 0.2 for i in range(len(names))],
        [max(wls[k]["total_usd"], 1e-6) / n * 1000 for k in names],
        width=0.4,
        color="#3b75af",
        label="protege cascade",
    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("USD per 1k calls (log)")
    ax.set_title(f"Stream of {n} calls: cost")
    ax.legend(fontsize=8)
