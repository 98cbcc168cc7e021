"""Reading the store: `tasks`, `traces`, `trace`, `stats`, and `tui`. None of them imports the app."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from protege.agents.results import TIERS
from protege.cli.base import JsonOpt, OptTaskArg, app, config, store_of
from protege.cli.load import find_run_id, find_trace, require_task
from protege.cli.output import clip, emit_json, note, pct, row_dict, secs, short_id, table, usd, when
from protege.errors import UserError

READ = "Read the store"


@app.command(rich_help_panel=READ)
def tasks(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List registered tasks with their calls, traces, skill and student."""
    store = store_of(ctx)
    rows = [_task_summary(store, t) for t in store.tasks()]
    if as_json:
        return emit_json(rows)
    orphans = store.unregistered_trace_counts()
    if orphans:  # imported before their task was registered: listed by `protege traces NAME`, not distilled
        note(
            "traces of unregistered tasks: "
            + ", ".join(f"{name} ({n:,})" for name, n in sorted(orphans.items()))
            + " — register each with @app.task (the same name) to distill from them"
        )
    if not rows:
        return typer.echo("no tasks yet: register one with @app.task and call it (or run `protege demo`)")
    table(
        "tasks",
        ["task", "v", "inputs", "calls", "traces", "valid", "skill", "student"],
        [
            [
                r["name"],
                r["version"],
                ", ".join(r["inputs"]),
                r["calls"],
                r["traces"],
                pct(r["valid_share"]),
                r["skill"] or "—",
                short_id(r["student"]),
            ]
            for r in rows
        ],
        right=("v", "calls", "traces", "valid"),
        optional=("inputs", "student", "v"),  # numbers never end in … on an 80-column terminal
        flex="skill",
    )
    for r in rows:  # background work owed: otherwise seen only in SQL
        for job in r["jobs"]:
            error = f"; last error: {job['error'][:160]}" if job["error"] else ""
            note(f"{job['kind']} work for {r['name']} is {job['state']} (run {job['attempts']} time(s){error})")


def _task_summary(store: Any, task: Any) -> dict[str, Any]:
    traces = store.count_traces(task.name)
    valid = store.count_traces(task.name, valid=True)
    newest, approved = store.skill(task.name), store.skill(task.name, status="approved")
    skill = None
    if newest is not None:
        skill = f"v{newest.version} {newest.status}"
        if approved is not None and approved.version != newest.version:
            skill += f" (v{approved.version} approved)"
        skill += _failed_evidence(newest)
    student = store.promoted_student(task.name)
    return {
        "name": task.name,
        "version": task.version,
        "inputs": list((task.input_schema or {}).get("properties", {})),
        "calls": store.ledger(task.name).calls,
        "traces": traces,
        "valid_traces": valid,
        "valid_share": valid / traces if traces else None,
        "skill": skill,
        "student": student.id if student is not None else None,
        "created_at": task.created_at,
        "jobs": [
            {"kind": j.kind, "state": j.state, "attempts": j.attempts, "error": j.error}
            for j in store.jobs(task.name, state=None)
        ],
    }


def _failed_evidence(row: Any) -> str:
    """', evidence failed: 50% agreement on 4 calls' for a draft whose replay trial fell short (it is revised from
    the failing cases and tried again on new teacher answers), else ''."""
    evidence = row.evidence or {}
    if row.status != "draft" or evidence.get("passed", True) or evidence.get("agreement") is None:
        return ""
    return f", evidence failed: {evidence['agreement']:.0%} agreement on {evidence.get('n', 0)} calls"


# the cascade's tiers, imported logs, a draft skill's replay evidence, the skill author's own calls
TRACE_TIERS = (*TIERS, "import", "evidence", "author")


@app.command(rich_help_panel=READ)
def traces(
    ctx: typer.Context,
    task: OptTaskArg = None,
    tier: Annotated[str | None, typer.Option(help="only this tier (teacher, replay, student, import, ...)")] = None,
    valid: Annotated[
        bool | None, typer.Option("--valid/--invalid", help="only valid / only invalid attempts", show_default=False)
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="only this run's attempts (a run id, or a unique prefix of one)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="how many, newest first")] = 20,
    offset: Annotated[int, typer.Option(min=0, help="skip this many first (paging)")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """List traces (one per tier attempt), newest first; --run lists one call's attempts."""
    store = store_of(ctx)
    if task and not store.knows_task(task):  # a task known only by its traces (imported) lists them too
        require_task(store, task)
    if tier is not None and tier not in TRACE_TIERS:
        raise UserError(f"--tier {tier!r} is not a tier traces are recorded under; use one of {', '.join(TRACE_TIERS)}")
    run_id = find_run_id(store, run) if run is not None else None
    rows = store.traces(task, tier=tier, valid=valid, run_id=run_id, limit=limit, offset=offset)
    if as_json:
        return emit_json([row_dict(r, exclude=("messages", "raw", "tools")) for r in rows])
    if not rows:
        return typer.echo("no traces match")
    columns = [
        "id",
        "created",
        *([] if task else ["task"]),
        "tier",
        "model",
        "valid",
        "cost",
        "latency",
        "output / errors",
    ]
    table(
        f"traces{' of ' + task if task else ''} (newest first)",
        columns,
        [
            [
                short_id(r.id),
                when(r.created_at),
                *([] if task else [r.task_name]),
                r.tier + ("*" if r.shadow else ""),
                clip(r.model, 24),
                r.valid,
                usd(r.cost_usd),
                secs(r.latency_s),
                clip(_gist(r), 200),
            ]
            for r in rows
        ],
        right=("cost", "latency"),
        flex="output / errors",
        optional=("created", "model", "task", "latency"),
        caption=("* shadow run · " if any(r.shadow for r in rows) else "")
        + "`protege trace ID` shows one (an id prefix is enough)",
    )


def _gist(row: Any) -> str:
    if row.valid and row.output is not None:
        import json

        return json.dumps(row.output, ensure_ascii=False, separators=(",", ":"))
    return "; ".join(str(e) for e in row.errors or []) or row.output_text


@app.command(rich_help_panel=READ)
def trace(
    ctx: typer.Context,
    trace_id: Annotated[str, typer.Argument(metavar="ID", help="trace id (or a unique prefix of it)")],
    full: Annotated[bool, typer.Option("--full", help="don't shorten long turns")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show one trace as a transcript: turns, tool calls, output, validation errors, labels."""
    from protege.cli.trace import render_trace

    store = store_of(ctx)
    row = find_trace(store, trace_id)
    labels = store.labels(row.id)
    if as_json:
        return emit_json({**row_dict(row), "labels": [row_dict(lb) for lb in labels]})
    render_trace(row, labels, full=full)


@app.command(rich_help_panel=READ)
def stats(ctx: typer.Context, task: OptTaskArg = None, as_json: JsonOpt = False) -> None:
    """The ledger: calls, tier mix, spend by tier, the teacher-only counterfactual and the savings."""
    store = store_of(ctx)
    names = [require_task(store, task).name] if task else [t.name for t in store.tasks()]
    ledgers = [store.ledger(n) for n in names]
    if as_json:
        return emit_json(ledgers[0] if task else ledgers)
    if not ledgers:
        return typer.echo("no tasks yet")
    if task:
        _ledger_detail(ledgers[0])
    else:
        table(
            "spend by task",
            ["task", "calls", "tier mix", "spend", "teacher-only", "savings"],
            [
                [lg.task, lg.calls, _mix(lg), usd(lg.total_usd), usd(lg.teacher_only_usd), _savings(lg)]
                for lg in ledgers
            ],
            right=("calls", "spend", "teacher-only", "savings"),
            caption="teacher-only: served calls at the teacher's mean cost per valid answer, failed ones at what the "
            "teacher spent on them",
        )
    _budget_today(store, task)


def _budget_today(store: Any, task: str | None) -> None:
    """Today's teacher budget as the caps count it: settled spend and the reservations of calls in flight (a
    process killed mid-call keeps its reservation until the next reservation releases it)."""
    from protege.store.budget import ALL_TASKS

    states = [b for b in store.budget() if task is None or b.scope in (task, ALL_TASKS)]
    if not states:
        return
    table(
        f"teacher budget today ({states[0].day}, UTC)",
        ["scope", "spent", "reserved", "calls in flight", "counted"],
        [
            [
                "all tasks" if b.scope == ALL_TASKS else b.scope,
                usd(b.spent_usd),
                usd(b.reserved_usd),
                b.holds,
                usd(b.spent_usd + b.reserved_usd),
            ]
            for b in states
        ],
        right=("spent", "reserved", "calls in flight", "counted"),
        caption="counted against the caps: spent plus reserved (each call in flight reserves its worst case; a "
        "dead process's reservation is released by the next call)",
    )


def _mix(ledger: Any) -> str:
    """Each tier's share of all calls, failed ones too (as `stats TASK` shows them)."""
    if not ledger.calls:
        return "—"
    shares = sorted(ledger.calls_by_tier.items(), key=lambda kv: -kv[1])
    failed = ledger.calls - sum(ledger.calls_by_tier.values())
    shares += [("failed", failed)] if failed else []
    return " · ".join(f"{tier} {pct(n / ledger.calls)}" for tier, n in shares)


def _savings(ledger: Any) -> str:
    if ledger.savings_usd is None:
        return "—"
    return f"{usd(ledger.savings_usd)} ({pct(ledger.savings_ratio)})"


def _ledger_detail(ledger: Any) -> None:
    served = ledger.calls_by_tier
    failed = ledger.calls - sum(served.values())
    order = ("program", "student", "replay", "teacher")
    tiers = sorted(set(served) | set(ledger.spend_by_tier), key=lambda t: order.index(t) if t in order else 9)
    rows = [
        [
            t,
            served.get(t, 0),
            pct(served.get(t, 0) / ledger.calls if ledger.calls else None),
            usd(ledger.spend_by_tier.get(t, 0.0)),
        ]
        for t in tiers
    ]
    if failed:
        rows.append(["(failed calls)", failed, pct(failed / ledger.calls), "—"])
    rows.append(["total", ledger.calls, "", usd(ledger.total_usd)])
    table(
        f"ledger of {ledger.task}",
        ["tier", "calls served", "share", "spend"],
        rows,
        right=("calls served", "share", "spend"),
        caption="spend counts every attempt (escalations, shadows, skill writing); author/evidence are the "
        "skill loop's own model calls",
    )
    typer.echo(f"teacher-only counterfactual: {usd(ledger.teacher_only_usd)}   savings: {_savings(ledger)}")
    if ledger.imported_usd:
        typer.echo(f"imported logs' own cost (spent before protege, in neither figure): {usd(ledger.imported_usd)}")


@app.command(rich_help_panel=READ)
def tui(
    ctx: typer.Context,
    trace: Annotated[
        str | None,
        typer.Option(
            "--trace", help="open on this trace, e.g. the protege.trace_id attribute of an OpenTelemetry span"
        ),
    ] = None,
) -> None:
    """Open the review dashboard (tasks, skills, traces, students) on the store."""
    try:
        from protege.tui.app import make_app
    except ImportError as exc:
        raise UserError(
            f"the TUI is not available in this installation ({exc}); the CLI commands cover the same "
            f"reviews: `protege skills`, `protege traces`, `protege students`"
        ) from exc
    store = store_of(ctx)  # a clear error when there is no store, before the screen takes over
    if trace is not None:
        trace = find_trace(store, trace).id  # the listings' 12-character ids (or any unique prefix) open it too
    make_app(db=config(ctx).db_url, trace=trace).run()
