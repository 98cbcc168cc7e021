"""Teacher-written programs in the program tier (issue 17 wired into issue 22's tier), on the order workload.

The same 1,000-call stream (unseen emails: the workload's held-out examples and the pool beyond the 300 trace
inputs) goes through the app's cascade three times, each in a fresh SQLite store that holds the same 300 valid
teacher traces:
- program tier off (`Policy(program=False)`): the teacher answers every call;
- induced field programs only (issue 22);
- induced + authored: the offline author `code_author(order_program())` (a function returning the bundled program:
  it measures verification, the sandbox and routing, not a model's authoring), verified per field in the sandbox,
  each field served by whichever program verified better.
Each with two fallbacks: the teacher (which answers for itself: fixed fields save nothing on a call the programs
do not answer whole), and replay of an approved skill with the program-decided fields fixed (an oracle priced as
claude-haiku-4-5, so every quality loss is the programs'). No student is trained here (the machine is shared).
Latency: the program decision per call (induced in-process + one sandbox call), timed apart from the model tiers.
"""

from __future__ import annotations

import asyncio
import time
from itertools import cycle, islice
from typing import Any

from bench.common import Context, Headline, Result, Table, latency_summary
from bench.data import orders, output_of, teacher_trace

TITLE = "Teacher-written programs in the program tier"
TRACES = 300
STREAM = 1000
TEACHER_PRICE = "anthropic:claude-opus-4-5"
TARGET_MS = 5.0
REPLAY_PRICE = "anthropic:claude-haiku-4-5"
FALLBACKS = {
    "teacher": "fallback: the teacher (it answers for itself: fixed fields unused)",
    "replay": f"fallback: replay of an approved skill, priced as {REPLAY_PRICE}, with fixed fields",
}
MODES = (("program tier off", "off"), ("induced programs", "induced"), ("induced + authored", "authored"))


def run(ctx: Context, calls: int | None = None) -> Result:
    w = orders(False)
    unseen = w.heldout + w.pool[TRACES:]
    stream = list(islice(cycle(unseen), calls or ctx.pick(300, STREAM)))  # recurring: inputs come back
    data: dict[str, Any] = {}
    result_rows: dict[str, list] = {}
    for fallback in FALLBACKS:
        rows = []
        for label, mode in MODES:
            ctx.log(f"[bench] authored: {label}, fallback {fallback}")
            m = data[f"{mode}/{fallback}"] = measure(ctx, w, stream, mode, fallback)
            rows.append(
                [
                    label,
                    m["fields_served"],
                    f"{m['whole']:.1%}",
                    f"{m['filled']:.1%}",
                    f"{m['fields_per_call']:.2f}",
                    _pct(m["fixed_right"]),
                    f"{m['exact']:.1%}",
                    f"${m['cost_per_1k']:.2f}",
                    f"{m['failures']}",
                    _ms(m, "p50_ms"),
                    _ms(m, "p99_ms"),
                ]
            )
        result_rows[fallback] = rows
    result = Result(data=data)
    for fallback, rows in result_rows.items():
        result.tables.append(
            Table(
                f"Order workload, a {len(stream):,}-call stream ({len(unseen)} distinct unseen emails) after {TRACES} "
                f"teacher traces; {FALLBACKS[fallback]}",
                [
                    "program tier",
                    "fields served",
                    "calls served whole",
                    "calls with fields fixed",
                    "fields fixed / call",
                    "fixed fields right",
                    "exact match",
                    "cost / 1k calls",
                    "program failures",
                    "program p50 (ms)",
                    "program p99 (ms)",
                ],
                rows,
            )
        )
    off, a, induced = data["off/teacher"], data["authored/replay"], data["induced/replay"]
    result.tables.append(
        Table(
            "Per field, induced + authored: who serves it and its held-out accuracy",
            ["field", "served by", "induced held-out", "authored held-out"],
            [[f, src["by"], _pct(src["induced"]), _pct(src["authored"])] for f, src in a["per_field"].items()],
        )
    )
    result.headlines.append(
        Headline(
            metric="program decision per call incl. the sandbox hop, p50 (induced + authored)",
            value=a["latency"]["p50_ms"] if a["latency"] else None,
            unit="ms",
            baseline=induced["latency"]["p50_ms"] if induced["latency"] else None,
            baseline_label="induced programs alone, in-process, p50 (ms)",
            target=f"≤ {TARGET_MS:g} ms",
            met=bool(a["latency"]) and a["latency"]["p50_ms"] <= TARGET_MS,
        )
    )
    result.headlines.append(
        Headline(
            metric="calls with program-fixed fields (induced + authored)",
            value=a["filled"],
            unit="of calls",
            baseline=induced["filled"],
            baseline_label="induced programs alone",
        )
    )
    result.headlines.append(
        Headline(
            metric="exact match with programs fixing fields for replay (induced + authored)",
            value=a["exact"],
            unit="exact match",
            baseline=data["off/replay"]["exact"],
            baseline_label="program tier off, same replay",
        )
    )
    result.notes.append(
        f"Quality: exact match of the served answer vs the labels; teacher-only (program tier off) is "
        f"{off['exact']:.1%} at ${off['cost_per_1k']:.2f} per 1k calls. The teacher here is a ReferenceModel "
        f"(answers from the labels) priced as {TEACHER_PRICE}; authoring was {a['author_calls']} call(s) of "
        f"the offline author, recorded as tier 'author' (cost $0: a function, not a model)."
    )
    result.notes.append(
        "With the replay fallback, the replay model is a ReferenceModel too (it answers from the labels) priced as "
        f"{REPLAY_PRICE}, replaying an approved skill: every quality loss in those rows is the programs' (a fixed "
        "field overrules the model's answer), and the cost is the replay's. Real replay or a student adds its own "
        "errors on the fields programs leave to it."
    )
    result.notes.append(
        "'Calls with fields fixed': calls where programs decided at least one field (served whole, or fixed for "
        "the next tier); 'fixed fields right' is over those fields, against the labels. With the teacher as the "
        "fallback the fixed fields are not used (the teacher answers for itself), so cost moves only with calls "
        "served whole."
    )
    return result


def measure(ctx: Context, w: Any, stream: list[dict], mode: str, fallback: str) -> dict[str, Any]:
    from protege import Policy, Protege
    from protege.agents import FunctionModel, ReferenceModel
    from protege.demo.workload import order_program
    from protege.programs.stored import base_skill
    from protege.skills.program_author import code_author

    folder = ctx.folder("authored", f"{mode}-{fallback}")
    db = folder / "p.db"
    db.unlink(missing_ok=True)
    teacher = ReferenceModel([*w.pool, *w.heldout], price_as=TEACHER_PRICE)
    author = code_author(order_program()) if mode == "authored" else None
    replay = (
        ReferenceModel([*w.pool, *w.heldout], price_as=REPLAY_PRICE)
        if fallback == "replay"
        else FunctionModel(lambda req: "{}")
    )
    app = Protege(db=f"sqlite:///{db}", teacher=teacher, replay=replay, seed=1, program_author=author)
    try:
        app.task(policy=Policy(program=mode != "off", program_min_traces=TRACES, shadow_rate=0.0))(w.task)
        app.programs.background = False  # the stream's teacher traces must not feed a new induction or authoring
        name, runtime = w.task_name, app.handle(w.task_name).runtime
        app.store.insert_traces([teacher_trace(row, name, runtime.spec.instructions) for row in w.pool[:TRACES]])
        if fallback == "replay":
            app.skills.add(name, base_skill(app.skills, name, runtime.spec.instructions), kind="edited")
            app.approve_skill(name)
        if mode != "off":
            app.programs.induce(name)
        if mode == "authored":
            app.portal.call(app.authored.write(runtime))
        return {
            **_stream(app, name, stream),
            **_decisions(app, runtime, stream),
            **_who(app, name),
            "author_calls": len(app.traces(name, tier="author")),
        }
    finally:
        app.close()


def _stream(app: Any, name: str, stream: list[dict]) -> dict[str, Any]:
    whole = filled = fixed = fixed_right = exact = failures = 0
    cost = 0.0
    for row in stream:
        expected = output_of(row)
        res = app.run(name, row["input"])
        out = res.output.model_dump(mode="json")
        exact += out == expected
        cost += res.cost_usd
        whole += res.tier == "program"
        failures += sum(1 for a in res.attempts if a.tier == "program" and not a.valid)
    decided = app.tiers.programs(app.handle(name).runtime)
    for row in stream:
        values = _values(decided, row["input"])
        filled += bool(values)
        fixed += len(values)
        fixed_right += sum(values[k] == output_of(row).get(k) for k in values)
    n = len(stream)
    return {
        "calls": n,
        "whole": whole / n,
        "filled": filled / n,
        "fields_per_call": fixed / n,
        "fixed_right": fixed_right / fixed if fixed else None,
        "exact": exact / n,
        "cost_per_1k": cost / n * 1000,
        "failures": failures,
    }


def _values(decided: Any, data: dict) -> dict[str, Any]:
    from protege.agents.fixed_fields import decide_fields

    return asyncio.run(decide_fields(decided, data))[0] if decided is not None else {}


def _decisions(app: Any, runtime: Any, stream: list[dict]) -> dict[str, Any]:
    """The program decision alone, per call (what the cascade awaits before routing)."""
    from protege.agents.fixed_fields import decide_fields

    decided = app.tiers.programs(runtime)
    if decided is None:
        return {"latency": None}

    async def timed() -> list[float]:
        out = []
        for row in stream:
            start = time.perf_counter()
            await decide_fields(decided, row["input"])
            out.append(time.perf_counter() - start)
        return out

    return {"latency": latency_summary(asyncio.run(timed()))}


def _who(app: Any, name: str) -> dict[str, Any]:
    from protege.programs.authored import choose

    induced, authored = app.programs.current(name), app.authored.current(name)
    choice = choose(induced, authored)
    fields = list(app.handle(name).spec.output_model.model_fields)
    per_field = {}
    for f in fields:
        fp = induced.fields.get(f) if induced is not None else None
        per_field[f] = {
            "by": {"authored": "written by " + (authored.author if authored else ""), "induced": "induced"}.get(
                choice.get(f, ""), "next tier"
            ),
            "induced": fp.accuracy if fp is not None and fp.promoted else None,
            "authored": authored.field_agreement.get(f) if authored and f in authored.verified else None,
        }
    return {"fields_served": f"{len(choice)}/{len(fields)}", "per_field": per_field}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _ms(m: dict[str, Any], key: str) -> str:
    return "–" if not m["latency"] else f"{m['latency'][key]:.2f}"
