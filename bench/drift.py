"""Drift: a promoted student whose inputs shift part-way through a stream (bench/drift_stream.py: short English
order emails, then longer German ones with a header field the student never saw, on which it misreads the
quantity). How many calls until protege notices, how many wrong answers it serves before falling back to the
teacher, and the stream's quality against teacher-only — for the backstop alone (a fixed window of shadow agreement),
the sequential test alone, and the early signal with the sequential test (the default).

The student is a FunctionModel standing in for a distilled one (no training on shared CPUs), the teacher an
oracle, so teacher-only quality is 1.0 by construction. The re-distilled student's recovery (`auto_distill`)
needs real training: bench/redistill.py measures it (the next section of BENCHMARKS.md).
"""

from __future__ import annotations

import random
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import demotion_rules
from bench.common import Context, Headline, Result, Table
from bench.drift_stream import Email, Order, eval_confidences, make_input, student, teacher, truth

TITLE = "Drift: inputs that shift under a promoted student"
ARMS = {
    "window": "fixed window alone (shadow_window 50, 5% shadows)",
    "sequential": "sequential test, 5% shadows",
    "early+sequential": "early signal + sequential test (default)",
}
TARGET_NOTICED, TARGET_WRONG = 50, 10


def run(ctx: Context) -> Result:
    seeds, before, after = ctx.pick(6, 20), ctx.pick(60, 100), ctx.pick(120, 200)
    runs = {arm: [one_stream(arm, seed, before, after) for seed in range(seeds)] for arm in ARMS}
    summary = {arm: summarize(rs, after) for arm, rs in runs.items()}
    control = [one_stream("early+sequential", seed, before, after, shift=False) for seed in range(seeds)]
    best, today = summary["early+sequential"], summary["window"]
    result = Result(data={"summary": summary, "control": control, "seeds": seeds, "before": before, "after": after})
    result.headlines += [
        Headline(
            metric="calls after the shift until noticed (median)",
            value=best["noticed_p50"],
            unit="calls",
            baseline=today["noticed_p50"],
            baseline_label="the fixed window alone (calls)",
            target=f"≤ {TARGET_NOTICED}",
            met=best["noticed_p50"] <= TARGET_NOTICED,
        ),
        Headline(
            metric="wrong answers served before fall-back (median)",
            value=best["wrong_p50"],
            unit="answers",
            baseline=today["wrong_p50"],
            baseline_label="the fixed window alone (answers)",
            target=f"≤ {TARGET_WRONG}",
            met=best["wrong_p50"] <= TARGET_WRONG,
        ),
    ]
    result.tables.append(
        Table(
            f"After the shift ({seeds} streams of {before} + {after} calls; medians, worst in brackets)",
            [
                "rule",
                "noticed after (calls)",
                "fell back after (calls)",
                "wrong answers served",
                "quality after shift",
                "teacher calls after shift",
                "false alarms before shift",
            ],
            [
                [
                    ARMS[arm],
                    f"{s['noticed_p50']:g} [{s['noticed_max']:g}]",
                    f"{s['fallback_p50']:g} [{s['fallback_max']:g}]",
                    f"{s['wrong_p50']:g} [{s['wrong_max']:g}]",
                    f"{s['quality']:.1%}",
                    f"{s['teacher_calls']:.0f}",
                    s["false_alarms"],
                ]
                for arm, s in summary.items()
            ],
        )
    )
    result.tables.append(
        Table(
            f"Control: the same {seeds} streams with no shift (default rules)",
            [
                "streams with an alert",
                "alerts (all streams)",
                "streams where the student fell back",
                "right answers served",
                "teacher calls in the last " + str(after),
            ],
            [
                [
                    sum(r["alerts"] > 0 for r in control),
                    sum(r["alerts"] for r in control),
                    sum(r["fallback"] < after for r in control),
                    f"{statistics.fmean(r['quality'] for r in control):.1%}",
                    f"{statistics.fmean(r['teacher_calls'] for r in control):.0f}",
                ]
            ],
        )
    )
    steady_streams, steady_shadows = ctx.pick(200, 1000), 200
    result.data["steady"] = demotion_rules.run_all(steady_streams, steady_shadows)
    result.tables.append(demotion_rules.table(result.data["steady"], steady_streams, steady_shadows))
    result.notes.append(
        "Quality = share of right answers served after the shift (teacher-only: 100%). A stream that never fell back "
        f"counts as {after} calls. 'Noticed' is the early signal's alert where it is on, else the fall-back itself. "
        "Teacher calls = shadows + escalations after the shift (cost). The window rule is the backstop: demote when "
        "the last `shadow_window` shadows (at least 10) show agreement below `demote_below` (the one-sided 99% "
        "upper bound of their mean under it; before 2026-12-05 the mean alone); it is measured with the "
        "sequential test switched off. After the fall-back every call is the teacher's (hence the default's teacher "
        "calls): that lasts until a re-distilled student serves again (`auto_distill`: measured with real "
        "training in the next section, bench/redistill.py)."
    )
    result.notes.append(
        "Steady tier: Bernoulli shadows at the stated agreement, no shift, each rule applied after every shadow as "
        "protege applies it (bench/demotion_rules.py, a simulation of the rules alone). A demotion above the bar "
        "is a false alarm: every later call pays the teacher."
    )
    return result


def one_stream(arm: str, seed: int, before: int, after: int, *, shift: bool = True) -> dict[str, Any]:
    app, row = make_app(arm, seed)
    rng, served, alert_at = random.Random(1000 + seed), [], None
    try:
        for i in range(before + after):
            if i == before:
                pre_alerts = _alerts(app)
                pre_demoted = app.store.student(row.id).state != "promoted"
                pre_shadows = len(app.store.shadow_scores("extract", "student"))
            inp = make_input("b" if shift and i >= before else "a", rng)
            res = app.run("extract", inp)
            app.wait()
            served.append((res.tier, res.output.model_dump() == truth(inp)))
            if i >= before and alert_at is None and _alerts(app) > pre_alerts:
                alert_at = i - before + 1
        shadows_after = len(app.store.shadow_scores("extract", "student")) - pre_shadows
    finally:
        app.close()
    post = served[before:]
    fallback = next((i for i, (tier, _) in enumerate(post) if tier != "student"), after)
    return {
        "noticed": alert_at if alert_at is not None else fallback,
        "fallback": fallback,
        "wrong": sum(1 for tier, right in post[:fallback] if tier == "student" and not right),
        "quality": sum(right for _, right in post) / len(post),
        "teacher_calls": shadows_after + sum(1 for tier, _ in post if tier == "teacher"),
        "false_alarm": bool(pre_alerts or pre_demoted),
        "alerts": _alerts(app),
    }


def _alerts(app: Any) -> int:
    return (app.lifecycle.drift.status("extract") or {}).get("alerts", 0)


def make_app(arm: str, seed: int) -> tuple[Any, Any]:
    """A task with 60 teacher traces of layout a and a promoted stand-in student."""
    from protege import Policy, Protege
    from protege.agents import FunctionModel
    from protege.distill.pipeline import promote
    from protege.store import StudentRow

    folder = Path(tempfile.mkdtemp(prefix="drift-"))
    app = Protege(
        db=f"sqlite:///{folder / 'd.db'}",
        project_dir=folder,
        seed=seed,
        teacher=FunctionModel(teacher),
        replay=FunctionModel(teacher),
    )
    # a student's drift: field programs (on by default) would serve this synthetic task instead
    policy = Policy(
        program=False,
        shadow_rate=0.05,
        demote_below=0.9,
        shadow_window=50,
        drift_shadow_rate=1.0 if arm == "early+sequential" else 0.0,
    )

    @app.task(policy=policy)
    def extract(email: Email) -> Order:
        """The item and quantity ordered."""

    rng = random.Random(seed)
    for _ in range(60):
        app.run("extract", make_input("a", rng))
    app.wait()
    row = app.store.add_student(
        StudentRow(
            task_name="extract", base="b", adapter_path="a", metrics={"confidences": eval_confidences(seed=seed)}
        )
    )
    promote(app.store, row.id)
    app.tiers._models[f"local:{row.id}"] = FunctionModel(student, name=f"local:{row.id}")  # the stand-in student
    app.tiers.invalidate("extract")
    if arm == "window":
        app.lifecycle._sequential_verdict = lambda *args: None  # the backstop alone
    return app, row


def summarize(runs: list[dict[str, Any]], after: int) -> dict[str, Any]:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    return {
        "noticed_p50": med("noticed"),
        "noticed_max": max(r["noticed"] for r in runs),
        "fallback_p50": med("fallback"),
        "fallback_max": max(r["fallback"] for r in runs),
        "wrong_p50": med("wrong"),
        "wrong_max": max(r["wrong"] for r in runs),
        "quality": statistics.fmean(r["quality"] for r in runs),
        "teacher_calls": statistics.fmean(r["teacher_calls"] for r in runs),
        "false_alarms": sum(r["false_alarm"] for r in runs),
    }
