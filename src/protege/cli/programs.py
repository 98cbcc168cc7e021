"""`protege programs TASK [--induce]`: a task's programs — per field, its source (induced, or written by the
author model: scripts/solve.py), the program, whether it is served, held-out accuracy, refusals, sandbox failures.

Works on the store alone, like the review commands: `--induce` induces from the task's valid teacher traces
(imported logs included) with the output fields and `promote_at` its registration stored.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from protege.cli.base import JsonOpt, TaskArg, app, store_of
from protege.cli.load import require_task
from protege.cli.output import console, emit_json, pct, table
from protege.errors import UserError

InduceOpt = Annotated[
    bool,
    typer.Option(
        "--induce",
        help="induce now from the task's valid teacher and imported traces and store the result as a new skill version",
    ),
]


@app.command(rich_help_panel="Review")
def programs(ctx: typer.Context, task: TaskArg, induce: InduceOpt = False, as_json: JsonOpt = False) -> None:
    """Show (or --induce) the programs of a task: per field, its source (induced or written by a model), the
    program, held-out accuracy, refusals, and the authored program's failures while serving."""
    from protege.programs.authored import stored_authored
    from protege.programs.service import stored_programs

    store = store_of(ctx)
    row = require_task(store, task)
    found = _induce(store, task, row) if induce else stored_programs(store, task)
    authored = stored_authored(store, task)
    if found is None and authored is None:
        from protege.programs.service import SOURCE_TIERS

        have = sum(store.count_traces(task, tier=t, valid=True) for t in SOURCE_TIERS)
        raise UserError(
            f"task {task!r} has no field programs yet: they are induced in the background once "
            f"Policy.program_min_traces teacher traces exist, or now with "
            f"`protege programs {task} --induce` (teacher-written ones need Protege(program_author=...)); "
            f"it has {have:,} valid teacher and imported traces — an induction that verifies no field stores nothing"
        )
    failures = _serving_failures(store, task) if authored is not None else 0
    if as_json:
        data = found.to_json() if found is not None else {"task": task, "fields": []}
        return emit_json({**data, "authored": _authored_json(found, authored, failures)})
    show(found, authored, failures, task=task)


def _induce(store: Any, task: str, row: Any) -> Any:
    """Induce the task's field programs now, from its stored traces (stored when any field gets one)."""
    from protege.programs.service import induce_stored
    from protege.skills.program_check import output_fields

    fields = output_fields(row.output_schema)
    promote_at = float((row.policy or {}).get("promote_at", 0.95))
    return induce_stored(store, task, fields, promote_at=promote_at, instructions=row.instructions)


def _serving_failures(store: Any, task: str) -> int:
    """Program-tier attempts the authored program failed (sandbox timeout, crash, exception) while serving."""
    rows = store.traces(task, tier="program", valid=False, limit=10_000)
    return sum(1 for r in rows if any("authored program" in str(e) for e in (r.errors or [])))


def _authored_json(found: Any, authored: Any, failures: int) -> dict[str, Any] | None:
    from protege.programs.authored import choose

    if authored is None:
        return None
    return {
        "author": authored.author,
        "written_by": authored.written_by,
        "held_out": authored.held_out,
        "field_agreement": authored.field_agreement,
        "verified": authored.verified,
        "traces": authored.traces,
        "serving_failures": failures,
        "serves": sorted(f for f, s in choose(found, authored).items() if s == "authored"),
    }


def show(found: Any, authored: Any = None, failures: int | None = None, *, task: str = "") -> None:
    from protege.programs.authored import choose

    choice = choose(found, authored)
    names = list(found.fields) if found is not None else []
    names += [n for n in (authored.field_agreement if authored is not None else {}) if n not in names]
    rows = [_row(name, found, authored, choice.get(name)) for name in names]
    task = task or (found.task if found is not None else "")
    table(
        f"field programs of {task!r}: {len(choice)} of {len(names)} fields served",
        ["field", "served by", "program", "held-out accuracy", "answered", "refused", "authored", "why"],
        rows,
        right=("held-out accuracy", "answered", "refused", "authored"),
        optional=("why", "authored"),
        flex="program",
        caption=_caption(found, authored),
    )
    if authored is not None:
        console().print(escape(_authored_line(authored, failures)))


def _row(name: str, found: Any, authored: Any, source: str | None) -> list[Any]:
    fp = found.fields.get(name) if found is not None else None
    mine = authored.field_agreement.get(name) if authored is not None else None
    if source == "authored":
        return [
            name,
            f"written by {authored.author}",
            "scripts/solve.py",
            pct(mine),
            f"{authored.held_out}",
            "—",
            pct(mine),
            "",
        ]
    why = fp.reason if fp is not None and not fp.promoted else ""
    if mine is not None and source is None:
        why = (why + "; " if why else "") + f"authored {pct(mine)} < promote_at"
    elif mine is not None and name in authored.verified:
        why = "induced verifies as well or better"
    if fp is None:
        return [name, "—", "—", "—", "0", "—", pct(mine), why]
    return [
        name,
        "induced" if fp.promoted else "—",
        fp.describe() if fp.programs else "—",
        pct(fp.accuracy),
        f"{fp.right + fp.wrong}",
        pct(fp.refusal_rate),
        pct(mine),
        why,
    ]


def _caption(found: Any, authored: Any) -> str:
    if found is None:
        return "no induced programs; `protege skill show` (at a terminal, or --json) prints scripts/solve.py"
    return (
        f"induced on {found.train} traces, verified on {found.heldout} held out, in {found.induce_s:.2f} s; "
        "`protege skill show` (at a terminal, or --json) prints scripts/fields.py and scripts/solve.py"
    )


def _authored_line(authored: Any, failures: int | None) -> str:
    line = (
        f"authored program {authored.by}: from {authored.traces} teacher traces, verified on "
        f"{authored.held_out} held out"
    )
    return line + (f"; {failures} sandbox failures while serving (each escalated)" if failures is not None else "")
