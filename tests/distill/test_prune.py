"""Pruning old students' weights: the promoted one and the newest `keep` others per task stay; the rest lose their
folders (and only folders under the project's students/), keep their rows, and cannot be promoted again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from protege.distill.pipeline import promote
from protege.distill.prune import PRUNED_KEY, prune_students
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
