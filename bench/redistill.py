"""Re-distillation after drift, with real training: how many calls after an input shift until a re-distilled
student serves again, what it costs, and how good that student is on the new inputs.

The drift benchmark's story (bench/drift.py, bench/drift_stream.py), carried on past the fall-back. A stand-in
student (the drift benchmark's FunctionModel: right on layout a, wrong on layout b) is promoted over 60 teacher
traces of layout a; the stream then shifts to layout b. The real lifecycle notices and demotes the stand-in, the
teacher serves, and `Policy(auto_distill=True)` starts a detached `python -m protege.auto_distill` worker once the
task has `auto_distill_traces` new validated traces; the worker trains a real student (smollm2-135m, LoRA) and the
gate promotes it or not, as usual. The benchmark's app lives in bench/redistill_app.py, which the worker imports
(PROTEGE_APP), so both processes build the same app over the same SQLite store.

The stream is paced at one call per second (a call that takes longer delays the next), so calls and wall seconds
say the same thing for the teacher's part. Training runs in the other process on one torch thread while the stream
goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import fmean, median
from typing import Any

from bench.common import Context, Headline, Result, Table
from bench.drift_stream import Order, eval_confidences, make_input, student, truth
from bench.redistill_app import APP_REF, FOLDER_ENV, MIN_TRACES, TASK, make_app

TITLE = "Re-distillation after drift: calls until a trained student serves again"
WARMUP = 60  # teacher traces of layout a before the stand-in student is promoted (as in bench/drift.py)
BEFORE = 30  # calls of layout a under the stand-in, before the shift
PACE_S = 1.0  # one call per second
AFTER_PROMOTION = 120  # calls streamed once the re-distilled student is promoted
EVAL_N = 100  # new layout-b inputs the promoted student answers with its tier forced
LIMIT_S = 50 * 60  # the stream gives up after this long without AFTER_PROMOTION calls past a promotion
TRAIN = {"method": "lora", "epochs": 1, "learning_rate": 2e-3, "torch_threads": 1}  # the quick recipe, on one thread
MILESTONES = {
    "demoted": "stand-in student demoted (teacher serves)",
    "launched": "auto-distill worker launched",
    "leased": "worker holds the distill lease (distill starts)",
    "promoted": "re-distilled student promoted (by the worker, before it lets go of the lease)",
    "ended": "distill ended",
    "served": "re-distilled student serves its first call",
}


def run(ctx: Context) -> Result:
    folder = ctx.folder("redistill", str(time.time_ns()))
    distills: list[dict[str, Any]] = []  # filled while streaming: a worker left running is stopped at the end
    with _environment(folder, ctx):
        _one_torch_thread()
        app = make_app(folder)
        try:
            stand_in = warm_up(app)
            records, events = stream(app, stand_in, ctx, folder / "logs" / f"distill-{TASK}.log", distills)
            mark_shadows(app, records)
            new_id = events.get("promoted", {}).get("student_id")
            evaluation = evaluate_new_inputs(app, new_id, ctx) if new_id else None
            students = {
                d["student_id"]: _student_facts(app.store.student(d["student_id"]))
                for d in distills
                if d.get("student_id")
            }
            drift = drift_after_promotion(app, new_id)
            machine_per_hour = app.prices.machine_price_per_hour()
        finally:
            app.close()
            _stop_worker(distills)
    summary = summarize(records, events, distills, before=BEFORE)
    summary.update(
        evaluation=evaluation,
        students=students,
        new_student=new_id,
        drift_after_promotion=drift,
        distill_cost_usd=sum(d.get("wall_s") or 0.0 for d in distills) * machine_per_hour / 3600,
    )
    return build_result(summary, records)


# -- the stream ------------------------------------------------------------------------------------------------------


def warm_up(app: Any) -> Any:
    """WARMUP teacher traces of layout a, then the stand-in student promoted (bench/drift.py's make_app)."""
    from protege.agents import FunctionModel
    from protege.distill.pipeline import promote
    from protege.store import StudentRow

    rng = random.Random(0)
    for _ in range(WARMUP):
        app.run(TASK, make_input("a", rng))
    app.wait()
    row = app.store.add_student(
        StudentRow(
            task_name=TASK, base="stand-in", adapter_path="stand-in", metrics={"confidences": eval_confidences(seed=0)}
        )
    )
    promote(app.store, row.id)
    app.tiers._models[f"local:{row.id}"] = FunctionModel(student, name=f"local:{row.id}")
    app.tiers.invalidate(TASK)
    return row


def stream(
    app: Any, stand_in: Any, ctx: Context, log_path: Path, distills: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Call the task once per second — layout a for BEFORE calls, then layout b — until AFTER_PROMOTION calls have
    followed a re-distilled student's promotion (or LIMIT_S). Returns the calls and the milestones (first call at
    which each was seen); `distills` gets each distill's lease info."""
    rng, records = random.Random(1), []
    events: dict[str, dict[str, Any]] = {}
    start = time.perf_counter()
    i = 0
    while True:
        _pace(start, i)
        inp = make_input("a" if i < BEFORE else "b", rng)
        res = app.run(TASK, inp)
        app.wait()
        t = time.perf_counter() - start
        records.append(call_record(i, t, inp, res))
        for name in observe(app, stand_in.id, log_path, events, distills, records[-1]):
            ctx.log(f"[bench] redistill: call {i} ({t:.0f} s): {MILESTONES[name]}")
        if "promoted" in events and i - events["promoted"]["call"] >= AFTER_PROMOTION:
            break
        if t > LIMIT_S or _failed(distills):
            ctx.log(
                f"[bench] redistill: stopping at call {i} ({t:.0f} s): "
                f"{'the distill failed' if _failed(distills) else 'time limit'}"
            )
            break
        i += 1
    return records, events


def _pace(start: float, i: int) -> None:
    delay = start + i * PACE_S - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def call_record(i: int, t: float, inp: dict, res: Any) -> dict[str, Any]:
    """One call: who served it, whether the served answer is right, and what the student itself answered (its
    attempt comes first when it is tried, and is kept when the call escalates)."""
    first = res.attempts[0] if res.attempts else None
    return {
        "i": i,
        "t": t,
        "run_id": res.run_id,
        "layout": "b" if inp["email"]["headers"] else "a",
        "tier": res.tier,
        "student_id": res.attempts[-1].student_id if res.tier == "student" else None,
        "right": res.output.model_dump() == truth(inp),
        "student_right": answer_right(first.text, inp) if first is not None and first.tier == "student" else None,
        "student_confidence": first.confidence if first is not None and first.tier == "student" else None,
        "cost_usd": res.cost_usd,
        "latency_s": res.latency_s,
    }


def answer_right(text: str, inp: dict) -> bool:
    """Whether a model's answer text is the right order for this input (an answer that does not parse is wrong)."""
    try:
        return Order.model_validate_json(text).model_dump() == truth(inp)
    except ValueError:
        return False


def observe(
    app: Any,
    stand_in_id: str,
    log_path: Path,
    events: dict[str, dict[str, Any]],
    distills: list[dict[str, Any]],
    record: dict[str, Any],
) -> list[str]:
    """Note the milestones first seen after the call `record` (names of MILESTONES), and keep the distills' lease
    info."""
    from protege.auto_distill import lease_name

    store, seen, i, t = app.store, [], record["i"], record["t"]

    def mark(name: str, **extra: Any) -> None:
        if name not in events:
            events[name] = {"call": i, "t": t, **extra}
            seen.append(name)

    if store.student(stand_in_id).state != "promoted":
        mark("demoted")
    if log_path.exists():
        mark("launched")
    lease = store.lease(lease_name(TASK))
    if lease is not None and (lease.info or {}).get("started_at"):
        info = lease.info
        run = next((d for d in distills if d["started_at"] == info["started_at"]), None)
        if run is None:
            run = {"started_at": info["started_at"], "pid": info.get("pid"), "leased_call": i, "leased_t": t}
            distills.append(run)
            mark("leased")
        if info.get("outcome") and "outcome" not in run:
            run.update(
                outcome=info["outcome"],
                ended_call=i,
                ended_t=t,
                student_id=info.get("student_id"),
                retention=info.get("retention"),
                verdict=info.get("verdict"),
                error=info.get("error"),
                wall_s=info.get("ended_at", time.time()) - info["started_at"],
            )
            mark("ended", outcome=info["outcome"])
    promoted = store.promoted_student(TASK)
    if promoted is not None and promoted.id != stand_in_id:
        mark("promoted", student_id=promoted.id)
    new_id = events.get("promoted", {}).get("student_id")
    if new_id is not None and record["tier"] == "student" and record["student_id"] == new_id:
        mark("served")
    return seen


def drift_after_promotion(app: Any, student_id: str | None) -> dict[str, Any] | None:
    """What the drift monitor made of the re-distilled student: its alerts (each shadows the next
    `drift_shadow_calls` calls), and whether the student is still promoted."""
    status = app.lifecycle.drift.status(TASK) or {}
    row = app.store.student(student_id) if student_id else None
    if row is None:
        return None
    mine = status.get("student_id") == student_id
    return {
        "alerts": status.get("alerts", 0) if mine else 0,
        "last_alert": status.get("last_alert") if mine else None,
        "state": row.state,
    }


def mark_shadows(app: Any, records: list[dict[str, Any]]) -> None:
    """Note the calls the teacher shadowed, and what that cost: a shadow checks the student off the call's path, so
    its teacher call is not in the call's RunResult.cost_usd."""
    cost: dict[str, float] = {}
    for trace in app.store.traces(TASK, tier="teacher", shadow=True, limit=None):
        cost[trace.run_id] = cost.get(trace.run_id, 0.0) + trace.cost_usd
    for r in records:
        run = r.pop("run_id")
        r["shadowed"], r["shadow_usd"] = run in cost, cost.get(run, 0.0)


def _failed(distills: list[dict[str, Any]]) -> bool:
    return bool(distills) and distills[-1].get("outcome") == "failed"


def _stop_worker(distills: list[dict[str, Any]]) -> None:
    """A worker still training when the stream gave up is ended (it was started by this benchmark's app)."""
    for run in distills:
        if "outcome" not in run and run.get("pid"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(run["pid"], signal.SIGTERM)


# -- the new student on new inputs --------------------------------------------------------------------------------


def evaluate_new_inputs(app: Any, student_id: str, ctx: Context) -> dict[str, Any]:
    """The re-distilled student on EVAL_N layout-b inputs no call of the stream made (so it never trained on them),
    its tier forced and no escalation; exact match against `truth`."""
    from protege.errors import AllTiersFailed, ModelError, ValidationFailed

    seen = {json.dumps(r["input"], sort_keys=True) for r in app.store.dataset_traces(TASK)}
    rng, right, invalid, n = random.Random(2), 0, 0, 0
    ctx.log(f"[bench] redistill: the student on {EVAL_N} new layout-b inputs ...")
    while n < EVAL_N:
        inp = make_input("b", rng)
        if json.dumps(inp, sort_keys=True) in seen:
            continue
        n += 1
        try:
            res = app.run(TASK, inp, tier="student", escalate=False)
        except (ValidationFailed, AllTiersFailed, ModelError):
            invalid += 1
            continue
        right += res.output.model_dump() == truth(inp) and res.attempts[-1].student_id == student_id
    return {"n": n, "quality": right / n, "invalid": invalid / n}


def _student_facts(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    metrics, train = row.metrics or {}, (row.metrics or {}).get("train", {})
    confidences = [c for c in metrics.get("confidences") or [] if c is not None]
    return {
        "id": row.id,
        "retention": metrics.get("retention"),
        "exact_match": metrics.get("exact_match"),
        "eval_confidence_p50": median(confidences) if confidences else None,
        "eval_rows": metrics.get("n"),
        "train_rows": train.get("rows"),
        "train_s": train.get("wall_s"),
        "train_tokens_per_s": train.get("tokens_per_s"),
        "headline": metrics.get("headline"),
        "params": row.params,
    }


# -- summary and report ------------------------------------------------------------------------------------------


def summarize(
    records: list[dict[str, Any]], events: dict[str, dict[str, Any]], distills: list[dict[str, Any]], *, before: int
) -> dict[str, Any]:
    """The milestones as calls and wall seconds after the shift, the calls after the promotion, and the stream's
    cost against teacher-only (every call priced as the teacher's)."""
    shift_t = records[before - 1]["t"] if before else 0.0
    milestones = {
        name: {"calls": e["call"] - before + 1, "seconds": e["t"] - shift_t}
        for name, e in events.items()
        if name in MILESTONES
    }
    teacher_costs = [r["cost_usd"] for r in records if r["tier"] == "teacher"]
    per_call = fmean(teacher_costs) if teacher_costs else 0.0
    promoted_at = events.get("promoted", {}).get("call")
    after = [r for r in records if promoted_at is not None and r["i"] > promoted_at]
    until = promoted_at + 1 if promoted_at is not None else len(records)
    segments = {
        "before the shift": records[:before],
        "shift → promotion": records[before:until],
        "after the promotion": after,
        "whole stream": records,
    }
    served = events.get("served")
    return {
        "calls": len(records),
        "before": before,
        "milestones": milestones,
        "distills": distills,
        "teacher_cost_per_call": per_call,
        "first_served_latency_s": records[served["call"]]["latency_s"] if served else None,
        "cost": {name: segment_cost(rs, per_call) for name, rs in segments.items()},
        "after_promotion": after_promotion(after),
    }


def segment_cost(records: list[dict[str, Any]], teacher_per_call: float) -> dict[str, Any]:
    """What these calls cost: served (RunResult.cost_usd) plus the teacher's shadows, against teacher-only."""
    served, shadow = sum(r["cost_usd"] for r in records), sum(r.get("shadow_usd", 0.0) for r in records)
    return {
        "calls": len(records),
        "served_usd": served,
        "shadows": sum(bool(r.get("shadowed")) for r in records),
        "shadow_usd": shadow,
        "usd": served + shadow,
        "teacher_only_usd": len(records) * teacher_per_call,
    }


def after_promotion(after: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The calls after the promotion: the share the student served, the served answers' quality, and the student's
    own answers' quality (every call it was tried on, escalated or not)."""
    if not after:
        return None
    tried = [r["student_right"] for r in after if r["student_right"] is not None]
    confidences = [r["student_confidence"] for r in after if r.get("student_confidence") is not None]
    return {
        "calls": len(after),
        "student_share": sum(r["tier"] == "student" for r in after) / len(after),
        "served_quality": sum(r["right"] for r in after) / len(after),
        "student_tried": len(tried),
        "student_quality": sum(tried) / len(tried) if tried else None,
        "confidence_p50": median(confidences) if confidences else None,
    }


def build_result(summary: dict[str, Any], records: list[dict[str, Any]]) -> Result:
    m, post, ev = summary["milestones"], summary["after_promotion"], summary["evaluation"]
    result = Result(
        data={"summary": summary, "calls": [{k: r[k] for k in ("i", "t", "layout", "tier", "right")} for r in records]}
    )
    served = m.get("served")
    result.headlines.append(
        Headline(
            metric="calls after the shift (one a second) until a re-distilled student serves again",
            value=served["calls"] if served else None,
            unit="calls",
        )
    )
    if ev is not None:
        result.headlines.append(
            Headline(
                metric=f"re-distilled student's exact match on {ev['n']} new layout-b inputs (tier forced)",
                value=ev["quality"],
                unit="exact match",
                baseline=1.0,
                baseline_label="teacher (oracle)",
            )
        )
    if post is not None:
        result.headlines.append(
            Headline(
                metric=f"share of the {post['calls']} calls after the promotion that the student serves",
                value=post["student_share"],
                unit="share of calls",
            )
        )
    whole = summary["cost"]["whole stream"]
    result.headlines.append(
        Headline(
            metric="stream cost, served calls + shadows",
            value=whole["usd"],
            unit="USD",
            baseline=whole["teacher_only_usd"] or None,
            baseline_label="teacher-only cost of the same calls (USD)",
        )
    )
    result.tables += [milestone_table(summary), distill_table(summary)]
    if post is not None or ev is not None:
        result.tables.append(student_table(summary))
    result.tables.append(cost_table(summary))
    first = summary.get("first_served_latency_s")
    result.notes.append(
        f"One stream of {summary['calls']} calls at one call per second ({WARMUP} layout-a teacher traces first, "
        f"then {BEFORE} layout-a calls under the stand-in student, then layout b; a call that takes longer delays the "
        f"next). Policy: the drift benchmark's (5% shadows, demote below 90% agreement, early signal on, field "
        f"programs off: they would serve this synthetic task) with auto_distill=True, min_traces = "
        f"auto_distill_traces = {MIN_TRACES}. The worker trains with "
        f"PROTEGE_AUTO_DISTILL_CONFIG={json.dumps(TRAIN)} (the quick recipe: one LoRA epoch, "
        f"on one torch thread, beside other work on a shared 2-core machine; the serving process also runs torch on "
        f"one thread) on every validated trace of the task, layout a and b. The distill's wall time is the worker's "
        f"lease (dataset, training, the gate's evaluation), not its start-up before it takes the lease. A serving "
        f"process sees a promotion made by another process within the tiers' cache period (2 s); its first call then "
        f"loads the student"
        + (f" ({first:.0f} s here, hence the gap between calls and seconds)." if first is not None else ".")
        + " Cost: RunResult.cost_usd of every served call (teacher priced as Opus, a local student its wall time at "
        "the machine price, the stand-in student $0) plus one teacher call per shadow, against the same calls at the "
        "teacher's price; the distill's compute is priced apart, at the machine price."
    )
    drift_note = _drift_note(summary)
    if drift_note:
        result.notes.append(drift_note)
    return result


def _drift_note(summary: dict[str, Any]) -> str | None:
    """Say so when the early signal fired on the re-distilled student: its shadows are most of the cost after it."""
    drift, post = summary.get("drift_after_promotion") or {}, summary.get("after_promotion") or {}
    if not drift.get("alerts"):
        return None
    facts = (summary.get("students") or {}).get(summary.get("new_student")) or {}
    at_eval, serving = facts.get("eval_confidence_p50"), post.get("confidence_p50")
    compare = (
        f" (median confidence {serving:.4f} serving vs {at_eval:.4f} on its eval split at promotion)"
        if at_eval is not None and serving is not None
        else ""
    )
    return (
        f"After the promotion the drift monitor's early signal fired on the re-distilled student {drift['alerts']} "
        f"time(s) — {drift['last_alert']}{compare} — and shadowed the next calls at 100%: hence the shadows after "
        f"the promotion. "
        + (
            "The shadows agreed: the student is still promoted at the end."
            if drift["state"] == "promoted"
            else f"The student is {drift['state']} at the end."
        )
    )


def milestone_table(summary: dict[str, Any]) -> Table:
    m = summary["milestones"]
    outcome = next((d.get("outcome") for d in summary["distills"] if d.get("outcome")), None)
    rows = [
        [
            label + (f" ({outcome})" if name == "ended" and outcome else ""),
            m[name]["calls"] if name in m else "never",
            f"{m[name]['seconds']:.0f}" if name in m else "–",
        ]
        for name, label in MILESTONES.items()
    ]
    return Table(
        "Milestones after the shift to layout b (the first call after which each was seen)",
        ["milestone", "calls after the shift", "wall s after the shift"],
        rows,
    )


def distill_table(summary: dict[str, Any]) -> Table:
    students = summary.get("students") or {}
    rows = []
    for d in summary["distills"]:
        s = students.get(d.get("student_id")) or {}
        rows.append(
            [
                d.get("outcome") or "still running",
                (d.get("student_id") or "–")[:8],
                f"{d['wall_s']:.0f}" if d.get("wall_s") else "–",
                s.get("train_rows", "–"),
                f"{s['train_s']:.0f}" if s.get("train_s") else "–",
                f"{d['retention']:.1%}" if isinstance(d.get("retention"), float) else "–",
                d.get("verdict") or d.get("error") or "–",
            ]
        )
    return Table(
        "Automatic distills (from the distill lease and the student's record)",
        ["outcome", "student", "distill wall s", "train rows", "train wall s", "gate retention", "verdict"],
        rows or [["none", "–", "–", "–", "–", "–", "–"]],
    )


def student_table(summary: dict[str, Any]) -> Table:
    post, ev = summary["after_promotion"] or {}, summary["evaluation"] or {}
    own = post.get("student_quality")
    return Table(
        "The re-distilled student on layout-b inputs it never trained on",
        [
            "student",
            "exact match, new inputs (tier forced)",
            "invalid answers",
            "its own answers after promotion",
            "calls it served after promotion",
            "served answers right after promotion",
        ],
        [
            [
                (summary.get("new_student") or "–")[:8],
                f"{ev['quality']:.1%} of {ev['n']}" if ev else "–",
                f"{ev['invalid']:.1%}" if ev else "–",
                f"{own:.1%} of {post['student_tried']}" if own is not None else "–",
                f"{post['student_share']:.1%} of {post['calls']}" if post else "–",
                f"{post['served_quality']:.1%}" if post else "–",
            ]
        ],
    )


def cost_table(summary: dict[str, Any]) -> Table:
    rows = [
        [
            name,
            c["calls"],
            f"{c['served_usd']:.4f}",
            c["shadows"],
            f"{c['usd']:.4f}",
            f"{c['teacher_only_usd']:.4f}",
            _share(c["usd"], c["teacher_only_usd"]),
        ]
        for name, c in summary["cost"].items()
    ]
    rows.append(
        ["distill compute (machine price)", "–", "–", "–", f"{summary.get('distill_cost_usd', 0.0):.4f}", "–", "–"]
    )
    return Table(
        f"Cost against teacher-only (teacher ${summary['teacher_cost_per_call']:.4f} a call)",
        ["part of the stream", "calls", "served USD", "shadows", "USD with shadows", "teacher-only USD", "share"],
        rows,
    )


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "–"


# -- environment ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _environment(folder: Path, ctx: Context) -> Iterator[None]:
    """What the worker process inherits: how to load the app, its folder, the training recipe, the base cache."""
    values = {
        "PROTEGE_APP": APP_REF,
        FOLDER_ENV: str(folder),
        "PROTEGE_AUTO_DISTILL_CONFIG": json.dumps(TRAIN),
        "PROTEGE_CACHE_DIR": os.environ.get("PROTEGE_CACHE_DIR", str(ctx.cache_dir)),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)
