"""The re-distillation benchmark's app (bench/redistill.py), in a module of its own so that the auto-distill worker
process builds the same app: the benchmark sets PROTEGE_APP=bench.redistill_app:app and names the app's folder
(its SQLite store, datasets, students) in PROTEGE_BENCH_REDISTILL_DIR; the worker then reads `app` here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench.drift_stream import Email, Order, teacher

FOLDER_ENV = "PROTEGE_BENCH_REDISTILL_DIR"
APP_REF = "bench.redistill_app:app"
TASK = "extract"
TEACHER_PRICE = "anthropic:claude-opus-4-5"
MIN_TRACES = 100
"""Validated traces that start the automatic distill: `min_traces` for a task that never had a student, and
`auto_distill_traces` (new ones since the newest student) after a demotion. About 130 training rows once the
distill's eval split is held out: one epoch on one thread takes minutes."""


def policy() -> Any:
    """The drift benchmark's policy (5% shadows, demote below 90% agreement, early signal on) with auto_distill.
    Field programs are off, as there: they would serve this synthetic task (its answer is copied from the input)
    and no student would be needed."""
    from protege import Policy

    return Policy(
        program=False,
        shadow_rate=0.05,
        demote_below=0.9,
        shadow_window=50,
        auto_distill=True,
        min_traces=MIN_TRACES,
        auto_distill_traces=MIN_TRACES,
    )


def make_app(folder: Path) -> Any:
    """The app over `folder`: the order-extraction task of bench/drift_stream.py, its teacher an oracle priced as
    Opus (so calls have a teacher-only cost to compare with)."""
    from protege import Protege
    from protege.agents import FunctionModel

    oracle = FunctionModel(teacher, name="function:teacher", price_as=TEACHER_PRICE)
    app = Protege(db=f"sqlite:///{folder / 'redistill.db'}", project_dir=folder, teacher=oracle, replay=oracle, seed=0)

    @app.task(policy=policy())
    def extract(email: Email) -> Order:
        """The item and quantity ordered."""

    return app


_app: Any = None


def __getattr__(name: str) -> Any:
    """`app`, built on first access from PROTEGE_BENCH_REDISTILL_DIR (the worker's `--app bench.redistill_app:app`)."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        folder = os.environ.get(FOLDER_ENV)
        if not folder:
            raise RuntimeError(f"set {FOLDER_ENV} to the benchmark app's folder")
        _app = make_app(Path(folder))
    return _app
