"""Serving students: `protege students export ID` and `protege students serve ID HOST`.

Neither runs task code, so neither needs `--app`: without one they open the store and project dir directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from protege.cli.base import JsonOpt, app_of, config
from protege.cli.load import find_student_id
from protege.cli.output import emit_json, note
from protege.cli.review import students_app
from protege.errors import UserError

StudentArg = Annotated[str, typer.Argument(metavar="STUDENT_ID", help="a student id, or a unique prefix of one")]


def _app(ctx: typer.Context) -> Any:
    """The user's app when one is configured, else a bare one on the configured store and project dir."""
    conf = config(ctx)
    if conf.app:
        return app_of(ctx)
    from protege.app import Protege

    bare = Protege(db=conf.db_url, project_dir=conf.project_dir)
    ctx.call_on_close(bare.close)
    return bare


@students_app.command("export")
def students_export(
    ctx: typer.Context,
    student_id: StudentArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="new folder to write (must not exist)")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="hf (merged checkpoint) or gguf (+ Ollama Modelfile)")
    ] = "gguf",
    quant: Annotated[
        str | None,
        typer.Option(help="gguf: q8_0 (default), f16, f32 or q4_k_m (needs the llama extra); hf: f16 (half size)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Export a student to serve it elsewhere: llama.cpp, Ollama, vLLM (see README, Serving a student)."""
    from protege.distill.student_export import QUANTIZATION_KEY, SERVED_NAME_KEY

    protege_app = _app(ctx)
    sid = find_student_id(protege_app.store, student_id)
    folder = protege_app.export_student(sid, out, format=fmt, quant=quant)
    files = sorted(p.name for p in folder.iterdir())
    if as_json:
        return emit_json({"student_id": sid, "out": str(folder), "files": files})
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file()) / 1e6
    typer.echo(f"exported student {sid} to {folder} ({size:,.1f} MB): {', '.join(files)}")
    manifest = _manifest(folder)
    quantized = (manifest.get(QUANTIZATION_KEY) or {}).get("summary")
    if quantized:
        note(quantized)
    if fmt == "gguf":
        name = manifest[SERVED_NAME_KEY]
        note(
            f"Ollama: cd {folder} && ollama create {name} -f Modelfile, then "
            f"protege students serve {sid[:8]} openai:{name} --base-url http://127.0.0.1:11434/v1"
        )


def _manifest(folder: Path) -> dict[str, Any]:
    """The export's serving manifest (its served name; what llama.cpp's quantizer did, where it made the GGUF)."""
    import json

    from protege.distill.student_export import SERVING_FILE

    return json.loads((folder / SERVING_FILE).read_text(encoding="utf-8"))


@students_app.command("serve")
def students_serve(
    ctx: typer.Context,
    student_id: StudentArg,
    host: Annotated[str, typer.Argument(help="torch, llama.cpp, or openai:<served model name> with --base-url")],
    base_url: Annotated[
        str | None, typer.Option(help="the OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    ] = None,
    quant: Annotated[str, typer.Option(help="llama.cpp: the GGUF's weights, q8_0, f16, f32 or q4_k_m")] = "q8_0",
    response_format: Annotated[
        str, typer.Option(help="json_schema (vLLM, llama-server, Ollama) or json_object (llama-cpp-python's server)")
    ] = "json_schema",
    timeout: Annotated[
        float | None,
        typer.Option(help="openai:<name>: seconds a call waits for the server before it escalates (default 10)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Choose where a student's calls are answered: protege's torch engine, llama.cpp, or a server you run."""
    from protege.services.serving import describe

    _check_base_url(host, base_url)
    protege_app = _app(ctx)
    sid = find_student_id(protege_app.store, student_id)
    record = protege_app.serve_student(
        sid, host, base_url=base_url, quant=quant, response_format=response_format, timeout_s=timeout
    )
    if as_json:
        return emit_json({"student_id": sid, **record})
    typer.echo(
        f"student {sid} is served by {describe(protege_app.store.student(sid))} "
        f"(running processes pick it up within seconds)"
    )


def _check_base_url(host: str, base_url: str | None) -> None:
    """--base-url goes with an openai:<name> host and no other: said with the option's name (the library's own
    message speaks of `base_url=`, its keyword)."""
    hosted = host.startswith("openai:")
    if hosted and not (base_url or "").startswith(("http://", "https://")):
        got = "none was given" if base_url is None else f"got {base_url!r}"
        raise UserError(
            f"host {host!r} needs --base-url, the OpenAI-compatible server's URL (e.g. --base-url "
            f"http://127.0.0.1:8000/v1); {got}"
        )
    if base_url is not None and not hosted:
        raise UserError(f"--base-url {base_url!r} applies to an openai:<name> host, not {host!r}; leave it out")
