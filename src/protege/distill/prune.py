"""Old students' weights off the disk. Each distill writes a new student (a fully fine-tuned 135M student is
~0.5 GB) and keeps every earlier one, so a task that re-distills on drift fills the disk. `prune_students`
deletes the weights of the students that do not serve — all but the promoted one and the newest `keep` others
per task — and keeps their rows, with their metrics and the time of the pruning, so the history stays readable.
A pruned student cannot be promoted again (`pipeline.promote` refuses it): distill a new one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from protege.errors import UserError
from protege.store import Store, StudentRow
from protege.store.models import utcnow

PRUNED_KEY = "pruned_at"
SERVED_DIR = "served"  # beside students/ in the project dir: `<id>-<quant>/` per exported GGUF


@dataclass(frozen=True)
class Pruned:
    """One student whose weights were deleted, and how many bytes that freed."""

    student: StudentRow
    freed_bytes: int


def prune_students(
    store: Store, students_dir: Path, *, task: str | None = None, keep: int = 2, dry_run: bool = False
) -> list[Pruned]:
    """Delete the weights of every student of `task` (or of every task) but its promoted one and its newest
    `keep` others. Only folders under `students_dir` (the project's students/) are ever deleted. `dry_run`: say
    which, delete nothing."""
    if keep < 0:
        raise UserError(f"keep={keep!r} is negative; keep 0 or more unpromoted students per task")
    root = students_dir.resolve()
    pruned: list[Pruned] = []
    seen: dict[str, int] = {}  # unpromoted students met so far, per task
    for row in store.students(task):  # newest first
        if row.state == "promoted" or is_pruned(row):
            continue
        seen[row.task_name] = seen.get(row.task_name, 0) + 1
        if seen[row.task_name] <= keep:
            continue
        folder = Path(row.adapter_path).resolve().parent  # students/<task>/<id>, holding adapter/ and exports
        if folder != root / row.task_name / row.id:
            continue  # not where distill puts this student (another project dir, an odd path): not ours to delete
        served = sorted((root.parent / SERVED_DIR).glob(f"{row.id}-*"))  # the GGUFs `students serve` exported
        freed = _size(folder) + sum(_size(f) for f in served)
        if dry_run:
            pruned.append(Pruned(row, freed))
            continue
        for exported in served:
            shutil.rmtree(exported)
        shutil.rmtree(folder)  # an error propagates: the row stays unmarked, so a student that still has its weights
        marked = store.update_student(row.id, metrics={**(row.metrics or {}), PRUNED_KEY: utcnow().isoformat()})
        pruned.append(Pruned(marked, freed))
    return pruned


def is_pruned(row: StudentRow) -> bool:
    return bool((row.metrics or {}).get(PRUNED_KEY))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
