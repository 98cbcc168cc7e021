"""The `protege` typer app object, its global options, and the error boundary every command runs inside.

Errors become one red line on stderr and an exit code: 2 for usage mistakes (UserError, bad flags), 1 for run
failures (RunError and anything unexpected), 130 for Ctrl-C. `--debug` (or PROTEGE_DEBUG=1) shows tracebacks.
Command modules (core, review, work, ...) import `app` from here and add their commands to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from protege.cli.load import CliConfig, load_app, open_store, resolve_config
from protege.cli.output import error
from protege.errors import ProtegeError, UserError

EXIT_RUN, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


class ProtegeGroup(TyperGroup):
    """Runs a command and turns protege's errors into one line and an exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        try:  # parses the global options: a bad one fails here, before any command runs
            return super().make_context(info_name, args, parent=parent, **extra)
        except typer.TyperException as exc:
            if "--json" in args:
                _json_error(exc.format_message(), type(exc).__name__, exc.exit_code)
            raise

    def invoke(self, ctx: Any) -> Any:
        # the command line, read before click hands it to the subcommand (whose context is gone if it fails)
        wants_json = "--json" in [*getattr(ctx, "_protected_args", []), *ctx.args]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort):
            raise
        except typer.TyperException as exc:  # a usage error of the parser (bad value, unknown option): typer shows it
            if wants_json:
                _json_error(exc.format_message(), type(exc).__name__, exc.exit_code)
            raise
        except Exception as exc:  # the CLI's one error boundary
            if _debug(ctx):
                raise
            code = _report(exc)
            if wants_json:
                _json_error(str(exc), type(exc).__name__, code)
            raise typer.Exit(code) from None
        except KeyboardInterrupt:
            if _debug(ctx):
                raise
            error("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None


def _json_error(message: str, kind: str, code: int) -> None:
    """A script reading --json output gets a failure as JSON on stdout too (the red line still goes to stderr)."""
    typer.echo(json.dumps({"error": message, "type": kind, "exit_code": code}))


def _report(exc: Exception) -> int:
    if isinstance(exc, UserError):
        error(str(exc))
        return EXIT_USAGE
    if isinstance(exc, ProtegeError):
        error(str(exc))
        return EXIT_RUN
    error(f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)")
    return EXIT_RUN


def _debug(ctx: Any) -> bool:
    obj = ctx.obj
    if isinstance(obj, CliConfig):
        return obj.debug
    return bool(ctx.params.get("debug"))


app = typer.Typer(
    cls=ProtegeGroup,
    name="protege",
    help="protege: an expensive teacher solves a task once; skills, replays and a distilled student take over.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from protege import __version__

        typer.echo(f"protege {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    app_spec: Annotated[str | None, typer.Option("--app", help="the Protege app as module:attr (run, distill)")] = None,
    project_dir: Annotated[Path | None, typer.Option(help="project dir (store, datasets, students) [.protege]")] = None,
    db: Annotated[str | None, typer.Option(help="store URL; default sqlite:///<project dir>/protege.db")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """Distill an expensive agent's work into skills and a small local student, and review it all."""
    ctx.obj = resolve_config(app=app_spec, db=db, project_dir=project_dir, debug=debug)


def config(ctx: typer.Context) -> CliConfig:
    root = ctx.find_root()
    if not isinstance(root.obj, CliConfig):  # a command invoked without the group (tests of single commands)
        root.obj = resolve_config(app=None, db=None, project_dir=None, debug=False)
    return root.obj


def store_of(ctx: typer.Context, *, create: bool = False) -> Any:
    """The store from the CLI configuration, closed when the command ends."""
    store = open_store(config(ctx), create=create)
    ctx.call_on_close(store.close)
    return store


def app_of(ctx: typer.Context) -> Any:
    """The user's Protege app (for commands that run task code), closed when the command ends."""
    protege_app = load_app(config(ctx))
    ctx.call_on_close(protege_app.close)
    return protege_app


JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
TaskArg = Annotated[str, typer.Argument(help="task name", show_default=False)]
OptTaskArg = Annotated[str | None, typer.Argument(help="task name (all tasks when left out)", show_default=False)]


def reviewer_default() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


ReviewerOpt = Annotated[
    str | None, typer.Option("--reviewer", help="who is acting (recorded on the review) [default: your user name]")
]
