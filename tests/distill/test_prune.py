"""Pruning old students' weights: the promoted one and the newest `keep` others per task stay; the rest lose their
folders (and only folders under the project's students/), keep their rows, and cannot be promoted again."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from protege.distill.pipeline import promote
from protege.distill.prune import (
    IN_PROGRESS_FILE,
    PRUNED_KEY,
    UNFINISHED,
    prune_students,
    student_files,
    writing_student,
)
from protege.errors import UserError
from protege.store import Store, StudentRow
from protege.store.models import utcnow


@pytest.fixture
def store(tmp_path):
    with Store(f"sqlite:///{tmp_path / 'p.db'}") as s:
        yield s


def _student(store: Store, root: Path, task: str, age_h: int, state: str = "candidate", size: int = 1000) -> StudentRow:
    row = StudentRow(
        task_name=task, base="b", adapter_path="", state=state, created_at=utcnow() - timedelta(hours=age_h)
    )
    adapter = root / task / row.id / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "model.safetensors").write_bytes(b"w" * size)
    row.adapter_path = str(adapter)
    return store.add_student(row)


def test_all_but_the_promoted_and_the_newest_others_lose_their_weights(store, tmp_path):
    root = tmp_path / "students"
    old_promoted = _student(store, root, "orders", 9, state="promoted")
    rows = [_student(store, root, "orders", age) for age in (1, 2, 3, 4)]
    other = _student(store, root, "triage", 5)
    pruned = prune_students(store, root, keep=2)
    assert [p.student.id for p in pruned] == [rows[2].id, rows[3].id]
    assert all(p.freed_bytes == 1000 for p in pruned)
    for row, gone in [(old_promoted, False), (rows[0], False), (rows[1], False), (rows[2], True), (rows[3], True)]:
        assert Path(row.adapter_path).exists() is not gone
        assert bool((store.student(row.id).metrics or {}).get(PRUNED_KEY)) is gone
    assert Path(other.adapter_path).exists()  # triage has one other: within keep
    assert prune_students(store, root, keep=2) == []  # already pruned ones are not counted or touched again
    assert [p.student.id for p in prune_students(store, root, task="triage", keep=0)] == [other.id]


def test_a_dry_run_deletes_nothing_and_a_pruned_student_cannot_serve_again(store, tmp_path):
    root = tmp_path / "students"
    rows = [_student(store, root, "orders", age) for age in (1, 2)]
    assert [p.student.id for p in prune_students(store, root, keep=1, dry_run=True)] == [rows[1].id]
    assert Path(rows[1].adapter_path).exists() and PRUNED_KEY not in (store.student(rows[1].id).metrics or {})
    prune_students(store, root, keep=1)
    with pytest.raises(
        UserError, match=r"weights of student .* pruned .* distill a new one with `protege distill orders`"
    ):
        promote(store, rows[1].id)
    assert promote(store, rows[0].id).state == "promoted"


def test_only_folders_under_the_students_dir_are_deleted(store, tmp_path):
    """A student adopted from elsewhere (its weights outside the project's students/) is never deleted."""
    elsewhere = _student(store, tmp_path / "trained-elsewhere", "orders", 3)
    with pytest.raises(UserError, match=r"keep=-1 is negative"):
        prune_students(store, tmp_path / "students", keep=-1)
    assert prune_students(store, tmp_path / "students", keep=0) == []
    assert Path(elsewhere.adapter_path).exists()


def test_the_ggufs_a_pruned_student_was_served_from_go_with_it_and_it_cannot_be_served_again(store, tmp_path):
    """`students serve ID llama.cpp` exports a GGUF to <project>/served/<id>-<quant>/ (~145 MB): pruning left it
    on disk while reporting the adapter's bytes freed, and a pruned student could still be served."""
    from types import SimpleNamespace

    from protege.services.serving import serve_student

    root = tmp_path / "students"
    rows = [_student(store, root, "orders", age) for age in (1, 2)]
    served = [tmp_path / "served" / f"{rows[1].id}-{q}" for q in ("q8_0", "f16")]
    for folder in served:
        folder.mkdir(parents=True)
        (folder / "student.gguf").write_bytes(b"g" * 500)
    other = tmp_path / "served" / f"{rows[0].id}-q8_0"
    other.mkdir()
    (pruned,) = prune_students(store, root, keep=1)
    assert pruned.freed_bytes == 1000 + 2 * 500 and not any(f.exists() for f in served) and other.exists()
    app = SimpleNamespace(store=store, settings=SimpleNamespace(project_dir=tmp_path))
    with pytest.raises(UserError, match="were pruned; it cannot serve here again"):
        serve_student(app, rows[1].id, "llama.cpp")


def _folder(folder: Path, files: dict[str, int | str]) -> Path:
    """A folder of files: a size in bytes, or a text."""
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"w" * content if isinstance(content, int) else content.encode())
    return folder


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_folders_of_distills_that_never_finished_are_swept_with_their_sizes(store, tmp_path):
    """An interrupted distill left ~1 GB under students/<task>/<id> with no store row, which prune never saw (it
    walked rows only). A dry run lists such folders with their sizes and prune deletes them; a folder whose distill
    still runs (its marker names a live process) and a finished student no row names (adoptable) are left."""
    root, host = tmp_path / "students", socket.gethostname()
    recorded = _student(store, root, "orders", 1)
    before_markers = _folder(root / "orders" / "a1", {"checkpoints/checkpoint-5/optimizer.pt": 700})
    killed = _folder(
        root / "orders" / "b2", {"adapter/model.safetensors": 300, IN_PROGRESS_FILE: f"{host} {_gone_pid()}"}
    )
    running = _folder(root / "triage" / "c3", {"checkpoints/x.pt": 50, IN_PROGRESS_FILE: f"{host} {os.getpid()}"})
    elsewhere = _folder(root / "triage" / "c4", {"checkpoints/x.pt": 50, IN_PROGRESS_FILE: "another-host 1"})
    finished = _folder(root / "triage" / "d5", {"adapter/protege_student.json": 10, "adapter/model.safetensors": 9})

    listed = prune_students(store, root, keep=5, dry_run=True)
    assert {p.student.id: (p.student.task_name, p.freed_bytes, p.unfinished) for p in listed} == {
        "a1": ("orders", 700, True),
        "b2": ("orders", _bytes(killed), True),
    }
    assert {p.student.state for p in listed} == {UNFINISHED} and before_markers.exists() and killed.exists()
    assert prune_students(store, root, task="triage", keep=5) == []
    assert [p.student.id for p in prune_students(store, root, keep=5)] == ["a1", "b2"]
    assert not before_markers.exists() and not killed.exists()
    for kept in (running, elsewhere, finished, Path(recorded.adapter_path)):
        assert kept.exists()
    assert store.student("a1") is None  # nothing recorded for them


def test_a_distill_that_fails_or_is_interrupted_leaves_no_folder_and_one_that_finishes_no_marker(tmp_path):
    folder = tmp_path / "students" / "orders" / "s1"
    with pytest.raises(KeyboardInterrupt), writing_student(folder):
        assert (folder / IN_PROGRESS_FILE).read_text().split() == [socket.gethostname(), str(os.getpid())]
        _folder(folder, {"checkpoints/checkpoint-5/optimizer.pt": 10})
        raise KeyboardInterrupt
    assert not folder.exists()
    with writing_student(folder):
        _folder(folder, {"adapter/model.safetensors": 10})
    assert [p.name for p in folder.iterdir()] == ["adapter"]


def test_a_relative_student_path_is_read_under_the_project_dir_from_any_working_directory(store, tmp_path, monkeypatch):
    """Rows from before paths were stored absolute hold `.protege/students/<task>/<id>/adapter`, relative to where
    distill ran: from another working directory prune found nothing to prune (and serving and export could not
    find the files). New settings make the project dir absolute, so what distill stores now is."""
    from protege.settings import Settings

    project = tmp_path / "app" / ".protege"
    rows = [_student(store, project / "students", "orders", age) for age in (1, 2)]
    for row in rows:
        store.update_student(row.id, adapter_path=f".protege/students/orders/{row.id}/adapter")
    monkeypatch.chdir(tmp_path)
    adapter = student_files(store.student(rows[0].id), project)
    assert adapter == project / "students" / "orders" / rows[0].id / "adapter" and adapter.is_dir()
    assert [p.student.id for p in prune_students(store, project / "students", keep=1, dry_run=True)] == [rows[1].id]
    assert Settings(project_dir=Path(".protege")).project_dir == tmp_path / ".protege"


def test_a_pruned_student_is_served_by_nothing():
    """The students table said "served by torch" for a student whose weights are gone."""
    from types import SimpleNamespace

    from protege.services.serving import describe

    assert describe(SimpleNamespace(metrics={PRUNED_KEY: "2025-01-01T00:00"})) == "—"
    assert describe(SimpleNamespace(metrics={})) == "torch"
