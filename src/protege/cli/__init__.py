"""The `protege` command (DESIGN §9): typer app, rich output, `--json` on every listing.

The commands live in small modules by what they do — core (read the store), review (skills, students), programs,
serve (export and serve students), work (run, dataset, distill, import), start (init, demo) — and all add themselves
to the one `app` of cli.base. `main` is the `protege` console script (and `python -m protege`).
"""

from __future__ import annotations

# importing registers the commands, in this order (it is the order of the help panels)
from protege.cli import start, core, review, programs, serve, work  # noqa: F401  # isort: skip
from protege.cli.base import app

__all__ = ["app", "main"]


def main() -> None:
    """Entry point of the `protege` script."""
    quiet_model_libraries()
    app(prog_name="protege")


def quiet_model_libraries() -> None:
    """The CLI draws its own progress bars: keep transformers' and the hub's bars, advice and deprecation
    warnings out of the terminal (set the variables yourself to see them)."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # the GGUF conversion draws tqdm bars of its own
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|trl|peft)\b")
