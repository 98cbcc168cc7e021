"""Dataset files: OpenAI/TRL row formats, atomic folders, manifests that catch tampering, and export."""

from __future__ import annotations

import json

import pytest

from protege.agents.models.base import Message, ToolCall, ToolSpec
from protege.demo.workload import extract_order, load_examples
from protege.distill import export
from protege.distill.dataset import build_dataset
from protege.errors import UserError
from protege.store import Store
from protege.tasks import TaskSpec, input_hash


def test_openai_row_uses_native_tool_calls_and_function_tools():
    """Tool calls carry JSON-text arguments and ids; tool results keep their call id; the final tool is hidden."""
    messages = [
        Message(role="system", content="S"),
        Message(role="user", content="U"),
        Message(role="assistant", tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": "é"})]),
        Message(role="tool", content="R", tool_call_id="c1"),
        Message(role="assistant", content="{}"),
    ]
    tools = [ToolSpec(name="lookup", description="d"), ToolSpec(name="final_answer")]
    row = export.openai_row(messages, tools)
    assert row["messages"][2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "é"}'}}],
    }
    assert row["messages"][3] == {"role": "tool", "tool_call_id": "c1", "content": "R"}
    assert row["tools"] == [
        {
            "type": "function",
            "function": {"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    assert "tools" not in export.openai_row(messages[:2])


def test_atomic_dir_renames_on_success_and_refuses_to_overwrite(tmp_path):
    """The folder appears complete under its name, and an existing dataset folder is never overwritten."""
    final = tmp_path / "ds" / "one"
    with export.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not final.exists()
    assert (final / "a.txt").read_text() == "x" and not list(final.parent.glob(".*.tmp"))
    with pytest.raises(UserError, match="already exists"), export.atomic_dir(final):
        pass


def test_two_writers_of_one_new_folder_each_write_their_own(tmp_path):
    """Both used `.<name>.tmp`: the second deleted the first's files mid-write and both crashed (FileNotFoundError,
    a torn safetensors). Each writes its own; the first to finish places the folder, the other is told."""
    final = tmp_path / "out"
    with pytest.raises(UserError, match="written by another writer while this one ran"):
        with export.atomic_dir(final, what="output folder") as first:
            (first / "who").write_text("first")
            with export.atomic_dir(final, what="output folder") as second:
                (second / "who").write_text("second")
            assert (first / "who").read_text() == "first"  # untouched by the other writer
    assert (final / "who").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # the loser's stage is gone


def test_jsonl_writer_counts_hashes_and_copies(tmp_path):
    """Lines, bytes and sha256 agree with the file; copy_from appends another writer's lines so far."""
    a = export.JsonlWriter(tmp_path / "a.jsonl")
    a.write('{"x":1}')
    a.write(b'{"x":2}')
    b = export.JsonlWriter(tmp_path / "b.jsonl")
    b.copy_from(a)
    b.write('{"x":3}')
    a.close()
    b.close()
    assert (tmp_path / "b.jsonl").read_text() == '{"x":1}\n{"x":2}\n{"x":3}\n' and b.lines == 3
    import hashlib

    assert a.sha256 == hashlib.sha256((tmp_path / "a.jsonl").read_bytes()).hexdigest()


@pytest.fixture
def built(sqlite_url, tmp_path):
    store = Store(sqlite_url)
    rows = [
        {
            "task_name": "extract_order",
            "tier": "teacher",
            "valid": True,
            "input": ex["input"],
            "input_hash": input_hash(ex["input"]),
            "output": ex["output"],
        }
        for ex in load_examples()[:40]
    ]
    store.insert_traces(rows)
    result = build_dataset(
        store, "extract_order", instructions=TaskSpec(extract_order).instructions, out_dir=tmp_path / "datasets"
    )
    yield result
    store.close()


def test_export_openai_and_trl(built, tmp_path):
    """Both formats land as train.jsonl + eval.jsonl; TRL eval rows lose the evaluation-only fields."""
    paths = export.export_dataset(built.row, tmp_path / "oai", fmt="openai")
    assert [p.name for p in paths] == ["train.jsonl", "eval.jsonl"]
    assert paths[0].read_bytes() == built.openai_path.read_bytes()
    assert paths[1].read_bytes() == (built.path / "openai_eval.jsonl").read_bytes()
    trl = export.export_dataset(built.path, tmp_path / "trl", fmt="trl")
    assert trl[0].read_bytes() == built.train_path.read_bytes()
    evals = [json.loads(line) for line in trl[1].read_text().splitlines()]
    originals = [json.loads(line) for line in built.eval_path.read_text().splitlines()]
    assert evals == [{"messages": r["messages"]} for r in originals] and evals


def test_export_refuses_tampered_or_incomplete_datasets(built, tmp_path):
    """A changed file fails its manifest hash; a folder without manifest is not a dataset; formats are checked."""
    with pytest.raises(UserError, match="'csv'"):
        export.export_dataset(built.row, tmp_path / "x", fmt="csv")  # type: ignore[arg-type]
    with open(built.train_path, "a", encoding="utf-8") as f:
        f.write('{"messages": []}\n')
    with pytest.raises(UserError, match="does not match its manifest"):
        export.export_dataset(built.row, tmp_path / "x")
    with pytest.raises(UserError, match="not a complete protege dataset"):
        export.export_dataset(tmp_path, tmp_path / "y")


def test_re_export_switches_the_pair_at_once_and_cleans_up(built, tmp_path):
    """`dest` is a symlink swapped to a complete staged folder; the previous stage is removed after the swap."""
    dest = tmp_path / "out" / "current"
    export.export_dataset(built.row, dest, fmt="trl")
    first_target = dest.resolve()
    export.export_dataset(built.row, dest, fmt="openai")
    assert dest.is_symlink() and dest.resolve() != first_target and not first_target.exists()
    assert (dest / "train.jsonl").read_bytes() == built.openai_path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["current", dest.resolve().name])


def test_a_killed_exports_leftovers_are_swept_once_stale(built, tmp_path):
    """Hidden stages, links and old folders a killed export left beside `dest` are removed by the next export once
    an hour old; a young one (an export running now) and unrelated hidden files stay."""
    import os
    import time

    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".current.0123456789ab", out / ".current.0123456789ab.old", out / ".current.aaaaaaaaaaaa.link"]
    young, unrelated = out / ".current.bbbbbbbbbbbb", out / ".current.notes"
    for folder in (stale[0], stale[1], young, unrelated):
        folder.mkdir()
        (folder / "train.jsonl").write_text("{}\n")
    os.symlink(stale[0].name, stale[2])
    hour_ago = time.time() - export.STALE_AFTER_S - 60
    for path in stale:
        os.utime(path, (hour_ago, hour_ago), follow_symlinks=False)
    export.export_dataset(built.row, out / "current", fmt="trl")
    assert not any(os.path.lexists(path) for path in stale)
    assert young.is_dir() and unrelated.is_dir() and (out / "current" / "train.jsonl").is_file()


def test_export_into_an_existing_real_folder_replaces_files(built, tmp_path):
    """A folder the user made keeps its other files; the two dataset files are replaced in it."""
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    (dest / "train.jsonl").write_text("old\n")
    export.export_dataset(built.row, dest, fmt="trl")
    assert not dest.is_symlink() and (dest / "notes.txt").read_text() == "keep me"
    assert (dest / "train.jsonl").read_bytes() == built.train_path.read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["eval.jsonl", "notes.txt", "train.jsonl"]
