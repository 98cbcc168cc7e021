"""What every benchmark shares: the run order, the run context, the result shape, timing statistics, the
machine description.

A benchmark module exposes `TITLE` and `run(ctx) -> Result`. It raises `NotRun` when something it needs is not
here (a piece not landed yet, an unreachable server); any other exception is reported as a failure. Figures are
ratios against a baseline measured in the same run, and latencies are quoted as medians (p50) and p99, because
the machines these run on are shared and noisy.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCRATCH = RESULTS / "tmp"  # git-ignored: stores, datasets, adapters made while benchmarking

BENCHMARKS = (
    "overhead",
    "store",
    "dataset",
    "programs",
    "quality",
    "stream",
    "training",
    "inference",
    "student_programs",
    "engines",
    "tui_bench",
    "sandbox",
    "drift",
    "redistill",
    "authored",
)
"""In run order: later ones reuse what earlier ones built (the quality benchmark's students).
`tui_bench` (the review console at 100k traces) is another engineer's module, run here like the rest."""


class NotRun(Exception):
    """The benchmark cannot run here (yet): the message says why."""


@dataclass
class Context:
    """One `python -m bench` run: its mode, inputs and where to put things."""

    quick: bool = False
    data: Path | None = None
    workloads: tuple[str, ...] = ()  # --workloads: only these quality workloads (all when empty)
    reuse: bool = False  # --reuse: the students of the newest earlier run, not new ones
    scratch: Path = SCRATCH
    cache_dir: Path = ROOT / ".protege" / "cache"  # converted base models, shared with `protege demo`
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr, flush=True)
    shared: dict[str, Any] = field(default_factory=dict)  # artifacts one benchmark hands the next (students)

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def folder(self, *parts: str) -> Path:
        path = self.scratch.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Headline:
    """One headline figure: a value, the baseline it is measured against, and the target it must meet."""

    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Result:
    """What a benchmark produced; `data` holds the raw numbers the report's plot reads."""

    headlines: list[Headline] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


# -- statistics ------------------------------------------------------------------------------------------------------


def newest_with_student(ctx: Context, runs: Path, workload: str, task: str, open_app: Callable[[Path], Any]):
    """--reuse: the newest earlier run under `runs` (one folder per run, named by its start in ns) whose store holds
    a student of `task`: (its app, opened by `open_app(folder)`, its newest student row, the folder)."""
    for db in sorted(runs.glob("*/protege.db"), key=lambda db: db.parent.name, reverse=True):
        app = open_app(db.parent)
        students = app.store.students(task)
        if students:
            return app, students[0], db.parent
        app.close()
    raise NotRun(f"--reuse: no earlier run of {workload} trained a student under {ctx.scratch}; run without it")


@contextmanager
def ungated(app: Any, task: str) -> Iterator[None]:
    """The student's own answers: a confidence gate it was promoted behind is lifted while measuring (a refused
    answer would count as invalid; the stream benchmark measures a gate at work)."""
    with floored(app, task, 0.0):
        yield


@contextmanager
def floored(app: Any, task: str, floor: float | None) -> Iterator[None]:
    """The task's student served behind `floor` (its answers under it escalate) while measuring; None: as stored."""
    spec = app.handle(task).spec
    policy = spec.policy
    if floor is not None:
        spec.policy = policy.model_copy(update={"min_confidence": floor})
    try:
        yield
    finally:
        spec.policy = policy


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean in milliseconds, and how many samples."""
    return {
        "n": len(seconds),
        "p50_ms": percentile(seconds, 50) * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
        "mean_ms": statistics.fmean(seconds) * 1e3,
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats to `digits` significant figures, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 10**digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- shared inputs ---------------------------------------------------------------------------------------------------


def ticket(i: int) -> dict[str, Any]:
    """The i-th support ticket of the overhead benchmarks (`overhead`, `overhead_otel`, `overhead_profile`)."""
    return {"subject": f"ticket {i}: the export button does nothing", "body": f"Since update {i % 7} it fails."}


# -- the machine -----------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and library versions (read without importing torch)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "sqlalchemy": _version("sqlalchemy"),
        "langgraph": _version("langgraph"),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
