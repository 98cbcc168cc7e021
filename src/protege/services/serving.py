"""Where a student is served: protege's torch engine, llama.cpp on its exported GGUF, or any OpenAI-compatible
server (vLLM, llama.cpp's server, Ollama). Recorded on the student row (`metrics["serving"]`), so every process
and the TUI see it; the student tier builds the student's model from it.

    app.serve_student(student_id, "openai:my-student", base_url="http://127.0.0.1:8000/v1", timeout_s=10)
    app.serve_student(student_id, "llama.cpp")      # exports a GGUF under the project dir once, then loads it
    app.serve_student(student_id, "torch")          # back to the default engine
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from protege.distill.prune import SERVED_DIR, in_project, is_pruned, student_files
from protege.errors import UserError

if TYPE_CHECKING:
    from protege.agents.models.base import Model
    from protege.settings import Settings
    from protege.store import Store, StudentRow

SERVING_KEY = "serving"
ENGINES = ("torch", "llama.cpp")


class StudentModels(Protocol):
    """The tiers' cache of loaded student models."""

    def forget_student(self, row: StudentRow) -> None: ...


class ServingHost(Protocol):
    """What recording where a student is served uses of the app (the facade; this module never imports it)."""

    settings: Settings
    store: Store

    @property
    def tiers(self) -> StudentModels: ...
    def export_student(
        self, student_id: str, out: str | Path, *, format: str = "gguf", quant: str | None = None
    ) -> Path: ...


def serving_of(row: Any) -> dict[str, Any]:
    """The student's serving record; `{"host": "torch"}` when none was set."""
    return dict((row.metrics or {}).get(SERVING_KEY) or {"host": "torch"})


def describe(row: Any) -> str:
    """Where the student is served, in a few words for tables: 'torch', 'llama.cpp q8_0', 'openai:x @ url', or
    '—' where its weights were pruned (nothing here can serve it)."""
    serving = serving_of(row)
    host = serving["host"]
    if host.startswith("openai:"):
        return f"{host} @ {serving.get('base_url', '?')}"
    if is_pruned(row):
        return "—"
    return f"{host} {serving['quant']}" if serving.get("quant") else host


def serve_student(
    app: ServingHost,
    student_id: str,
    host: str,
    *,
    base_url: str | None = None,
    quant: str = "q8_0",
    response_format: str = "json_schema",
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Record where `student_id` is served (see the module docstring) and return the record. `timeout_s`: how long
    a call waits for an OpenAI-compatible server before it escalates (default `hosted.DEFAULT_TIMEOUT_S`)."""
    row = app.store.student(student_id)
    if row is None:
        raise UserError(f"no student {student_id!r}; list students with `protege students`")
    if host in ("torch", "llama.cpp") and is_pruned(row):  # a remote server holds its own copy of the weights
        raise UserError(f"the weights of student {row.id!r} were pruned; it cannot serve here again: distill a new one")
    record: dict[str, Any] = {"host": host, "since": datetime.now(UTC).isoformat(timespec="seconds")}
    if timeout_s is not None and not host.startswith("openai:"):
        raise UserError(f"timeout_s={timeout_s!r} applies to an 'openai:<name>' host (a server), not {host!r}")
    if host.startswith("openai:"):
        from protege.agents.models.hosted import DEFAULT_TIMEOUT_S, HostedStudent

        timeout_s = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
        # built once to check the URL, format and timeout before anything is recorded
        HostedStudent(host, student_id=row.id, base_url=base_url, response_format=response_format, timeout=timeout_s)
        record.update(base_url=base_url, response_format=response_format, timeout_s=timeout_s)
    elif host == "llama.cpp":
        _require_llama_cpp()
        record.update(quant=quant, gguf=str(_exported_gguf(app, row, quant)))
    elif host != "torch":
        raise UserError(
            f"serving host {host!r} is not 'torch', 'llama.cpp' or 'openai:<served model name>' (with base_url=...)"
        )
    elif base_url:
        raise UserError(f"base_url={base_url!r} applies to an 'openai:<name>' host, not {host!r}")
    app.store.update_student(row.id, metrics={**(row.metrics or {}), SERVING_KEY: record})
    app.tiers.forget_student(row)
    return record


def _require_llama_cpp() -> None:
    """Refused up front: recorded without it, every call of the task would fail to load the student."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError(
            "serving a student with llama.cpp needs llama-cpp-python, which is not installed: pip install "
            "'protege[llama]' (it builds llama.cpp with cmake and a C++ compiler), or serve it with 'torch'"
        )


def _exported_gguf(app: ServingHost, row: Any, quant: str) -> Path:
    """The student's GGUF under the project dir, exported on first use. Replicas serving it at once each export
    it; the first to finish places the folder and the others use it."""
    folder = Path(app.settings.project_dir) / SERVED_DIR / f"{row.id}-{quant}"
    gguf = folder / f"student-{quant}.gguf"
    if not gguf.is_file():
        try:
            app.export_student(row.id, folder, format="gguf", quant=quant)
        except UserError:
            if not gguf.is_file():  # not another replica's finished export: a real failure
                raise
    return gguf


def student_model(
    row: Any, base_dir: Callable[[str], Path], *, project_dir: Path, copy_constraint: bool = True
) -> Model:
    """The model that answers as this student, per its serving record (`copy_constraint`: the task's policy;
    `base_dir`: a student base as a local checkpoint dir, `Protege.base_dir`; `project_dir`: where the student's
    files are, when its row holds them relative, as rows did before paths were stored absolute)."""
    serving = serving_of(row)
    host, name = serving["host"], f"local:{row.id}"
    if host.startswith("openai:"):
        from protege.agents.models.hosted import HostedStudent

        return HostedStudent(
            host,
            student_id=row.id,
            base_url=serving.get("base_url"),
            response_format=serving.get("response_format", "json_schema"),
            **({"timeout": serving["timeout_s"]} if serving.get("timeout_s") else {}),  # records before it: default
        )
    from protege.agents.models.local import LocalModel

    files = student_files(row, project_dir)
    if host == "llama.cpp":
        from protege.agents.models.answer_profile import read_profile
        from protege.agents.models.llama_cpp import LlamaCppModel

        gguf = in_project(serving["gguf"], project_dir, (SERVED_DIR, f"{row.id}-{serving.get('quant')}"))
        return LlamaCppModel(gguf, name=name, copy_constraint=copy_constraint, profile=read_profile(files))
    return LocalModel(base_dir(row.base), adapter=files, name=name, copy_constraint=copy_constraint)
