"""Doing work: `run` and `distill` (they need the app: they run the task's code), `dataset build` and
`import-traces`."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from protege.cli.base import JsonOpt, TaskArg, app, app_of, config, store_of
from protege.cli.load import require_task
from protege.cli.output import console, emit_json, note, pct, secs, table, usd, warn
from protege.errors import UserError

WORK = "Run and distill"
dataset_app = typer.Typer(help="Build SFT datasets from a task's traces.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset", rich_help_panel=WORK)


# -- run -------------------------------------------------------------------------------------------------------------


@app.command(rich_help_panel=WORK)
def run(
    ctx: typer.Context,
    task: TaskArg,
    input_: Annotated[
        str, typer.Option("--input", "-i", help="JSON object of the task's parameters, @file.json, or - for stdin")
    ],
    tier: Annotated[str | None, typer.Option(help="start at this tier: program, student, replay or teacher")] = None,
    no_escalate: Annotated[bool, typer.Option("--no-escalate", help="fail instead of trying the next tier")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Call a task through the cascade (needs the app) and print the output and who served it."""
    protege_app = app_of(ctx)
    handle = protege_app.handle(task)
    data = _task_input(read_json_arg(input_, "--input"), handle.spec.params)
    result = protege_app.run(handle, data, tier=tier, escalate=not no_escalate)
    if as_json:
        return emit_json(
            {
                **result.model_dump(mode="json", exclude={"output"}),
                "output": result.output.model_dump(mode="json", by_alias=True),
            }
        )
    from rich.json import JSON

    console().print(JSON(result.output.model_dump_json()))
    hops = " → ".join(f"{a.tier}{'' if a.valid else ' ✗'}" for a in result.attempts)
    note(
        f"served by {result.tier} ({result.model}) · {usd(result.cost_usd)} · {secs(result.latency_s)} · "
        f"run {result.run_id} · attempts: {hops}"
    )


def read_json_arg(value: str, flag: str) -> Any:
    """JSON given inline, as @file, or as - (stdin); a clear UserError when it does not parse."""
    source = "stdin" if value == "-" else value[1:] if value.startswith("@") else None
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise UserError(f"{flag} names file {value[1:]!r}, which does not exist")
        text = path.read_text(encoding="utf-8")
    else:
        text = value
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f" (from {source})" if source else ""
        raise UserError(
            f"{flag} is not valid JSON{where}: {exc.msg} at line {exc.lineno} column {exc.colno}; "
            f"pass a JSON object like '{{\"param\": ...}}' or @file.json"
        ) from exc


def _task_input(data: Any, params: list[str]) -> dict[str, Any]:
    """The parameters dict; for a one-parameter task its bare value is accepted too."""
    if not isinstance(data, dict):
        raise UserError(f"the input must be a JSON object of the task's parameters {params!r}, got {data!r:.80}")
    if len(params) == 1 and params[0] not in data:
        return {params[0]: data}
    return data


# -- dataset build ---------------------------------------------------------------------------------------------------


@dataset_app.command("build")
def dataset_build(
    ctx: typer.Context,
    task: TaskArg,
    redact: Annotated[str | None, typer.Option(help="secrets or pii (default: the task's policy)")] = None,
    eval_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="share of inputs held out")] = 0.2,
    seed: Annotated[int, typer.Option(help="split seed")] = 0,
    out: Annotated[Path | None, typer.Option(help="folder for datasets [<project dir>/datasets]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build train/eval files (TRL and OpenAI JSONL) from a task's validated traces."""
    from protege.distill.dataset import build_dataset

    cfg = config(ctx)
    store, tools, policy = _dataset_context(ctx, task)
    with StageProgress(enabled=not as_json) as progress:
        built = build_dataset(
            store,
            task,
            instructions=require_task(store, task).instructions,
            out_dir=out or cfg.project_dir / "datasets",
            redact=redact or policy.get("redact", "secrets"),
            eval_fraction=eval_fraction,
            seed=seed,
            tools=tools,
            progress=progress.stage,
        )
    if as_json:
        return emit_json(
            {
                "id": built.id,
                "path": str(built.path),
                "counts": built.counts,
                "timings": built.timings,
                "content_hash": built.row.content_hash,
            }
        )
    c = built.counts
    table(f"dataset {built.id[:12]} of {task}", ["stage", "count"], [[k, v] for k, v in c.items()], right=("count",))
    typer.echo(f"train {c.get('train', 0)} rows, eval {c.get('eval', 0)} rows → {built.path}")


def _dataset_context(ctx: typer.Context, task: str) -> tuple[Any, Any, dict]:
    """Store, tool specs and policy: from the app when one is configured, else from the store's task record."""
    if config(ctx).app:
        protege_app = app_of(ctx)
        handle = protege_app.handle(task)
        return protege_app.store, handle.runtime.tools.specs or None, handle.spec.policy.model_dump()
    store = store_of(ctx)
    return store, None, dict(require_task(store, task).policy or {})


class StageProgress:
    """A rich progress display fed by the dataset builder's `(stage, done, total)` calls and the trainer's
    `TrainProgress` reports; silent when disabled (--json)."""

    def __init__(self, *, enabled: bool = True):
        self.enabled = enabled
        self.tasks: dict[str, Any] = {}
        self.bar: Any = None

    def __enter__(self) -> StageProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[extra]}"),
                TimeElapsedColumn(),
                console=_stderr_console(),
                transient=False,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def stage(self, name: str, done: int, total: int | None = None, extra: str = "") -> None:
        if self.bar is None:
            return
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=total, extra=extra)
        self.bar.update(self.tasks[name], completed=done, total=total, extra=extra)

    def __call__(self, *args: Any) -> None:
        """Either shape of report: (stage, done, total) or one TrainProgress-like object."""
        if len(args) == 1 and hasattr(args[0], "total_steps"):
            p = args[0]
            loss = f"loss {p.loss:.4f}" if getattr(p, "loss", None) is not None else ""
            return self.stage("train", p.step, p.total_steps, loss)
        self.stage(*args[:3])


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


# -- distill ---------------------------------------------------------------------------------------------------------


@app.command(rich_help_panel=WORK)
def distill(
    ctx: typer.Context,
    task: TaskArg,
    epochs: Annotated[float | None, typer.Option(min=0.01, help="training epochs (default: measured default)")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="stop after this many optimizer steps")] = None,
    method: Annotated[str | None, typer.Option(help="full (every weight, the default) or lora (adapters)")] = None,
    adapter: Annotated[
        Path | None,
        typer.Option(
            help="don't train: evaluate and record this student, trained by `python -m protege.distill.launch`"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="distill even with fewer validated traces than Policy.min_traces")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Build a dataset, train a student, evaluate it against the teacher, promote it if it passes (needs the app)."""
    options: dict[str, Any] = {"adapter": adapter} if adapter else {}
    if force:
        options["force"] = True
    overrides = {k: v for k, v in {"epochs": epochs, "max_steps": max_steps, "method": method}.items() if v is not None}
    if overrides and adapter:
        flags = " ".join(f"--{k.replace('_', '-')}" for k in overrides)
        raise UserError(
            f"--adapter records a student trained elsewhere, so {flags} (how one is trained here) cannot apply; "
            f"pass --adapter alone, or leave it out to train here"
        )
    if overrides:  # checked before the app is imported: a mistyped option fails at once
        options["config"] = train_config(overrides)
    protege_app = app_of(ctx)
    protege_app.handle(task)
    started = time.perf_counter()
    with StageProgress(enabled=not as_json) as progress, sigterm_interrupts():
        report = protege_app.distill(task, progress=progress, **options)
    if as_json:
        return emit_json(report)
    show_distill_report(report, time.perf_counter() - started)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a `kill`, a service manager stopping it) ends the block as Ctrl-C does, so what the distill wrote
    so far is cleaned up: by default it would end the process with no cleanup at all."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_config(options: dict[str, Any]) -> Any:
    """A TrainConfig from command-line options; a value it refuses is a usage error naming the option and the
    value (pydantic's own report is several lines, with a URL)."""
    from pydantic import ValidationError

    from protege.distill.train import TrainConfig

    try:
        return TrainConfig.model_validate(options)
    except ValidationError as exc:
        problems = "; ".join(_option_problem(e) for e in exc.errors())
        raise UserError(f"{problems}; see `protege distill --help`") from exc


def _option_problem(error: Any) -> str:
    flag = "--" + "-".join(str(part) for part in error["loc"]).replace("_", "-")
    reason = error["msg"].replace("Input should", "it should", 1).removeprefix("Value error, ")
    return f"{flag} {error['input']!r} is not accepted: {reason}"


METRIC_NAMES = {"parse_failure_rate": "invalid answers (unparseable or cut short)"}
"""Metric keys whose name would mislead a reader, nested ones too (the key stays in --json and the store)."""


def _metric_label(name: str) -> str:
    prefix, _, key = name.rpartition(".")
    return (prefix + "." if prefix else "") + METRIC_NAMES.get(key, key)


def show_distill_report(report: Any, wall_s: float) -> None:
    flat = _flat({k: v for k, v in (report.metrics or {}).items() if k != "verdict"})  # the verdict: its own line
    paths = {name: flat.pop(name) for name in ("train.adapter_path", "train.base") if name in flat}
    rows = [[_metric_label(name), _metric_text(name, value)] for name, value in flat.items()]
    table(f"student {report.student_id} of {report.task}", ["metric", "value"], rows, right=("value",))
    for name, path in paths.items():  # long paths would squeeze the table's value column out of view
        console().print(f"{name.removeprefix('train.')}: {path}", soft_wrap=True)
    verdict = "[green]promoted[/]" if report.promoted else "[yellow]kept as a candidate[/]"
    console().print(f"{verdict}: {report.reason}  (dataset {report.dataset_id}, {secs(wall_s)})")


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar metrics, nested ones (e.g. train.*) one level down; lists (per-field details) left to --json."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and not prefix:
            out.update(_flat(value, f"{key}."))
        elif not isinstance(value, (dict, list)) and value is not None:
            out[prefix + key] = value
    return out


def _metric_text(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return str(value)
    if name.endswith("_per_s"):  # a rate: tokens_per_s → "11.7 tokens/s"
        return f"{value:,.4g} {name.rpartition('.')[2].removesuffix('_per_s')}/s"
    if name.endswith("_s"):
        return secs(value)
    if name.endswith("fields_fixed_mean"):
        return f"{value:.2f} a call"
    if isinstance(value, float) and 0 <= value <= 1 and not name.endswith(("loss", "_usd")):
        return pct(value)
    return f"{value:,.4g}" if isinstance(value, float) else f"{value:,}"


# -- import-traces ---------------------------------------------------------------------------------------------------


def _new_answers(store: Any, task: str, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """The rows whose input and answer are new, each once: neither held by the task's imported traces (a file
    imported twice) nor by an earlier row of the file (a line written twice), either of which would count an
    answer twice; and how many rows were left out for each reason."""
    from protege.store.store import answer_key

    known = store.answer_keys(task, "import")
    seen: set[tuple[str, str]] = set()
    fresh, already, repeated = [], 0, 0
    for row in rows:
        key = (row["input_hash"], answer_key(row["output"]))
        if key in known:
            already += 1
        elif key in seen:
            repeated += 1
        else:
            seen.add(key)
            fresh.append(row)
    return fresh, already, repeated


def _recorded_here(store: Any, recorded: dict[str, str]) -> set[str]:
    """The ids of the rows whose call protege recorded in this very store (their spans name its trace): imported,
    the call and its cost would count twice."""
    if not recorded:
        return set()
    from sqlmodel import col, select

    from protege.store.models import TraceRow

    wanted, present = sorted(set(recorded.values())), set()
    with store.engine.connect() as conn:
        for i in range(0, len(wanted), 500):  # within every database's limit on bound parameters
            chunk = wanted[i : i + 500]
            present.update(conn.execute(select(col(TraceRow.id)).where(col(TraceRow.id).in_(chunk))).scalars())
    return {row_id for row_id, trace_id in recorded.items() if trace_id in present}


class ImportFormat(StrEnum):
    openai = "openai"
    otel = "otel"


@app.command("import-traces", rich_help_panel=WORK)
def import_traces(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            help="JSONL of chat-format lines (OpenAI's {\"messages\": [...]} or Anthropic's Messages), or with "
            "--format otel an OTLP JSON export of spans; UTF-8, plain or gzip-compressed"
        ),
    ],
    task: Annotated[str, typer.Option("--task", help="the task the traces belong to")],
    fmt: Annotated[
        ImportFormat,
        typer.Option(
            "--format",
            help="openai: chat logs; otel: OpenTelemetry spans (GenAI conventions or OpenInference, as Phoenix writes)",
        ),
    ] = ImportFormat.openai,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="import the good lines even if some are bad")] = False,
    model: Annotated[
        str | None, typer.Option(help="model name to record (default: each line's \"model\", or 'import')")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Bring existing chat logs or OpenTelemetry spans in as a task's traces (tier "import"), checked one by one."""
    from protege.cli.imports import Contract, without_gc

    started = time.perf_counter()
    store, spec, prices = _import_target(ctx, task)
    contract = Contract.of(task, store.task(task), spec)
    with without_gc():  # many small rows, no cycles: see without_gc
        plan, unit = _plan_import(fmt, file, contract, model=model, prices=prices)
        _refuse_a_bad_file(plan, file, task, skip_bad=skip_bad, as_json=as_json)
        recorded = _recorded_here(store, plan.recorded)
        rows, already, repeated = _new_answers(store, task, [r for r in plan.rows if r["id"] not in recorded])
        imported = store.insert_traces(rows, batch=len(rows)) if rows else 0  # one transaction: all or none
    counts = {"imported": imported, "already_imported": already, "already_recorded": len(recorded)}
    report = _import_report(plan, file, task) | counts | {"duplicates": repeated}
    report |= {"registered": contract.registered, "elapsed_s": time.perf_counter() - started}
    if as_json:
        return emit_json(report)
    _print_import(report, plan, file, unit)


def _plan_import(fmt: ImportFormat, file: Path, contract: Any, *, model: str | None, prices: Any) -> tuple[Any, str]:
    """The file read and checked in its format (nothing written), and what its items are called."""
    if fmt == ImportFormat.otel:
        from protege.telemetry.otel_import import plan_otel_import

        return plan_otel_import(file, contract, model=model, prices=prices), "LLM call(s)"
    from protege.cli.imports import plan_import

    return plan_import(file, contract, model=model, prices=prices), "line(s)"


def _import_report(plan: Any, file: Path, task: str) -> dict[str, Any]:
    """What an import found, as --json gives it (refused or not)."""
    return {
        "file": str(file),
        "task": task,
        "lines": plan.lines,
        "imported": 0,
        "skipped": [{"line": b.line, "error": b.why, "reason": b.reason} for b in plan.bad],
        "left_out": dict(plan.left_out),
        "unpriced": {m: {"lines": u.items, "tokens": u.tokens} for m, u in plan.unpriced.items()},
    }


def _refuse_a_bad_file(plan: Any, file: Path, task: str, *, skip_bad: bool, as_json: bool) -> None:
    """Stops the import when a line is bad (without --skip-bad) or nothing is left to import; with --json the
    report, its list of bad lines included, still goes to stdout."""
    from protege.cli.base import EXIT_USAGE
    from protege.cli.imports import describe_bad
    from protege.cli.output import error

    if plan.bad and not skip_bad and plan.rows:
        message = (
            f"{describe_bad(plan.bad, file)} — nothing was imported; fix those lines, or pass "
            f"--skip-bad to import the {len(plan.rows):,} good one(s)"
        )
    elif not plan.rows:
        why = [describe_bad(plan.bad, file)] if plan.bad else []
        why += [f"{n:,} {reason}" for reason, n in plan.left_out.most_common()]
        message = f"{str(file)!r} has no lines to import" + (f" ({'; '.join(why)})" if why else "")
    else:
        return
    if not as_json:
        raise UserError(message)
    emit_json({"error": message, "type": "UserError", "exit_code": EXIT_USAGE} | _import_report(plan, file, task))
    error(message)
    raise typer.Exit(EXIT_USAGE)


def _print_import(report: dict[str, Any], plan: Any, file: Path, unit: str) -> None:
    """The import's outcome for people: what was skipped or left out and why, then what was imported."""
    from protege.cli.imports import bad_groups

    if plan.bad:
        groups = "\n".join(_indented(text) for group in bad_groups(plan.bad) for text in group)
        warn(f"partial import: skipped {len(plan.bad):,} bad {unit} of {str(file)!r}:\n{groups}")
    if plan.left_out:
        reasons = "; ".join(f"{n:,} {reason}" for reason, n in plan.left_out.most_common())
        warn(f"left out {plan.left_out.total():,} {unit}: {reasons} (only teacher answers are imported)")
    if report["already_recorded"]:
        warn(
            f"{report['already_recorded']:,} {unit} are protege's own, already in this store as traces (their "
            f"spans name them): not imported again"
        )
    if report["already_imported"]:
        warn(f"{report['already_imported']:,} {unit} already imported (the same input and answer): not imported again")
    if report["duplicates"]:
        warn(
            f"{report['duplicates']:,} {unit} repeat an earlier one of the file (the same input and answer): "
            f"imported once"
        )
    if plan.unpriced:
        warn(_unpriced_text(plan.unpriced, unit))
    typer.echo(
        f"imported {report['imported']:,} of {plan.lines:,} {unit} as traces of {report['task']!r} (tier import) "
        f"in {secs(report['elapsed_s'])}"
    )
    if not report["registered"]:
        warn(
            f"task {report['task']!r} is not registered: inputs and outputs were only checked to be JSON; register "
            f"it with @app.task before distilling"
        )


def _unpriced_text(unpriced: dict[str, Any], unit: str) -> str:
    """Which models' usage went in at $0, and how to price it."""
    from protege.cli.imports import NO_MODEL

    items = sum(u.items for u in unpriced.values())
    tokens = sum(u.tokens for u in unpriced.values())
    models = "; ".join(
        f"{'no model named' if name == NO_MODEL else repr(name)}: {u.items:,} × {u.tokens:,} tokens"
        for name, u in sorted(unpriced.items(), key=lambda kv: -kv[1].tokens)
    )
    return (
        f"{items:,} {unit} with usage name a model the price table lacks, so their {tokens:,} tokens count as $0 "
        f"({models}); to price them, name a priced model with --model (e.g. --model openai:gpt-4o) or add the "
        f"model's price to the app's table (PROTEGE_PRICES, with --app)"
    )


def _indented(text: str) -> str:
    """One item of a list under a warning, wrapped to the terminal with a hanging indent."""
    import shutil
    import textwrap

    width = max(shutil.get_terminal_size().columns, 60)
    return textwrap.fill(text, width=width, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)


def _import_target(ctx: typer.Context, task: str) -> tuple[Any, Any, Any]:
    """The store to import into, the app's TaskSpec for `task` (None without an app or when it lacks the task), and
    the app's price table (None without an app: the packaged one prices the usage)."""
    if config(ctx).app:
        protege_app = app_of(ctx)
        handle = protege_app.tasks.get(task)
        return protege_app.store, handle.spec if handle is not None else None, protege_app.prices
    return store_of(ctx, create=True), None, None
