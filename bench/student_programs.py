"""Programs + student against the student alone (issues 22 and 15): a student trained with the default recipe on
300 traces of a teacher that only answers, measured on unseen held-out calls with and without the induced programs.

Per workload (the bundled orders and the generated Debian changelogs with the mess of real entries — a count
field and a list of bug numbers, the kind of fields a small student gets wrong): 300 pool examples become valid
teacher traces in a fresh SQLite store; `app.programs.induce` finds the fields' programs; `app.distill` trains the
student (default TrainConfig, the bundled SmolLM2-135M base) and gates it. Then each unseen call is answered
twice, with no teacher to fall back on and the student's gate lifted (a gate-promoted student's refusals would
otherwise count as invalid answers):
- student alone: `app.run(task, input, tier="student", escalate=False)` — a forced model tier answers alone;
- programs + student: the cascade's own routing with the student promoted and `escalate=False` — programs fill
  the fields they are verified for (or serve the call alone when they decide every field) and the student decodes
  the rest with those values fixed.
Per field accuracy, exact match, invalid answers, latency and cost (local compute priced by the machine's price per
hour) for both. The students it trains are handed to the `engines` benchmark when it runs in the same process.

`--reuse` measures the newest earlier run's student again without training, with programs induced again by the
current code from the same teacher traces (seconds): the student-alone calls are read back from its store (the
first unseen call onward, in call order) where that run got that far and made now where it did not; the
programs + student calls are made now, since the programs may differ from the ones they were made with.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from statistics import fmean
from typing import Any

from bench.common import Context, Headline, Result, Table, floored, newest_with_student, percentile, ungated
from bench.data import Workload, orders, output_of, teacher_trace

TITLE = "Programs + student vs the student alone"
TRACES = 300
TEACHER_PRICE = "anthropic:claude-opus-4-5"
CONFIGS = ("student alone", "programs + student")
GATED = "the cascade: gate on, teacher fallback"
"""As served: programs + student behind the gate `app.distill` calibrated (none when the student passed without
one), each answer under its floor escalated to the teacher — end-to-end quality, the share each tier serves, cost."""
TEACHER_ONLY = "teacher only"
SERVED_TARGETS = (0.99, 0.75, 0.30)  # issue 15's stream: quality vs teacher-only, share served cheaper, cost ratio


def run(ctx: Context) -> Result:
    from bench.programs import generated

    chosen = [orders(False), generated("make_debian_changelogs", "debian-changelogs")]
    if ctx.workloads:
        chosen = [w for w in chosen if w.name.split()[0] in ctx.workloads or w.name in ctx.workloads]
    result = Result(data={"workloads": {}})
    for w in chosen:
        w.heldout = w.heldout[: ctx.pick(20, 80)]
        ctx.log(f"[bench] student_programs: {w.name} ({TRACES} traces, {len(w.heldout)} unseen calls)")
        m = measure(ctx, w)
        result.data["workloads"][w.name] = m
        result.tables.extend([_summary_table(w, m), _field_table(w, m)])
        both = m["configs"]
        result.headlines.append(
            Headline(
                metric=f"exact match on unseen calls, programs + student, {w.name}",
                value=both["programs + student"]["exact"],
                unit="exact match",
                baseline=both["student alone"]["exact"],
                baseline_label="the student alone",
                target="≥ 0.95",
                met=both["programs + student"]["exact"] >= 0.95,
            )
        )
        result.headlines.extend(_served_headlines(w, both))
    result.notes.append(
        f"Traces: the first {TRACES} pool examples as valid teacher traces (a ReferenceModel priced as "
        f"{TEACHER_PRICE}); the student is distilled from them with the default recipe and promoted for the "
        "measurement whatever its gate said, and measured without it (the gate's verdict is in the table). Unseen "
        "calls: held-out examples, answered with no teacher fallback, so a wrong or invalid answer counts as wrong; "
        f"then '{GATED}' answers them as the cascade serves them (its gate on, answers under the floor escalated "
        f"to the teacher; no shadow checks), and '{TEACHER_ONLY}' with the teacher alone, for the baseline. "
        "Cost is the local compute priced at the machine's price per hour (settings.local_cost_per_hour)."
    )
    return result


def measure(ctx: Context, w: Workload) -> dict[str, Any]:
    if ctx.reuse:
        return _remeasure(ctx, w)
    app = _app(ctx, w, ctx.folder("student_programs", _slug(w.name), str(time.time_ns())))
    name, spec = w.task_name, app.handle(w.task_name).spec
    app.store.insert_traces([teacher_trace(row, name, spec.instructions) for row in w.pool[:TRACES]])
    started = time.perf_counter()
    programs = app.programs.induce(name)
    induce_s = time.perf_counter() - started
    started = time.perf_counter()
    report = app.distill(name)
    distill_s = time.perf_counter() - started
    ctx.log(f"[bench] student_programs: {w.name}: distilled in {distill_s / 60:.1f} min ({report.reason})")
    gate_promoted = report.promoted
    if not report.promoted:
        app.promote(report.student_id)
    with ungated(app, name):
        configs = {label: _calls(app, name, w.heldout, tier) for label, tier in zip(CONFIGS, ("student", None))}
    configs.update(_served_configs(app, name, w, report.metrics))
    _hand_to_engines(ctx, w, app, report)
    return {
        "induce_s": induce_s,
        "distill_s": distill_s,
        "student_id": report.student_id,
        "gate_promoted": gate_promoted,
        "gate_reason": report.reason,
        "metrics": report.metrics,
        "programs": _described(programs),
        "configs": configs,
    }


def _app(ctx: Context, w: Workload, folder: Any) -> Any:
    from protege import Policy, Protege
    from protege.agents import FunctionModel, ReferenceModel

    os.environ.setdefault("PROTEGE_CACHE_DIR", str(ctx.cache_dir))
    teacher = ReferenceModel([*w.pool, *w.heldout], price_as=TEACHER_PRICE)
    app = Protege(
        db=f"sqlite:///{folder / 'protege.db'}",
        teacher=teacher,
        replay=FunctionModel(lambda req: "{}"),
        project_dir=folder,
        seed=1,
    )
    # no teacher on the measured path: no shadow checks, so no drift boost or demotion hands calls to the teacher
    quiet = Policy(min_traces=200, program_min_traces=50, shadow_rate=0.0, drift_shadow_rate=0.0, demote_below=0.0)
    app.task(policy=quiet)(w.task)
    app.programs.background = False  # the unseen calls' traces must not feed a new induction mid-measurement
    return app


def newest_student(ctx: Context, w: Workload) -> tuple[Any, Any, Any]:
    """--reuse: the newest earlier run of this benchmark that distilled a student of `w`: (app, row, folder)."""
    runs = ctx.scratch / "student_programs" / _slug(w.name)
    return newest_with_student(ctx, runs, w.name, w.task_name, lambda f: _app(ctx, w, f))


def reused_for_engines(ctx: Context, w: Workload) -> Any:
    """--reuse of the engines benchmark alone: this benchmark's newest student, in bench/quality.Prepared shape."""
    app, row, folder = newest_student(ctx, w)
    ctx.log(f"[bench] engines: reusing student {row.id[:8]} of {folder}")
    return _hand_to_engines(ctx, w, app, _reused_report(w, row))


def _reused_report(w: Workload, row: Any) -> Any:
    """An earlier run's student as this run's distill report (promoted: it is measured as the serving student)."""
    from protege.distill.pipeline import DistillReport

    return DistillReport(
        task=w.task_name,
        student_id=row.id,
        dataset_id=row.dataset_id or "",
        metrics=dict(row.metrics or {}),
        promoted=True,
        reason="reused",
    )


def _remeasure(ctx: Context, w: Workload) -> dict[str, Any]:
    """--reuse: the newest earlier run's student, programs induced again; its student-alone runs where it made
    them."""
    from protege.distill.pipeline import promotion_verdict

    app, row, folder = newest_student(ctx, w)
    name = w.task_name
    metrics = dict(row.metrics or {})
    gate_promoted, gate_reason = promotion_verdict(metrics, app.handle(name).spec.policy)
    app.promote(row.id)
    started = time.perf_counter()
    programs = app.programs.induce(name)
    induce_s = time.perf_counter() - started
    earlier = _stored_runs(app, name, w.heldout)
    configs = {}
    with ungated(app, name):
        for i, (label, tier) in enumerate(zip(CONFIGS, ("student", None))):
            done = earlier[i * len(w.heldout) : (i + 1) * len(w.heldout)] if tier == "student" else []
            configs[label] = _calls(app, name, w.heldout, tier, done=done)
    configs.update(_served_configs(app, name, w, metrics))
    _hand_to_engines(ctx, w, app, _reused_report(w, row))
    read_back = configs[CONFIGS[0]]["read_back"]
    ctx.log(f"[bench] student_programs: {w.name}: reused {row.id[:8]} of {folder}; {read_back} stored runs read back")
    return {
        "induce_s": induce_s,
        "distill_s": (metrics.get("train") or {}).get("wall_s") or 0.0,
        "student_id": row.id,
        "gate_promoted": gate_promoted,
        "gate_reason": gate_reason,
        "metrics": metrics,
        "programs": _described(programs),
        "configs": configs,
        "reused_from": str(folder),
    }


def _served_configs(app: Any, task: str, w: Workload, metrics: dict[str, Any]) -> dict[str, Any]:
    """The gated cascade and the teacher alone on the unseen calls. A student its gate did not promote (this
    benchmark promotes it anyway) serves behind the floor its distill calibrated for `promote_at` all the same,
    as a user who promotes it would want — or with no floor where none reached it."""
    gated = _calls_behind(app, task, w, _floor(app, task, metrics))
    return {GATED: gated, TEACHER_ONLY: _calls(app, task, w.heldout, "teacher")}


def _calls_behind(app: Any, task: str, w: Workload, floor: float | None) -> dict[str, Any]:
    with floored(app, task, floor):
        return _calls(app, task, w.heldout, None, escalate=True) | {"floor": floor}


def _floor(app: Any, task: str, metrics: dict[str, Any]) -> float | None:
    """The stored gate's floor, else the one calibrated on the eval answers as served (None where none reaches
    `promote_at` end to end)."""
    from protege.distill.gate import calibrate, stored_gate
    from protege.distill.pipeline import serving_figures

    gate = stored_gate(metrics)
    if gate is not None:
        return gate.min_confidence
    judged, promote_at = serving_figures(metrics), app.handle(task).spec.policy.promote_at
    if judged["retention"] >= promote_at:
        return None  # promoted without a gate: it serves every call
    floor = calibrate(judged["confidences"], judged["scores"], target=promote_at)
    return floor.min_confidence if floor is not None else None


def _stored_runs(app: Any, task: str, rows: list[dict[str, Any]]) -> list[Any]:
    """The earlier run's calls on these inputs, oldest first, while they follow the measurement's order."""
    from protege.tasks import input_hash

    wanted = [input_hash(r["input"]) for r in rows] * len(CONFIGS)
    runs = sorted(app.store.runs(task, limit=10 * len(wanted)), key=lambda r: r.created_at)
    out = []
    for run in runs:
        if len(out) < len(wanted) and run.input_hash == wanted[len(out)] and run.status in ("ok", "failed"):
            out.append(run)
    return out


def _described(programs: Any) -> dict[str, str | None]:
    if programs is None:
        return {}
    return {f: fp.describe() if fp.promoted and fp.programs else None for f, fp in programs.fields.items()}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)


def _calls(
    app: Any,
    task: str,
    rows: list[dict[str, Any]],
    tier: str | None,
    done: Sequence[Any] = (),
    *,
    escalate: bool = False,
) -> dict[str, Any]:
    """Answer each row (with no teacher fallback unless `escalate`); per-field hits, exact match, cost, latency,
    who served. `done`: runs an earlier process made for the first rows (read back, not made again)."""
    from protege.programs.induce import same

    fields = list(app.handle(task).spec.output_model.model_fields)
    hits: dict[str, list[bool]] = {f: [] for f in fields}
    exact, costs, latencies, served, program_fields = [], [], [], [], []
    for i, row in enumerate(rows):
        answer = _read_back(app, done[i]) if i < len(done) else _answer(app, task, row, tier, escalate)
        actual, cost, latency, tier_served, decided = answer
        if decided is None:  # read back: what the stored programs decide on this input (none for a forced tier)
            decided = 0 if tier else _decided(app, task, row)
        served.append(tier_served)
        latencies.append(latency)
        costs.append(cost)
        program_fields.append(decided)
        expected = output_of(row)
        right = {f: actual is not None and same(actual.get(f), expected.get(f)) for f in fields}
        for f in fields:
            hits[f].append(right[f])
        exact.append(all(right.values()))
    return {
        "n": len(rows),
        "exact": fmean(exact),
        "field_accuracy": {f: fmean(h) for f, h in hits.items()},
        "invalid": served.count("invalid") / len(rows),
        "served": {t: served.count(t) for t in set(served)},
        "program_fields_mean": fmean(program_fields) if program_fields else None,
        "read_back": min(len(done), len(rows)),
        "cost_per_1k_usd": fmean(costs) * 1000,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p99_s": percentile(latencies, 99),
    }


def _answer(
    app: Any, task: str, row: dict[str, Any], tier: str | None, escalate: bool
) -> tuple[Any, float, float, str, int]:
    """One call now: (output or None, cost, latency s, tier that served or 'invalid', fields programs decided)."""
    from protege.errors import AllTiersFailed, ModelError, ValidationFailed

    start = time.perf_counter()
    try:
        res = app.run(task, row["input"], tier=tier, escalate=escalate)
    except (ValidationFailed, AllTiersFailed, ModelError) as exc:  # invalid: wrong, and its cost still counts
        cost = sum(a.cost_usd for a in getattr(exc, "attempts", None) or [])
        return None, cost, time.perf_counter() - start, "invalid", 0
    output = res.output.model_dump(mode="json")
    return output, res.cost_usd, time.perf_counter() - start, res.tier, len(res.program_fields or [])


def _decided(app: Any, task: str, row: dict[str, Any]) -> int:
    programs = app.programs.current(task)
    return len(programs.apply(row["input"])[0]) if programs is not None else 0


def _read_back(app: Any, run: Any) -> tuple[Any, float, float, str, int | None]:
    """An earlier process's call from its run row (which fields programs decided is not kept there). A call its
    gate refused (an earlier run measured behind the gate) is read back as the student's own answer."""
    ok = run.status == "ok" and run.output is not None
    output = run.output if ok else _gated_answer(app, run)
    tier = run.tier if ok else ("student" if output is not None else "invalid")
    return output, run.cost_usd, run.latency_s, tier, None


def _gated_answer(app: Any, run: Any) -> Any:
    """The student's answer to a call whose only fault was the confidence gate (None otherwise)."""
    from protege.agents.cascade import LOW_CONFIDENCE

    attempts = app.store.traces(run_id=run.id, tier="student", shadow=False, limit=1)
    errors = (attempts[0].errors or []) if attempts else []
    if not errors or not all(str(e).startswith(LOW_CONFIDENCE) for e in errors):
        return None
    try:
        return json.loads(attempts[0].output_text or "")
    except ValueError:
        return None


def _hand_to_engines(ctx: Context, w: Workload, app: Any, report: Any) -> Any:
    """The engines benchmark measures every student this run trained (bench/quality.Prepared shape)."""
    from bench.quality import Prepared

    prepared = ctx.shared.setdefault("prepared", {})
    prepared[w.name] = Prepared(w, app, warmup={}, report=report)
    return prepared[w.name]


def _summary_table(w: Workload, m: dict[str, Any]) -> Table:
    rows = []
    for label in [c for c in (*CONFIGS, GATED, TEACHER_ONLY) if c in m["configs"]]:
        c = m["configs"][label]
        rows.append(
            [
                label + _floor_text(c),
                c["n"],
                _pct(c["exact"]),
                _pct(fmean(c["field_accuracy"].values())),
                _pct(c["invalid"]),
                "–" if c["program_fields_mean"] is None else f"{c['program_fields_mean']:.1f}",
                _served_by(c),
                f"{c['latency_p50_s']:.2f}",
                f"${c['cost_per_1k_usd']:.3f}",
            ]
        )
    verdict = "promoted by its gate" if m["gate_promoted"] else "not promoted by its gate (promoted for this run)"
    trained = "trained" if m.get("reused_from") else "distilled"
    return Table(
        f"{w.name}: unseen calls (student {m['student_id'][:8]}, {trained} in "
        f"{m['distill_s'] / 60:.1f} min, {verdict})",
        [
            "configuration",
            "calls",
            "exact match",
            "field accuracy",
            "invalid",
            "fields by programs (mean)",
            "served by",
            "p50 s",
            "cost / 1k calls",
        ],
        rows,
    )


def _served_headlines(w: Workload, configs: dict[str, Any]) -> list[Headline]:
    """The gated cascade against the teacher alone on the same calls: quality, the share served without the
    teacher, cost (issue 15's stream targets; these calls have no shadow checks)."""
    if GATED not in configs or TEACHER_ONLY not in configs:
        return []
    gated, teacher = configs[GATED], configs[TEACHER_ONLY]
    cheaper = 1 - (gated["served"].get("teacher", 0) + gated["served"].get("invalid", 0)) / gated["n"]
    quality, share, cost = SERVED_TARGETS
    return [
        Headline(
            metric=f"end-to-end exact match, the gated cascade, {w.name}",
            value=gated["exact"],
            unit="exact match",
            baseline=teacher["exact"],
            baseline_label="teacher only",
            target=f"≥ {quality}× teacher-only",
            met=gated["exact"] >= quality * teacher["exact"],
        ),
        Headline(
            metric=f"calls served without the teacher, the gated cascade, {w.name}",
            value=cheaper,
            unit="share of calls",
            target=f"≥ {share:.0%}",
            met=cheaper >= share,
        ),
        Headline(
            metric=f"cost per 1k calls, the gated cascade, {w.name}",
            value=gated["cost_per_1k_usd"],
            unit="USD",
            baseline=teacher["cost_per_1k_usd"],
            baseline_label="teacher only (USD per 1k)",
            target=f"≤ {cost}× teacher-only",
            met=gated["cost_per_1k_usd"] <= cost * teacher["cost_per_1k_usd"],
        ),
    ]


def _field_table(w: Workload, m: dict[str, Any]) -> Table:
    alone, both = (m["configs"][label]["field_accuracy"] for label in CONFIGS)
    rows = [[f, m["programs"].get(f) or "none", _pct(alone[f]), _pct(both[f])] for f in alone]
    return Table(f"{w.name}: per field accuracy on the unseen calls", ["field", "program (verified)", *CONFIGS], rows)


def _floor_text(config: dict[str, Any]) -> str:
    if "floor" not in config:
        return ""
    return f" (floor {config['floor']:.3f})" if config["floor"] is not None else " (no floor)"


def _served_by(config: dict[str, Any]) -> str:
    """Who answered the calls, most first: `student 74%, teacher 26%`."""
    counts = sorted(config["served"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{tier} {count / config['n']:.0%}" for tier, count in counts)


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"
