"""Skill folders on disk, as Claude Code and other Agent Skills clients load them: <name>/SKILL.md plus files.

Reading refuses symlinks, special files, binary files and anything deeper than one folder, so an imported skill
cannot smuggle in a path outside its folder. Writing is atomic per folder: the new folder is built beside the old
one and swapped in with renames, so a reader sees the old skill or the new one, never half of each.

Files are stored as text, so their executable bit (a `scripts/run.sh` an agent runs) is recorded in the skill's
metadata `protege-executable` on import, taken from the files' modes, and set again on export.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path

from protege.errors import UserError
from protege.skills.skill import SKILL_FILE, Skill, check_file_path


def skill_folders(src: Path) -> list[Path]:
    """The skill folders under `src`: `src` itself if it holds a SKILL.md, else its (non-hidden) subfolders."""
    if not src.is_dir():
        raise UserError(f"skill import source {str(src)!r} is not a folder")
    if (src / SKILL_FILE).exists() or (src / SKILL_FILE).is_symlink() or _misnamed_skill_file(src):
        return [src]  # a misnamed SKILL.md is read, to be refused with its right name
    folders = []
    for entry in sorted(os.scandir(src), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_symlink():
            raise UserError(f"refusing symlink {entry.path!r}: copy the skill folder in instead of linking it")
        if entry.is_dir():
            folders.append(Path(entry.path))
    if not folders:
        raise UserError(f"no skill folders (<name>/{SKILL_FILE}) under {str(src)!r}")
    return folders


def read_skill_folder(folder: Path) -> Skill:
    """Read and validate one skill folder; its name must equal the skill's name."""
    if folder.is_symlink():
        raise UserError(f"refusing symlink {str(folder)!r}: copy the skill folder in instead of linking it")
    misnamed = _misnamed_skill_file(folder)
    if misnamed is not None:
        raise UserError(
            f"skill folder {str(folder)!r} has {misnamed!r}; the Agent Skills spec requires the file name "
            f"{SKILL_FILE!r} exactly (clients on case-sensitive systems do not find another): rename it"
        )
    texts, executable = _read_tree(folder)
    if SKILL_FILE not in texts:
        raise UserError(f"skill folder {str(folder)!r} has no {SKILL_FILE}")
    body = texts.pop(SKILL_FILE)
    try:
        skill = Skill.parse(body, files=texts, folder=folder.name)
    except UserError as exc:
        raise UserError(f"{str(folder / SKILL_FILE)!r}: {exc}") from exc
    return skill.with_executables(executable - {SKILL_FILE})  # the modes on disk, whatever the metadata said


def make_export_dir(dest: Path) -> None:
    """Create the folder skill folders are exported into, or say plainly why it cannot be one."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"export destination {str(dest)!r} is a file, not a folder; name a folder to export into")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file on the way (FileExistsError), a read-only or virtual file system (/proc)
        raise UserError(
            f"cannot create the export folder {str(dest)!r} ({exc.strerror or exc}); name a folder you can write to"
        ) from exc
    if not os.access(dest, os.W_OK | os.X_OK):
        raise UserError(f"export folder {str(dest)!r} is not writable; name a folder you can write to")


def check_export_target(dest: Path, name: str, *, replace: bool) -> Path:
    """dest/<name>, refused when it is not a plain folder, or when it exists and `replace` is off (it may hold a
    reviewer's edits of an earlier export, which an export would silently lose)."""
    final = dest / name
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise UserError(f"{str(final)!r} exists and is not a skill folder; move it away before exporting")
    if final.exists() and not replace:
        raise UserError(
            f"skill folder {str(final)!r} already exists (edits made there would be lost); export into another "
            "folder, or replace it with --force (force=True)"
        )
    return final


def write_skill_folder(dest: Path, skill: Skill, *, replace: bool = False) -> Path:
    """Write `skill` as dest/<name>/ atomically; an older folder of the same name is replaced only if `replace`."""
    skill.validate()
    make_export_dir(dest)
    final = check_export_target(dest, skill.name, replace=replace)
    tmp = Path(tempfile.mkdtemp(prefix=f".{skill.name}.", suffix=".tmp", dir=dest))
    try:
        os.chmod(tmp, 0o755)
        _write_text(tmp, SKILL_FILE, skill.render())
        executable = skill.executables
        for path, text in sorted(skill.files.items()):
            _write_text(tmp, path, text, executable=path in executable)
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _misnamed_skill_file(folder: Path) -> str | None:
    """The name of a file in `folder` that is SKILL.md but for its case ('skill.md'), when there is no SKILL.md."""
    if not folder.is_dir():
        return None
    names = [e.name for e in os.scandir(folder)]  # by listing: a case-insensitive file system finds any case
    if SKILL_FILE in names:
        return None
    return next((n for n in names if n.upper() == SKILL_FILE.upper()), None)


def _read_tree(folder: Path) -> tuple[dict[str, str], set[str]]:
    """The folder's files (relative path -> text), and the paths of those that are executable."""
    texts: dict[str, str] = {}
    executable: set[str] = set()
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue  # .DS_Store and friends: never part of a skill, and never read
        _refuse_odd(entry)
        if entry.is_dir(follow_symlinks=False):
            for sub in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if sub.name.startswith("."):
                    continue
                _refuse_odd(sub)
                if sub.is_dir(follow_symlinks=False):
                    raise UserError(f"{sub.path!r} is nested too deep: skill files go at most one folder down")
                texts[f"{entry.name}/{sub.name}"] = _read_text(sub.path)
                if _is_executable(sub):
                    executable.add(f"{entry.name}/{sub.name}")
        else:
            texts[entry.name] = _read_text(entry.path)
            if _is_executable(entry):
                executable.add(entry.name)
    return texts, executable


def _is_executable(entry: os.DirEntry[str]) -> bool:
    return bool(entry.stat(follow_symlinks=False).st_mode & stat.S_IXUSR)


def _refuse_odd(entry: os.DirEntry[str]) -> None:
    if entry.is_symlink():
        raise UserError(f"refusing symlink {entry.path!r} in a skill folder: replace it with the file itself")
    mode = entry.stat(follow_symlinks=False).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise UserError(f"refusing {entry.path!r}: skill folders hold plain files only")


def _read_text(path: str) -> str:
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"skill file {path!r} is not UTF-8 text; protege stores text files only") from exc


def _write_text(root: Path, rel: str, text: str, *, executable: bool = False) -> None:
    if rel != SKILL_FILE:
        check_file_path(rel)
    target = root / rel
    if not target.resolve().is_relative_to(root.resolve()):
        raise UserError(f"skill file path {rel!r} escapes its folder")
    target.parent.mkdir(exist_ok=True)
    with open(target, "w", encoding="utf-8", newline="") as fh:  # newline="": write the text byte for byte
        fh.write(text)
    if executable:  # x wherever r is set (0o644 -> 0o755): the umask's choice of readers, now also runners
        mode = target.stat().st_mode
        os.chmod(target, mode | (mode & 0o444) >> 2)


def _swap_in(tmp: Path, final: Path) -> None:
    if not final.exists():
        os.rename(tmp, final)
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["check_export_target", "make_export_dir", "read_skill_folder", "skill_folders", "write_skill_folder"]
