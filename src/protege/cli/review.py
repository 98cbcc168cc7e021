"""Reviewing: `skills`, `skill show|approve|reject|edit|export|import`, `students`, `promote`, `demote`.

They work on the store alone (no app import): a reviewer's machine needs the store, not the task code. Every
review is recorded with the reviewer's name (`--reviewer`, default: your user name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from protege.cli.base import JsonOpt, OptTaskArg, ReviewerOpt, TaskArg, app, config, reviewer_default, store_of
from protege.cli.load import find_student_id, require_task
from protege.cli.output import console, emit_json, pct, row_dict, table, when
from protege.errors import UserError

REVIEW = "Review"


class _ListByDefault(TyperGroup):
    """`protege students [TASK]` lists (the `list` command); `protege students export|serve ...` are commands."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


students_app = typer.Typer(
    cls=_ListByDefault, help="List students (`protege students [TASK]`), export and serve them, prune old ones."
)
app.add_typer(students_app, name="students", rich_help_panel=REVIEW)
skill_app = typer.Typer(help="Show, approve, reject, edit, export and import skills.", no_args_is_help=True)
app.add_typer(skill_app, name="skill", rich_help_panel=REVIEW)
VersionOpt = Annotated[int | None, typer.Option("--version", "-v", min=1, help="skill version (default: newest)")]


def _library(ctx: typer.Context) -> Any:
    from protege.skills.library import SkillLibrary

    return SkillLibrary(store_of(ctx))


@app.command(rich_help_panel=REVIEW)
def skills(ctx: typer.Context, task: OptTaskArg = None, as_json: JsonOpt = False) -> None:
    """List skill versions and their review states."""
    lib = _library(ctx)
    if task:
        require_task(lib.store, task)
    rows = lib.store.skills(task)
    if as_json:
        return emit_json([row_dict(r, exclude=("text", "files")) for r in rows])
    if not rows:
        return typer.echo("no skills yet: one is written after the teacher's first valid answer")
    table(
        "skills (newest version first)",
        ["task", "v", "status", "kind", "name", "author", "reviewed by", "created", "lines", "programs"],
        [
            [
                r.task_name,
                r.version,
                _status(r.status),
                r.kind,
                r.name,
                r.author_model or "—",
                r.reviewed_by,
                when(r.created_at),
                len(r.text.splitlines()),
                _programs_cell(r),
            ]
            for r in rows
        ],
        right=("v", "lines"),
        optional=("name", "created", "lines", "author"),
        caption="`protege skill show TASK` prints one; `protege skill approve|reject TASK` reviews a draft",
    )


def _programs_cell(row: Any) -> str:
    """'3/8 fields' for a version that carries induced field programs (`protege programs TASK` shows them)."""
    from protege.programs.service import PROGRAMS_FILE

    text = (row.files or {}).get(PROGRAMS_FILE)
    if not text:
        return "—"
    import json

    fields = json.loads(text).get("fields", [])
    return f"{sum(1 for f in fields if f.get('promoted'))}/{len(fields)} fields"


def _status(status: str) -> Any:
    from rich.text import Text

    return Text(status, style={"approved": "green", "draft": "yellow", "rejected": "red"}.get(status, "dim"))


@skill_app.command("show")
def skill_show(ctx: typer.Context, task: TaskArg, version: VersionOpt = None, as_json: JsonOpt = False) -> None:
    """Print a skill's SKILL.md (the newest version unless --version): rendered on a terminal, with its field
    programs and extra files (scripts/solve.py, ...) as code; the file itself when redirected (`> SKILL.md`, which
    `skill edit -f` takes back)."""
    lib = _library(ctx)
    require_task(lib.store, task)
    row = lib.get(task, version) if version else lib.latest(task)
    if row is None:
        raise UserError(f"task {task!r} has no skill yet; one is written after the teacher's first valid answer")
    if as_json:
        return emit_json(row_dict(row))
    out = console()
    skill = lib.to_skill(row)
    if not out.is_terminal:  # `> SKILL.md` or a pipe: the file itself, as `skill edit -f` takes it back
        return typer.echo(skill.render(), nl=False)
    from rich.markdown import Markdown
    from rich.markup import escape
    from rich.rule import Rule

    out.print(
        Rule(
            f"{row.name} v{row.version} · {row.status} · {row.kind}"
            + (f" · reviewed by {row.reviewed_by}" if row.reviewed_by else ""),
            align="left",
        )
    )
    out.print(_header(skill))
    out.print(Rule(style="dim"))
    out.print(Markdown(skill.body))
    if row.evidence:
        ev = row.evidence
        out.print(
            f"evidence: agreement {pct(ev.get('agreement'))} over {ev.get('n')} inputs "
            f"(gate {pct(ev.get('promote_at'))}) → {'passed' if ev.get('passed') else 'not passed'}"
        )
    if row.review_note:
        out.print(f"review note: {escape(row.review_note)}")
    _show_files(out, skill.files, task)


def _header(skill: Any) -> Any:
    """The frontmatter as fields (as Markdown it was one setext heading of every line)."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for key, value in skill.header():
        grid.add_row(key, Text(value))
    if skill.files:
        grid.add_row("files", Text(", ".join(sorted(skill.files))))
    return grid


def _show_files(out: Any, files: dict[str, str], task: str) -> None:
    """The field programs' table, then every extra file as highlighted code (scripts/solve.py, scripts/fields.py)
    but the JSON records the table already shows."""
    import json

    from rich.rule import Rule
    from rich.syntax import Syntax

    from protege.cli.programs import show
    from protege.programs import ProgramSet
    from protege.programs.authored import RECORD_FILE, AuthoredProgram
    from protege.programs.service import PROGRAMS_FILE

    induced = ProgramSet.from_json(json.loads(files[PROGRAMS_FILE])) if files.get(PROGRAMS_FILE) else None
    authored = AuthoredProgram.from_files(files)
    if induced is not None or authored is not None:
        show(induced, authored, task=task)
    shown = {PROGRAMS_FILE} if induced is not None else set()
    shown |= {RECORD_FILE} if authored is not None else set()
    for path in sorted(set(files) - shown):
        out.print(Rule(path, align="left", style="dim"))
        lexer = Syntax.guess_lexer(path, files[path])
        out.print(Syntax(files[path], lexer, word_wrap=True, background_color="default"))


@skill_app.command("approve")
def skill_approve(
    ctx: typer.Context,
    task: TaskArg,
    version: VersionOpt = None,
    reviewer: ReviewerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft (default: the newest draft; refused, naming them, when other drafts await review beside it):
    replay starts using it; the one approved before retires."""
    lib = _library(ctx)
    require_task(lib.store, task)
    _done(lib.approve(task, version, by=reviewer or reviewer_default()), "approved", as_json)


@skill_app.command("reject")
def skill_reject(
    ctx: typer.Context,
    task: TaskArg,
    version: VersionOpt = None,
    reviewer: ReviewerOpt = None,
    note: Annotated[str | None, typer.Option(help="why (recorded with the review)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a draft (default: the newest draft)."""
    lib = _library(ctx)
    require_task(lib.store, task)
    _done(lib.reject(task, version, by=reviewer or reviewer_default(), note=note), "rejected", as_json)


@skill_app.command("edit")
def skill_edit(
    ctx: typer.Context,
    task: TaskArg,
    file: Annotated[Path, typer.Option("--file", "-f", exists=True, dir_okay=False, help="the edited SKILL.md")],
    reviewer: ReviewerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Store an edited SKILL.md as the task's next version (a draft, to approve like any other)."""
    lib = _library(ctx)
    require_task(lib.store, task)
    row = lib.edit(task, file.read_text(encoding="utf-8"), by=reviewer or reviewer_default())
    _done(row, "stored as a draft", as_json)


def _done(row: Any, verb: str, as_json: bool) -> None:
    if as_json:
        return emit_json(row_dict(row, exclude=("text", "files")))
    typer.echo(f"skill {row.task_name} v{row.version} {verb} (status: {row.status})")


@skill_app.command("export")
def skill_export(
    ctx: typer.Context,
    dest: Annotated[Path, typer.Argument(help="folder to write <skill-name>/SKILL.md folders into")],
    task: Annotated[str | None, typer.Option(help="only this task's approved skill")] = None,
    force: Annotated[
        bool, typer.Option("--force", help="replace skill folders already in DEST (edits made there are lost)")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write approved skills as Agent Skills folders (drop them into Claude Code's skills folder). A skill folder
    already in DEST is refused unless --force."""
    lib = _library(ctx)
    if task:
        require_task(lib.store, task)
    folders = lib.export(dest, task=task, force=force)
    if as_json:
        return emit_json([str(f) for f in folders])
    if not folders:
        return typer.echo("no approved skills to export")
    for folder in folders:
        typer.echo(f"wrote {folder}")


@skill_app.command("import")
def skill_import(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(exists=True, help="a skill folder, or a folder of them")],
    trust: Annotated[bool, typer.Option("--trust", help="keep `status: approved` from the folders")] = False,
    reviewer: ReviewerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Import skill folders (all or none) for tasks in the store; they arrive as drafts unless --trust."""
    rows = _library(ctx).import_dir(src, by=reviewer or reviewer_default(), trust=trust, known_only=True)
    if as_json:
        return emit_json([row_dict(r, exclude=("text", "files")) for r in rows])
    for row in rows:
        typer.echo(f"imported {row.task_name} v{row.version} ({row.status})")


@students_app.command("list")
def students(ctx: typer.Context, task: OptTaskArg = None, as_json: JsonOpt = False) -> None:
    """List distilled students with their evaluation and state, and automatic distills (running, or how the last
    one ended); with TASK, also the newest student's exact match per output field (worst first)."""
    store = store_of(ctx)
    if task:
        require_task(store, task)
    rows = store.students(task)
    if as_json:
        return emit_json([row_dict(r) for r in rows])
    distills = _distill_lines(store, task)
    if not rows:
        typer.echo("no students yet: distill one with `protege distill TASK`")
        return typer.echo("\n".join(distills)) if distills else None
    from protege.agents.models.answer_profile import kinds_summary
    from protege.distill.prune import is_pruned

    table(
        "students (newest first)",
        [
            "id",
            "task",
            "state",
            "served by",
            "base",
            "retention",
            "with programs",
            "score",
            "eval n",
            "gate",
            "field kinds",
            "created",
        ],
        [
            [
                r.id,
                r.task_name,
                r.state + (" (pruned)" if is_pruned(r) else ""),
                _served(r),
                r.base,
                pct(_metric(r, "retention")),
                _with_programs(r),
                pct(_metric(r, "score", "student_score")),
                _metric(r, "n", "eval_n", "eval_rows"),
                _gate(r),
                kinds_summary(_metric(r, "field_kinds")),
                when(r.created_at),
            ]
            for r in rows
        ],
        right=("retention", "with programs", "score", "eval n"),
        optional=("created", "base", "eval n", "score", "field kinds", "served by"),
        caption="retention = student score / teacher score on held-out "
        "traces; with programs = the same, with the task's field programs "
        "fixing the fields they decide, as the cascade serves it (promotion "
        "and the gate go by it); gate = the confidence floor a student serves behind "
        "and the share of calls it keeps (on eval answers the floor "
        "was not chosen on); field kinds = what the training traces "
        "show of each output field (copied fields are decoded from "
        "the input's text only); promote with `protege promote ID`",
    )
    if task:
        _field_table(rows[0])
    if distills:
        typer.echo("\n".join(distills))


@students_app.command("prune")
def students_prune(
    ctx: typer.Context,
    task: OptTaskArg = None,
    keep: Annotated[int, typer.Option(min=0, help="unpromoted students to keep per task, newest first")] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would be deleted, delete nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="delete (required unless --dry-run)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Delete the weights of old students (all but each task's promoted one and its newest KEEP others; ~0.5 GB
    each): their rows and metrics stay, and a pruned student cannot be promoted again."""
    from protege.distill.prune import prune_students

    if not (yes or dry_run):
        raise UserError("`students prune` deletes files: see what would go with --dry-run, then pass --yes")
    store = store_of(ctx)
    if task:
        require_task(store, task)
    pruned = prune_students(store, config(ctx).project_dir / "students", task=task, keep=keep, dry_run=dry_run)
    if as_json:
        return emit_json(
            [{"id": p.student.id, "task": p.student.task_name, "freed_bytes": p.freed_bytes} for p in pruned]
        )
    if not pruned:
        typer.echo(f"nothing to prune: every task has its promoted student and at most {keep} others")
        return None
    verb = "would delete" if dry_run else "deleted"
    table(
        f"students whose weights {'would be' if dry_run else 'were'} deleted",
        ["id", "task", "state", "created", "size"],
        [
            [p.student.id, p.student.task_name, p.student.state, when(p.student.created_at), _mb(p.freed_bytes)]
            for p in pruned
        ],
        right=("size",),
    )
    typer.echo(f"{verb} {_mb(sum(p.freed_bytes for p in pruned))} of weights; the rows stay in the store")


def _mb(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


def _field_table(row: Any) -> None:
    """Exact match per output field of the task's newest student, worst first: where its misses are."""
    metrics = row.metrics or {}
    fields = metrics.get("field_accuracy") or {}
    if not fields:
        return
    kinds = metrics.get("field_kinds") or {}
    served = (metrics.get("served") or {}).get("field_accuracy")
    extra = ["with programs"] if served else []  # as the cascade serves it, where it was judged so
    table(
        f"student {row.id}: exact match per field (eval split, vs the teacher)",
        ["field", "kind", "exact match", *extra],
        [
            [name, kinds.get(name, "—"), pct(value), *([pct(served.get(name))] if served else [])]
            for name, value in sorted(fields.items(), key=lambda kv: kv[1])
        ],
        right=("exact match", *extra),
        caption=_kinds_caption(metrics.get("kind_accuracy") or {}),
    )


def _kinds_caption(kind_accuracy: dict[str, float]) -> str | None:
    return "per field kind: " + " · ".join(f"{k} {pct(v)}" for k, v in kind_accuracy.items()) if kind_accuracy else None


def _distill_lines(store: Any, task: str | None) -> list[str]:
    """Automatic distills (Policy(auto_distill=True)): the one running, or how the last one ended, per task."""
    from protege.services.redistill import describe_lease, lease_name

    leases = store.leases(lease_name(task) if task else lease_name(""))
    return [describe_lease(r, store.lease_live(r)) for r in leases if not task or r.name == lease_name(task)]


def _served(row: Any) -> str:
    from protege.services.serving import describe

    return describe(row)


def _with_programs(row: Any) -> str:
    served = (row.metrics or {}).get("served")
    return f"{pct(served['retention'])} ({served['fields_fixed_mean']:.1f} fixed)" if served else "—"


def _gate(row: Any) -> str:
    gate = (row.metrics or {}).get("gate")
    return f"≥ {gate['min_confidence']:.3f}, keeps {pct(gate['coverage'])}" if gate else "—"


def _metric(row: Any, *names: str) -> Any:
    metrics = row.metrics or {}
    return next((metrics[n] for n in names if metrics.get(n) is not None), None)


@app.command(rich_help_panel=REVIEW)
def promote(
    ctx: typer.Context, student_id: Annotated[str, typer.Argument(metavar="STUDENT_ID")], as_json: JsonOpt = False
) -> None:
    """Make a student serve its task (the one promoted before becomes a candidate again)."""
    from rich.markup import escape

    from protege.distill.pipeline import promote as promote_student
    from protege.distill.pipeline import refused_because

    store = store_of(ctx)
    row = promote_student(store, find_student_id(store, student_id))
    if as_json:
        return emit_json(row_dict(row))
    typer.echo(f"student {row.id} now serves {row.task_name!r} (processes pick it up within seconds)")
    refused = refused_because(row.metrics)
    if refused:  # a reviewer may overrule the verdict, but should know they are doing it
        console().print(
            f"[yellow]note:[/] distill kept it as a candidate: {escape(refused)}. "
            f"`protege demote {row.task_name}` takes it out of service.",
        )


@app.command(rich_help_panel=REVIEW)
def demote(
    ctx: typer.Context,
    task: TaskArg,
    reason: Annotated[str, typer.Option(help="why (kept in the student's metrics)")] = "demoted by a reviewer",
    as_json: JsonOpt = False,
) -> None:
    """Take a task's promoted student out of service (calls go to replay/teacher again)."""
    from protege.distill.pipeline import demote as demote_student

    store = store_of(ctx)
    require_task(store, task)
    row = demote_student(store, task, reason=reason)
    if as_json:
        return emit_json(row_dict(row))
    typer.echo(f"student {row.id} of {task!r} demoted; calls go to replay/teacher again")
