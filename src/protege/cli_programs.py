"""`protege programs TASK [--induce]`: a task's field programs — per field, the program, whether it is served,
its held-out accuracy and the share of held-out traces it refused.

Works on the store alone, like the review commands: `--induce` induces from the task's valid teacher traces
(imported logs included) with the output fields and `promote_at` its registration stored.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from protege.cli_base import JsonOpt, TaskArg, app, store_of
from protege.cli_load import require_task
from protege.cli_output import emit_json, pct, table
from protege.errors import UserError

InduceOpt = Annotated[bool, typer.Option("--induce", help="induce now from the task's valid teacher traces and "
                                                           "store the result as a new skill version")]


@app.command(rich_help_panel="Review")
def programs(ctx: typer.Context, task: TaskArg, induce: InduceOpt = False, as_json: JsonOpt = False) -> None:
    """Show (or --induce) the field programs of a task: per field, the program, held-out accuracy, refusals."""
    from protege.programs.service import induce_stored, stored_programs

    store = store_of(ctx)
    row = require_task(store, task)
    if induce:
        fields = list((row.output_schema or {}).get("properties", {}))
        promote_at = float((row.policy or {}).get("promote_at", 0.95))
        found = induce_stored(store, task, fields, promote_at=promote_at, instructions=row.instructions)
    else:
        found = stored_programs(store, task)
        if found is None:
            raise UserError(f"task {task!r} has no field programs yet: they are induced in the background once "
                            f"Policy.program_min_traces teacher traces exist, or now with "
                            f"`protege programs {task} --induce`")
    if as_json:
        return emit_json(found.to_json())
    show(found)


def show(found: Any) -> None:
    rows = []
    for fp in found.fields.values():
        rows.append([fp.field, fp.describe() if fp.programs else "—", "yes" if fp.promoted else "no",
                     pct(fp.accuracy), f"{fp.right + fp.wrong}", pct(fp.refusal_rate), fp.reason])
    served = len(found.served)
    table(f"field programs of {found.task!r}: {served} of {len(found.fields)} fields served",
          ["field", "program", "served", "held-out accuracy", "answered", "refused", "why"], rows,
          right=("held-out accuracy", "answered", "refused"), optional=("why",), flex="program",
          caption=f"induced on {found.train} traces, verified on {found.heldout} held out, in {found.induce_s:.2f} s; "
                  "the Python rendering is scripts/fields.py of the task's skill (`protege skill show`)")
