"""Start here: `protege init` (the project dir with its store, a starter app, the pyproject hint that names it)
and `protege demo` (the whole loop offline, see protege.demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from protege.cli.base import app, config, store_of
from protege.cli.load import pyproject_settings
from protege.cli.output import error, note
from protege.demo.run import DemoOptions
from protege.errors import UserError

STARTER = '''"""A protege app: one task with a tool. Runs offline as is; set PROTEGE_TEACHER (and the provider's
API key) to use a real model, e.g. PROTEGE_TEACHER=anthropic:claude-opus-4-5 ANTHROPIC_API_KEY=... python {file}"""

import json
import os
from typing import Literal

from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel, ModelRequest, ModelResponse, ToolCall, Usage


class Ticket(BaseModel):
    sender: str
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int  # 1 = urgent .. 4 = whenever


PLANS = {{"ana@acme.example": "enterprise", "bo@mail.example": "free"}}


def customer_plan(email: str) -> str:
    """The customer's plan (free, pro, enterprise) by email address, or 'unknown'."""
    return PLANS.get(email.lower(), "unknown")


def offline_teacher(req: ModelRequest) -> ModelResponse:
    """Stands in for a real model offline: looks the plan up with the tool, then applies simple rules."""
    ticket = req.task_input["ticket"]
    results = [m.content for m in req.messages if m.role == "tool"]
    if not results:
        call = ToolCall(id="call_1", name="customer_plan", arguments={{"email": ticket["sender"]}})
        return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=600, output_tokens=30))
    text = (ticket["subject"] + " " + ticket["body"]).lower()
    queue = "billing" if "refund" in text or "invoice" in text else "bug" if "error" in text else "other"
    answer = {{"queue": queue, "priority": 1 if results[-1] == "enterprise" else 3}}
    return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=700, output_tokens=25))


app = Protege(
    teacher=os.environ.get("PROTEGE_TEACHER") or FunctionModel(offline_teacher, price_as="anthropic:claude-opus-4-5"),
    replay=os.environ.get("PROTEGE_REPLAY") or FunctionModel(offline_teacher, price_as="anthropic:claude-haiku-4-5"),
)


@app.task(tools=[customer_plan], policy=Policy(min_traces=200))
def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent .. 4 = whenever).
    Look up the sender's plan first: enterprise customers get priority 1."""


if __name__ == "__main__":
    print(triage(Ticket(sender="ana@acme.example", subject="Refund for invoice 42", body="Charged twice.")))
'''


@app.command(rich_help_panel="Start here")
def init(
    ctx: typer.Context,
    app_file: Annotated[Path, typer.Option(help="starter app to write (kept if it exists)")] = Path("protege_app.py"),
) -> None:
    """Create the project dir and its store, a starter app, and point ./pyproject.toml at it (if there is one)."""
    cfg = config(ctx)
    if app_file.suffix != ".py" or not app_file.stem.isidentifier():
        raise UserError(f"--app-file {str(app_file)!r} must be a .py file whose name is a Python identifier")
    module = _module_of(app_file)
    cfg.project_dir.mkdir(parents=True, exist_ok=True)
    ignore = cfg.project_dir / ".gitignore"
    if not ignore.exists():  # the store holds traces (inputs, outputs): keep it out of git
        ignore.write_text("*\n", encoding="utf-8")
    store_of(ctx, create=True)
    typer.echo(f"store ready: {cfg.db_url}")
    if app_file.exists():
        note(f"{app_file} exists; left as it is")
    else:
        app_file.write_text(STARTER.format(file=app_file.name), encoding="utf-8")
        typer.echo(f"wrote {app_file}: a task with a tool, runnable offline (python {app_file})")
    _point_pyproject(module)
    typer.echo(
        f"next: `python {app_file}`, then `protege tasks`, `protege traces`, `protege tui`; "
        "or see it all at once with `protege demo`"
    )


def _module_of(app_file: Path) -> str:
    try:
        rel = app_file.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        raise UserError(
            f"--app-file {str(app_file)!r} must be inside the current folder (it is imported from here)"
        ) from None
    return ".".join(rel.with_suffix("").parts) + ":app"


def _point_pyproject(spec: str) -> None:
    path = Path("pyproject.toml")
    snippet = f'[tool.protege]\napp = "{spec}"\n'
    if not path.exists():
        note(
            f"no pyproject.toml here: pass --app {spec}, set PROTEGE_APP={spec}, or add to a pyproject.toml:\n{snippet}"
        )
        return
    existing = pyproject_settings(Path.cwd())
    if existing.get("app"):
        note(f"pyproject.toml already names app {existing['app']!r}; left as it is")
    elif existing or "[tool.protege]" in path.read_text(encoding="utf-8"):
        note(f'pyproject.toml has a [tool.protege] table without `app`: add app = "{spec}" to it')
    else:
        text = path.read_text(encoding="utf-8")
        path.write_text(text + ("" if text.endswith("\n") else "\n") + "\n" + snippet, encoding="utf-8")
        typer.echo(f'pyproject.toml: added [tool.protege] app = "{spec}"')


# -- demo ------------------------------------------------------------------------------------------------------------


@app.command(rich_help_panel="Start here")
def demo(
    ctx: typer.Context,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="a real teacher, e.g. anthropic:claude-opus-4-5 (default: "
            "an offline reference teacher priced as claude-opus-4-5)"
        ),
    ] = None,
    project_dir: Annotated[
        Path | None, typer.Option(help="where the demo's store goes [the global --project-dir]")
    ] = None,
    traces: Annotated[int, typer.Option(min=20, help="teacher traces to distill from")] = DemoOptions.traces,
    serve: Annotated[int, typer.Option(min=1, help="new calls the student serves at the end")] = DemoOptions.serve,
    replays: Annotated[
        int, typer.Option(min=0, help="calls routed to replay by the local base model")
    ] = DemoOptions.replays,
    reset: Annotated[bool, typer.Option("--reset", help="start over: remove an earlier demo's store first")] = False,
) -> None:
    """The whole loop offline on the bundled order-extraction workload: teacher → skill → replay → distill →
    student, ending in a table of quality, cost and latency per tier."""
    from protege.demo.run import run_demo

    cfg = config(ctx)
    opts = DemoOptions(
        project_dir=project_dir or cfg.project_dir,
        db=cfg.db,
        teacher=teacher,
        traces=traces,
        serve=serve,
        replays=replays,
        reset=reset,
    )
    try:
        run_demo(opts)
    except KeyboardInterrupt:
        error("demo interrupted; what it did so far is in the store (`protege tui` shows it)")
        raise typer.Exit(130) from None
