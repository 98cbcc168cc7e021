"""Field programs induced from traces (issue 22): per field, whether a program was found, its held-out accuracy and
refusal rate, induction time, and what programs change end to end on unseen calls.

Per workload (the bundled orders, debian-sections, five generated count-heavy workloads — invoices with line
items, meeting invites with attendees and agenda items, changelog entries clean and with real ones' mess (nested
items, bug lists), order emails that list several items in prose (the hard case) — real Debian changelog entries
where the machine has them installed (bench/workloads/make_real_changelogs.py: nobody wrote them for protege), and
any --data file):
300 pool examples become valid teacher traces of a teacher that only answers (a ReferenceModel priced as
claude-opus-4-5) in a fresh SQLite store; `app.programs.induce` induces and verifies the programs (a third of the
traces held out by input hash); then every unseen held-out example is called through the app's cascade. No
student is trained here (the machine is shared): the fallback for fields without a program is the teacher, so
"programs + student" is read from the per-field columns (a student fills the rest) and measured by a later run.
"""

from __future__ import annotations

import glob
import sys
import time
from statistics import fmean
from typing import Any

from bench.common import Context, Headline, NotRun, Result, Table
from bench.data import DEBIAN, WORKLOADS_DIR, Workload, debian, from_jsonl, orders, output_of, teacher_trace

TITLE = "Field programs induced from traces"
TRACES = 300
TEACHER_PRICE = "anthropic:claude-opus-4-5"
INDUCE_TARGET_S = 10.0
TEACHER_SAMPLE = 20
REAL_CHANGELOGS = "/usr/share/doc/*/changelog.Debian.gz"
"""Where a Debian machine keeps its packages' changelogs: real entries, measured where they are installed."""
GENERATED = (
    ("make_invoices", "invoices"),
    ("make_invites", "invites"),
    ("make_changelogs", "changelogs"),
    ("make_debian_changelogs", "debian-changelogs"),
    ("make_prose_orders", "prose-orders"),
)


def run(ctx: Context) -> Result:
    result = Result(data={"workloads": {}})
    for w in _workloads(ctx):
        ctx.log(f"[bench] programs: {w.name}")
        m = measure(ctx, w)
        result.data["workloads"][w.name] = m
        result.tables.append(_field_table(w, m))
        result.headlines.append(
            Headline(
                metric=f"induction, {w.name} ({m['train']} + {m['heldout_traces']} held-out traces × "
                f"{len(m['fields'])} fields)",
                value=m["induce_s"],
                unit="s",
                target=f"≤ {INDUCE_TARGET_S:g} s for 300 traces × 8 fields",
                met=m["induce_s"] <= INDUCE_TARGET_S,
            )
        )
        result.headlines.append(
            Headline(
                metric=f"unseen calls served by programs alone, {w.name}",
                value=m["program_share"],
                unit="of calls",
                baseline=m["quality"],
                baseline_label="end-to-end exact (programs + teacher fallback)",
            )
        )
    result.tables.insert(0, _summary_table(result.data["workloads"]))
    counts = [
        f"{w}: {name} {_pct(f['unseen_right'] / (f['unseen_right'] + f['unseen_wrong']))} right on the "
        f"{f['unseen_right'] + f['unseen_wrong']} unseen calls it answered, {f['unseen_refused']} refused"
        for w, m in result.data["workloads"].items()
        for name, f in m["fields"].items()
        if f["promoted"]
        and f["program"]
        and f["program"].startswith(("count", "number of items"))
        and f["unseen_right"] + f["unseen_wrong"]
    ]
    if counts:
        result.notes.append("Count fields (what a small student gets wrong): " + "; ".join(counts) + ".")
    result.notes.append(
        f"Traces: the first {TRACES} pool examples of each workload as valid teacher traces; unseen calls: its "
        "held-out examples, called through the cascade with no student and no approved skill, so a call that "
        "programs do not fully answer goes to the teacher (which answers exactly, being the labels). 'Answered' "
        "counts the calls a field's program did not refuse; accuracy is over those."
    )
    result.notes.append(
        "Student columns (programs + student vs the student alone) are left to a run that trains "
        "students; here CPU is shared, and no student was trained."
    )
    return result


def _workloads(ctx: Context) -> list[Workload]:
    out = [orders(False), *(generated(m, n) for m, n in GENERATED)]
    if DEBIAN.is_file():
        out.insert(1, debian(False))
    if _wanted(ctx, "real-changelogs") and glob.glob(REAL_CHANGELOGS):
        out.append(generated("make_real_changelogs", "real-changelogs", kind="installed"))
    if ctx.data is not None:
        out.append(from_jsonl(ctx.data, False))
    if ctx.workloads:
        out = [w for w in out if w.name in ctx.workloads or w.name.split()[0] in ctx.workloads]
        if not out:
            raise NotRun(f"--workloads {','.join(ctx.workloads)!r} matches no programs workload")
    for w in out:
        w.heldout = w.heldout[: ctx.pick(100, 300)]
    return out


def _wanted(ctx: Context, name: str) -> bool:
    return not ctx.workloads or name in ctx.workloads


def generated(module: str, name: str, kind: str = "generated") -> Workload:
    """A generated count-heavy workload (bench/workloads/<module>.py, its default seed): 600 pool, 300 held out.
    `kind` names where its texts come from in reports."""
    import importlib

    from bench.data import nullable_fields, task_from_example

    sys.path.insert(0, str(WORKLOADS_DIR))
    try:
        rows = importlib.import_module(module).generate(900)
    finally:
        sys.path.remove(str(WORKLOADS_DIR))
    task = task_from_example(rows[0], name=name.replace("-", "_"), nullable=nullable_fields(rows))
    return Workload(f"{name} ({kind})", task, rows[:600], rows[600:], f"bench/workloads/{module}.py")


def measure(ctx: Context, w: Workload) -> dict[str, Any]:
    from protege import Policy, Protege
    from protege.agents import FunctionModel, ReferenceModel

    folder = ctx.folder("programs", "".join(c if c.isalnum() else "-" for c in w.name))
    db = folder / "p.db"
    db.unlink(missing_ok=True)
    teacher = ReferenceModel([*w.pool, *w.heldout], price_as=TEACHER_PRICE)
    app = Protege(db=f"sqlite:///{db}", teacher=teacher, replay=FunctionModel(lambda req: "{}"), seed=1)
    try:
        app.task(policy=Policy(program_min_traces=TRACES))(w.task)
        app.programs.background = False  # the unseen calls' teacher traces must not feed a new induction
        name, spec = w.task_name, app.handle(w.task_name).spec
        app.store.insert_traces([teacher_trace(row, name, spec.instructions) for row in w.pool[:TRACES]])
        started = time.perf_counter()
        programs = app.programs.induce(name)
        induce_wall = time.perf_counter() - started
        return {
            **_fields(programs, w),
            **_calls(app, name, w),
            "induce_s": induce_wall,
            "train": programs.train,
            "heldout_traces": programs.heldout,
        }
    finally:
        app.close()


def _fields(programs: Any, w: Workload) -> dict[str, Any]:
    """Per field: the program, its held-out record, and its record on the unseen calls."""
    from protege.programs.induce import same
    from protege.programs.interpret import REFUSED

    fields = {}
    for name, fp in programs.fields.items():
        right = wrong = refused = 0
        for row in w.heldout:
            value = fp.apply(row["input"]) if fp.promoted else REFUSED
            if value is REFUSED:
                refused += 1
            elif same(value, output_of(row).get(name)):
                right += 1
            else:
                wrong += 1
        fields[name] = {
            "program": fp.describe() if fp.programs else None,
            "promoted": fp.promoted,
            "heldout_accuracy": fp.accuracy,
            "heldout_refusal": fp.refusal_rate,
            "reason": fp.reason,
            "unseen_right": right,
            "unseen_wrong": wrong,
            "unseen_refused": refused,
        }
    return {"fields": fields}


def _calls(app: Any, name: str, w: Workload) -> dict[str, Any]:
    spec = app.handle(name).spec
    served, scores, costs = [], [], []
    from protege.errors import ProtegeError

    for row in w.heldout:
        expected = spec.output_model.model_validate(output_of(row))
        try:
            res = app.run(name, row["input"])
        except ProtegeError as exc:  # a call every tier failed counts as wrong, at what it cost
            served.append("failed")
            scores.append(0.0)
            costs.append(sum(a.cost_usd for a in getattr(exc, "attempts", None) or []))
            continue
        served.append(res.tier)
        scores.append(float(spec.score(expected, res.output)))
        costs.append(res.cost_usd)
    # what the same calls cost the teacher alone: its calls here, or (when programs served them all) a sample
    teacher_costs = [c for c, t in zip(costs, served) if t == "teacher"]
    if len(teacher_costs) < TEACHER_SAMPLE:
        teacher_costs += [
            app.run(name, row["input"], tier="teacher", escalate=False).cost_usd for row in w.heldout[:TEACHER_SAMPLE]
        ]
    per_teacher_call = fmean(teacher_costs)
    return {
        "calls": len(served),
        "program_share": served.count("program") / len(served),
        "quality": fmean(scores),
        "failed": served.count("failed"),
        "cost_per_1k_usd": fmean(costs) * 1000,
        "teacher_only_per_1k_usd": per_teacher_call * 1000 if per_teacher_call is not None else None,
    }


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _field_table(w: Workload, m: dict[str, Any]) -> Table:
    rows = []
    for name, f in m["fields"].items():
        answered = f["unseen_right"] + f["unseen_wrong"]
        n = answered + f["unseen_refused"]
        program = (f["program"] or "none")[:90]
        rows.append(
            [
                name,
                program,
                "yes" if f["promoted"] else "no",
                _pct(f["heldout_accuracy"]),
                _pct(f["heldout_refusal"]),
                _pct(f["unseen_right"] / answered) if answered else "–",
                _pct(f["unseen_refused"] / n) if n else "–",
            ]
        )
    return Table(
        f"{w.name}: per field ({m['train']} training traces, {m['heldout_traces']} held out; "
        f"{m['calls']} unseen calls)",
        ["field", "program", "served", "held-out accuracy", "held-out refusals", "unseen accuracy", "unseen refusals"],
        rows,
    )


def _summary_table(results: dict[str, dict[str, Any]]) -> Table:
    rows = []
    for name, m in results.items():
        served = sum(f["promoted"] for f in m["fields"].values())
        rows.append(
            [
                name,
                f"{served}/{len(m['fields'])}",
                f"{m['induce_s']:.2f} s",
                _pct(m["program_share"]),
                _pct(m["quality"]),
                f"${m['cost_per_1k_usd']:.2f}",
                f"${m['teacher_only_per_1k_usd']:.2f}" if m["teacher_only_per_1k_usd"] is not None else "–",
            ]
        )
    return Table(
        "Per workload: fields with a served program, induction time, unseen calls served by programs alone, "
        "end-to-end exact match (programs + teacher), cost per 1k calls vs the teacher alone",
        [
            "workload",
            "fields programmed",
            "induction",
            "served by programs",
            "exact match",
            "cost / 1k calls",
            "teacher alone / 1k",
        ],
        rows,
    )
