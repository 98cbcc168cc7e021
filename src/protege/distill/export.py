"""Dataset files: chat rows in TRL's and OpenAI's fine-tuning formats, JSONL written atomically, and export.

A built dataset is a folder (see `dataset.build_dataset`):
    train.jsonl, eval.jsonl           TRL conversational rows {"messages": [...]}; eval rows also carry "input",
                                      "output" (the teacher's), "reference" (or null), "trace_id", "input_hash"
    openai.jsonl, openai_eval.jsonl   OpenAI fine-tuning rows {"messages": [...], "tools": [...]?}
    manifest.json                     written last: counts, params, per-file sha256, the content hash
The folder appears under its final name only once complete (written in a temporary sibling, then renamed).

Merged-weights export (base + LoRA adapter) belongs with training (train.py), not here.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from protege.agents.models.base import FINAL_TOOL, Message, ToolSpec
from protege.errors import UserError

TRAIN_FILE, EVAL_FILE = "train.jsonl", "eval.jsonl"
OPENAI_FILE, OPENAI_EVAL_FILE = "openai.jsonl", "openai_eval.jsonl"
MANIFEST_FILE = "manifest.json"
DATA_FILES = (TRAIN_FILE, EVAL_FILE, OPENAI_FILE, OPENAI_EVAL_FILE)
EVAL_ONLY_KEYS = ("input", "output", "reference", "trace_id", "input_hash")
STALE_AFTER_S = 3600  # a hidden export stage this old is a killed export's leftover, not one running now


# -- formats ---------------------------------------------------------------------------------------------------------


def openai_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in OpenAI's chat format: native tool calls (arguments as JSON text) and tool results."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "assistant" and m.tool_calls:
            calls = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
                }
                for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": m.content or None, "tool_calls": calls})
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.content})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def openai_tools(tools: list[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in tools
        if t.name != FINAL_TOOL
    ]


def openai_row(messages: list[Message], tools: list[ToolSpec] | None = None) -> dict[str, Any]:
    """One OpenAI fine-tuning example; "tools" only when the transcript uses tools."""
    row: dict[str, Any] = {"messages": openai_messages(messages)}
    if tools:
        row["tools"] = openai_tools(tools)
    return row


def dumps(row: Any) -> str:
    """One JSONL line (no newline): compact separators keep files small, unicode kept as is."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


# -- writing ---------------------------------------------------------------------------------------------------------


class JsonlWriter:
    """Append lines to a JSONL file, counting them and hashing the bytes written."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = 0
        self._sha = hashlib.sha256()
        self._file = open(path, "wb")  # closed in close()

    def write(self, line: str | bytes) -> None:
        """Write one line (without its newline); pass bytes to write the same line to several files cheaply."""
        data = line if isinstance(line, bytes) else (line + "\n").encode("utf-8")
        if isinstance(line, bytes):
            data += b"\n"
        self._file.write(data)
        self._sha.update(data)
        self.lines += 1

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def copy_from(self, other: JsonlWriter) -> None:
        """Append everything `other` has written so far (used when two files turn out to differ only later)."""
        other._file.flush()
        with open(other.path, "rb") as src:
            for block in iter(lambda: src.read(1 << 20), b""):
                self._file.write(block)
                self._sha.update(block)
        self.lines += other.lines

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def content_hash(file_hashes: dict[str, str]) -> str:
    """One hash of a dataset's data files (by name and content), independent of where it lives."""
    blob = "\n".join(f"{name}\0{file_hashes[name]}" for name in sorted(file_hashes))
    return hashlib.sha256(blob.encode()).hexdigest()


@contextmanager
def atomic_dir(final: Path, *, what: str = "dataset folder", advice: str = "build into a new folder") -> Iterator[Path]:
    """Yield a hidden temporary sibling of `final`, this writer's own; on success rename it to `final` (atomic on
    one file system), on any error remove it. A crash mid-write leaves at most a `.<name>.<hex>.tmp` folder (swept
    once STALE_AFTER_S old), never `final`. Two writers of the same new folder each write their own (a shared
    name had each delete the other's files mid-write, and both failed); the first to finish places it and the
    other gets a UserError saying so."""
    if final.exists():
        raise UserError(f"{what} {str(final)!r} already exists; {advice}")
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_stages(final)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    try:
        yield tmp
        _place(tmp, final, what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _place(tmp: Path, final: Path, what: str) -> None:
    """Rename the finished `tmp` to `final`, unless another writer placed `final` first."""
    taken = final.exists()  # checked first: a rename onto an empty folder would replace it
    if not taken:
        try:
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            taken = True
    if taken:
        raise UserError(f"{what} {str(final)!r} was written by another writer while this one ran; it is kept as is")
    _fsync_dir(final.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on some platforms; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / MANIFEST_FILE
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())


# -- reading and export ----------------------------------------------------------------------------------------------


def load_manifest(folder: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """A dataset folder's manifest; with `verify`, every data file's sha256 is checked against it."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise UserError(
            f"{str(folder)!r} is not a complete protege dataset (no {MANIFEST_FILE}); rebuild it "
            f"with `protege dataset build`"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if verify:
        for name, meta in manifest["files"].items():
            if _file_sha256(folder / name) != meta["sha256"]:
                raise UserError(
                    f"dataset file {str(folder / name)!r} does not match its manifest (changed or "
                    f"truncated); rebuild the dataset"
                )
    return manifest


def _file_sha256(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def export_dataset(dataset_row: Any, dest: str | Path, fmt: Literal["openai", "trl"] = "openai") -> list[Path]:
    """Copy a built dataset (a DatasetRow, or its folder) to `dest` as `train.jsonl` + `eval.jsonl` in the
    format asked for: "openai" (fine-tuning API rows) or "trl" (conversational rows, eval rows without the
    evaluation-only fields). The source is verified against its manifest first. Returns the written paths.

    The pair switches atomically: both files are written into a hidden sibling folder, and `dest` is a symlink
    swapped to it in one rename, so a crash leaves `dest` showing the old pair or the new one, never a mix. If
    `dest` is a real folder (one you made), its next state (your other files hard-linked in, the new pair) is
    built in a hidden sibling and the two folders are swapped in one step (see `_replace_real_folder`).
    """
    if fmt not in ("openai", "trl"):
        raise UserError(f"export format {fmt!r} is not 'openai' or 'trl'")
    folder = Path(getattr(dataset_row, "path", dataset_row))
    load_manifest(folder)
    dest = Path(dest)
    sources = {"openai": (OPENAI_FILE, OPENAI_EVAL_FILE), "trl": (TRAIN_FILE, EVAL_FILE)}[fmt]
    _sweep_stale_stages(dest)
    if dest.is_dir() and not dest.is_symlink():
        _replace_real_folder(folder, sources, dest)
        return [dest / TRAIN_FILE, dest / EVAL_FILE]
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = _new_stage(dest)
    _copy_pair(folder, sources, stage)
    _fsync_dir(stage)
    link = dest.parent / f"{stage.name}.link"
    try:
        os.symlink(stage.name, link, target_is_directory=True)
    except OSError:  # no symlinks here: the staged folder becomes `dest` itself (nothing was there to mix with)
        os.rename(stage, dest)
        _fsync_dir(dest.parent)
        return [dest / TRAIN_FILE, dest / EVAL_FILE]
    previous = os.readlink(dest) if dest.is_symlink() else None
    os.replace(link, dest)  # the one atomic switch
    _fsync_dir(dest.parent)
    if previous and Path(previous).name.startswith(f".{dest.name}.") and not Path(previous).is_absolute():
        shutil.rmtree(dest.parent / previous, ignore_errors=True)
    return [dest / TRAIN_FILE, dest / EVAL_FILE]


def _sweep_stale_stages(dest: Path) -> None:
    """Remove what a writer killed mid-way left beside `dest` (hidden stages, links, old folders) once it is
    STALE_AFTER_S old: younger ones may belong to an export running now; `dest`'s own target is kept."""
    if not dest.parent.is_dir():
        return
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.[0-9a-f]{{12}}(\.link|\.old|\.tmp)?")
    current = os.readlink(dest) if dest.is_symlink() else None
    cutoff = time.time() - STALE_AFTER_S
    with os.scandir(dest.parent) as entries:
        for entry in entries:
            if not pattern.fullmatch(entry.name) or entry.name == current:
                continue
            if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    os.unlink(entry.path)


def _new_stage(dest: Path) -> Path:
    stage = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}"
    stage.mkdir()
    return stage


def _replace_real_folder(folder: Path, sources: tuple[str, str], dest: Path) -> None:
    """Export into a folder the user made: a hidden sibling gets the folder's other entries (hard-linked, so
    nothing is copied) and the new pair, then the two folders swap in one step. A crash leaves `dest` with the
    old pair or the new one; the old folder is removed only once the new one is in place."""
    if _holds_working_dir(dest):
        raise UserError(
            f"cannot export into {str(dest)!r}: it holds the working directory, and the export swaps "
            f"the folder; export into a folder of its own (e.g. {str(dest / 'dataset')!r})"
        )
    stage = _new_stage(dest)
    try:
        _carry_entries(dest, stage)
        _copy_pair(folder, sources, stage)
        shutil.copystat(dest, stage)
        _fsync_dir(stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    if _exchange(stage, dest):
        old = stage
    else:  # no atomic exchange on this platform: a crash between the renames leaves `dest` absent, the old whole
        old = stage.with_name(f"{stage.name}.old")
        os.rename(dest, old)
        os.rename(stage, dest)
    _fsync_dir(dest.parent)
    with os.scandir(old) as entries:  # anything the user added while we staged is moved over, not deleted
        for entry in entries:
            if entry.name not in (TRAIN_FILE, EVAL_FILE) and not os.path.lexists(dest / entry.name):
                os.rename(entry.path, dest / entry.name)
    shutil.rmtree(old, ignore_errors=True)


def _holds_working_dir(dest: Path) -> bool:
    try:
        return Path.cwd().resolve().is_relative_to(dest.resolve())
    except OSError:  # the working directory is gone: it cannot be inside `dest`
        return False


def _carry_entries(src: Path, target: Path) -> None:
    """Hard-link (copy where links fail) every entry of `src` but the pair into `target`; symlinks stay links."""
    with os.scandir(src) as entries:
        for entry in entries:
            if entry.name in (TRAIN_FILE, EVAL_FILE):
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.copytree(entry.path, target / entry.name, symlinks=True, copy_function=_link_or_copy)
            else:
                _link_or_copy(entry.path, target / entry.name)


def _link_or_copy(src: str, dst: str | Path) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # another file system, or links not allowed: a plain copy
        shutil.copy2(src, dst, follow_symlinks=False)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 with RENAME_EXCHANGE); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # libc older than glibc 2.28, or not glibc
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the kernel or file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _copy_pair(folder: Path, sources: tuple[str, str], target: Path) -> None:
    for src, name in zip(sources, (TRAIN_FILE, EVAL_FILE)):
        if src == EVAL_FILE:
            _write_stripped(folder / src, target / name)
        else:
            shutil.copyfile(folder / src, target / name)


def _write_stripped(src: Path, dest: Path) -> None:
    with open(src, encoding="utf-8") as fin, open(dest, "w", encoding="utf-8", newline="\n") as fout:
        for line in fin:
            row = json.loads(line)
            fout.write(dumps({k: v for k, v in row.items() if k not in EVAL_ONLY_KEYS}) + "\n")


__all__ = [
    "DATA_FILES",
    "EVAL_FILE",
    "JsonlWriter",
    "MANIFEST_FILE",
    "OPENAI_EVAL_FILE",
    "OPENAI_FILE",
    "TRAIN_FILE",
    "atomic_dir",
    "content_hash",
    "dumps",
    "export_dataset",
    "load_manifest",
    "openai_messages",
    "openai_row",
    "openai_tools",
    "write_manifest",
]
