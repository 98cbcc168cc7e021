"""Old students' weights off the disk. Each distill writes a new student (a fully fine-tuned 135M student is
~0.5 GB) and keeps every earlier one, so a task that re-distills on drift fills the disk. `prune_students`
deletes the weights of the students that do not serve — all but the promoted one and the newest `keep` others
per task — and keeps their rows, with their metrics and the time of the pruning, so the history stays readable.
A pruned student cannot be promoted again (`pipeline.promote` refuses it): distill a new one.

It also sweeps the folders of distills that never finished (interrupted or killed while training or evaluating:
~1 GB of weights and checkpoints, and no store row). A distill marks its folder while it writes it
(`writing_student`), so a folder whose distill still runs, here or in a background process, is left alone.

Student rows written before paths were stored absolute hold their folder relative to the directory that distill
ran in, which is not recorded: `student_files` reads such a path under the project dir (where distill writes)
and falls back to the working directory only when the folder is not there.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protege.errors import UserError
from protege.store import Store, StudentRow
from protege.store.models import utcnow

PRUNED_KEY = "pruned_at"
STUDENTS_DIR = "students"  # in the project dir: `<task>/<student id>/` per distill
SERVED_DIR = "served"  # beside students/ in the project dir: `<id>-<quant>/` per exported GGUF
IN_PROGRESS_FILE = ".distilling"  # in a student's folder while distill writes it: "<host> <pid>"
UNFINISHED = "unfinished distill"  # how a swept folder's made-up row names its state (it has no row)
_FINISHED_MARK = ("adapter", "protege_student.json")  # what training writes last (train.ADAPTER_DIR, METADATA_FILE)


@dataclass(frozen=True)
class Pruned:
    """One student whose weights were deleted, and how many bytes that freed. `unfinished`: the folder of a
    distill that never finished; it has no row, so `student` is made up from the folder (id, task, time)."""

    student: StudentRow
    freed_bytes: int
    unfinished: bool = False


def prune_students(
    store: Store, students_dir: Path, *, task: str | None = None, keep: int = 2, dry_run: bool = False
) -> list[Pruned]:
    """Delete the weights of every student of `task` (or of every task) but its promoted one and its newest
    `keep` others, and the folders of distills that never finished. Only folders under `students_dir` (the
    project's students/) are ever deleted. `dry_run`: say which, delete nothing."""
    if keep < 0:
        raise UserError(f"keep={keep!r} is negative; keep 0 or more unpromoted students per task")
    root = students_dir.resolve()
    return [*_old_students(store, root, task, keep, dry_run), *_unfinished(store, root, task, dry_run)]


def sweep_unfinished(store: Store, students_dir: Path, task: str) -> list[Pruned]:
    """Delete the folders of the task's earlier distills that never finished (their process gone: killed mid-run,
    an auto-distill worker included), as a new distill of the task starts: each was up to ~1 GB nothing uses."""
    return list(_unfinished(store, students_dir.resolve(), task, dry_run=False))


def _old_students(store: Store, root: Path, task: str | None, keep: int, dry_run: bool) -> Iterator[Pruned]:
    seen: dict[str, int] = {}  # unpromoted students met so far, per task
    for row in store.students(task):  # newest first
        if row.state == "promoted" or is_pruned(row):
            continue
        seen[row.task_name] = seen.get(row.task_name, 0) + 1
        if seen[row.task_name] <= keep:
            continue
        folder = student_files(row, root.parent).resolve().parent  # students/<task>/<id>: adapter/ and exports
        if folder != root / row.task_name / row.id:
            continue  # not where distill puts this student (another project dir, an odd path): not ours to delete
        served = sorted((root.parent / SERVED_DIR).glob(f"{row.id}-*"))  # the GGUFs `students serve` exported
        freed = _size(folder) + sum(_size(f) for f in served)
        if dry_run:
            yield Pruned(row, freed)
            continue
        for exported in served:
            shutil.rmtree(exported)
        shutil.rmtree(folder)  # an error propagates: the row stays unmarked, so a student that still has its weights
        marked = store.update_student(row.id, metrics={**(row.metrics or {}), PRUNED_KEY: utcnow().isoformat()})
        yield Pruned(marked, freed)


def _unfinished(store: Store, root: Path, task: str | None, dry_run: bool) -> Iterator[Pruned]:
    """The folders under students/<task>/ that no student row names and no running distill writes."""
    recorded = {row.id for row in store.students(task)}
    task_dirs = [root / task] if task else sorted(root.iterdir()) if root.is_dir() else []
    for task_dir in task_dirs:
        folders = sorted(task_dir.iterdir()) if task_dir.is_dir() else []
        for folder in folders:
            if folder.name.startswith(".") or folder.name in recorded or not _abandoned(folder):
                continue
            freed = _size(folder)
            made = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
            row = StudentRow(
                id=folder.name, task_name=task_dir.name, base="", adapter_path="", state=UNFINISHED, created_at=made
            )
            if not dry_run:
                shutil.rmtree(folder)
            yield Pruned(row, freed, unfinished=True)


def _abandoned(folder: Path) -> bool:
    """A folder a distill started and will not finish: its marker names a process that is gone, or (distills
    before the marker) training never finished in it. An unrecorded finished student without a marker may be
    another store's sharing this project dir, or adoptable (`protege distill --adapter`): it is left."""
    if not folder.is_dir():
        return False
    marker = folder / IN_PROGRESS_FILE
    if marker.is_file():
        return not _running(marker.read_text(encoding="utf-8"))
    return not folder.joinpath(*_FINISHED_MARK).is_file()


def _running(marker: str) -> bool:
    """Whether the process a marker names still runs (one on another host is assumed to: it cannot be asked)."""
    host, _, pid = marker.strip().rpartition(" ")
    if host != socket.gethostname():
        return True
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


@contextmanager
def writing_student(folder: Path) -> Iterator[Path]:
    """Mark `folder` as being written by this process while the block runs (so `prune_students` leaves it); if
    the block fails or is interrupted (Ctrl-C, SIGTERM turned into an exception), delete the folder: a student
    without its row is ~1 GB nothing can use."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / IN_PROGRESS_FILE
    marker.write_text(f"{socket.gethostname()} {os.getpid()}\n", encoding="utf-8")
    try:
        yield folder
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    marker.unlink(missing_ok=True)


def student_files(row: Any, project_dir: str | Path) -> Path:
    """The folder a student row's weights are in (its adapter dir), absolute. An old row's relative path is read
    under `project_dir` (see the module docstring)."""
    return in_project(row.adapter_path, project_dir, (STUDENTS_DIR, row.task_name, row.id))


def in_project(stored: str | Path, project_dir: str | Path, anchor: tuple[str, ...]) -> Path:
    """A stored path, absolute: as is when it is; a relative one that runs through `anchor` (e.g. students/<task>/
    <id>) re-rooted at `project_dir` from there, unless only the working directory holds it."""
    path = Path(stored).expanduser()
    if path.is_absolute():
        return path
    parts, n = path.parts, len(anchor)
    starts = [i for i in range(len(parts) - n + 1) if parts[i : i + n] == anchor]
    if starts:
        moved = Path(project_dir, *parts[starts[-1] :]).absolute()
        if moved.exists() or not path.exists():
            return moved
    return path.absolute()


def is_pruned(row: StudentRow) -> bool:
    return bool((row.metrics or {}).get(PRUNED_KEY))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
