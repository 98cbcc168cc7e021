"""Exporting approved skills as Agent Skills folders and importing folders back, safely and all-or-nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from protege.errors import UserError
from protege.skills import Skill, SkillLibrary
from protege.skills.skill import ALLOWED_KEYS
from protege.store import Store


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), hidden leftovers included."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def approved(lib, make_skill):
    """Two tasks with approved skills (one at v3, with extra files) and one draft-only task."""
    files = {
        "examples/one.md": "# Example\r\nCRLF kept\r\n",
        "scripts/check.py": "print('ok')\n",
        "reference.md": "Ünïcode réference\n",
    }
    for body in ("# v1\n", "# v2\n", "# Extract order\n\nProcedure: read, then answer.\n"):
        lib.add(
            "extract_order",
            make_skill(body=body, files=files, license="MIT"),
            kind="authored",
            author_model="anthropic:claude-opus-4-5",
            source_trace_ids=["t1", "t2"],
        )
    lib.approve("extract_order", 3, by="ann")
    lib.add("triage", make_skill("triage"), kind="exemplar")
    lib.approve("triage", by="ann")
    lib.add("draft_only", make_skill("draft-only"), kind="authored")
    return lib


def test_export_writes_loadable_folders_of_approved_skills(approved, tmp_path):
    """Only approved skills are exported, as <name>/SKILL.md with files, frontmatter per the spec."""
    dest = tmp_path / "skills"
    folders = approved.export(dest)
    assert sorted(p.name for p in folders) == ["extract-order", "triage"]
    files = tree(dest)
    assert set(files) == {
        "extract-order/SKILL.md",
        "extract-order/examples/one.md",
        "extract-order/scripts/check.py",
        "extract-order/reference.md",
        "triage/SKILL.md",
    }
    assert files["extract-order/examples/one.md"] == b"# Example\r\nCRLF kept\r\n"
    text = files["extract-order/SKILL.md"].decode()
    front = yaml.safe_load(text.split("---\n")[1])
    assert set(front) <= set(ALLOWED_KEYS) and front["name"] == "extract-order"
    assert front["metadata"]["protege-version"] == "3" and front["metadata"]["protege-status"] == "approved"
    assert front["metadata"]["task"] == "extract_order"
    assert text.endswith("---\n\n# Extract order\n\nProcedure: read, then answer.\n")


def test_export_import_export_is_byte_for_byte_identical(approved, tmp_path):
    """A trusted import into a fresh store keeps versions and states, so re-exporting gives the same bytes."""
    first, second = tmp_path / "a", tmp_path / "b"
    approved.export(first)
    other = SkillLibrary(Store(f"sqlite:///{tmp_path}/other.db"))
    rows = other.import_dir(first, by="ops", trust=True)
    assert sorted((r.task_name, r.version, r.status, r.kind) for r in rows) == [
        ("extract_order", 3, "approved", "imported"),
        ("triage", 1, "approved", "imported"),
    ]
    assert rows[0].reviewed_by == "ops" and rows[0].source_trace_ids == []  # ids listed in metadata, none here
    other.export(second)
    assert tree(first) == tree(second)


def test_import_is_untrusted_by_default(approved, tmp_path):
    """Without trust=True imports arrive as drafts (a skill steers a model); approving then exports the same."""
    first, second = tmp_path / "a", tmp_path / "b"
    approved.export(first, task="extract_order")
    other = SkillLibrary(Store(f"sqlite:///{tmp_path}/other.db"))
    [row] = other.import_dir(first / "extract-order", by="ops")
    assert (row.status, row.version, row.reviewed_by) == ("draft", 3, None)
    assert "imported by ops" in row.review_note
    assert other.approved("extract_order") is None
    other.approve("extract_order", by="ann")
    other.export(second)
    assert tree(first) == tree(second)


def test_reimporting_what_is_there_adds_nothing(approved, tmp_path, store):
    """Importing a store's own export returns the existing versions instead of copies."""
    approved.export(tmp_path / "a")
    before = len(store.skills())
    rows = approved.import_dir(tmp_path / "a", by="ops", trust=True)
    assert len(store.skills()) == before
    assert sorted((r.task_name, r.version) for r in rows) == [("extract_order", 3), ("triage", 1)]


def test_older_version_numbers_get_the_next_version(approved, tmp_path):
    """An import whose version is not newer than the task's newest gets the next number, and retires on trust."""
    approved.export(tmp_path / "a", task="extract_order")
    path = tmp_path / "a" / "extract-order" / "SKILL.md"
    path.write_text(path.read_text().replace("Procedure: read", "Procedure: read twice"))
    [row] = approved.import_dir(tmp_path / "a", by="ops", trust=True)
    assert (row.version, row.status) == (4, "approved")
    assert approved.get("extract_order", 3).status == "retired"


def test_reexport_is_refused_unless_forced_and_then_replaces_the_folder_whole(approved, tmp_path, store):
    """A second export into the same folder silently replaced a reviewer's edits there: it is refused, naming the
    folder, and writes nothing. With force it swaps the folder in: stale files go, no temporary folders stay."""
    dest = tmp_path / "out"
    approved.export(dest)
    (dest / "triage" / "stale.md").write_text("old")
    before = tree(dest)
    with pytest.raises(UserError, match=r"skill folder '.*/out/(triage|extract-order)' already exists.*--force"):
        approved.export(dest)
    assert tree(dest) == before
    approved.export(dest, force=True)
    assert "triage/stale.md" not in tree(dest)
    assert sorted(os.listdir(dest)) == ["extract-order", "triage"]


@pytest.mark.parametrize("where", ["a file", "under a file", "/proc"])
def test_export_into_a_place_that_cannot_be_a_folder_is_a_clear_error(approved, tmp_path, where):
    """A file as the destination raised a bare FileExistsError, /proc/x a FileNotFoundError."""
    afile = tmp_path / "afile"
    afile.write_text("mine")
    dest = {"a file": afile, "under a file": afile / "skills", "/proc": Path("/proc/protege-x")}[where]
    with pytest.raises(UserError, match=f"{str(dest)!r}.*name a folder"):
        approved.export(dest)
    assert afile.read_text() == "mine"


def test_export_of_a_task_without_approved_skill_is_refused(approved, tmp_path):
    """Exporting one task needs an approved skill."""
    with pytest.raises(UserError, match="'draft_only' has no approved skill"):
        approved.export(tmp_path / "x", task="draft_only")


def test_export_refuses_tampered_file_paths(approved, tmp_path, store):
    """A stored file path that escapes the folder (edited in the database) is refused; nothing lands outside."""
    row = approved.approved("triage")
    store.update_skill(row.id, files={"../../escaped.md": "x"})
    with pytest.raises(UserError, match="'../../escaped.md'"):
        approved.export(tmp_path / "out" / "skills", task="triage")
    assert not (tmp_path / "escaped.md").exists() and not (tmp_path / "out" / "escaped.md").exists()


def write_folder(root: Path, name: str, text: str | None = None, files: dict[str, str] | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "SKILL.md").write_text(text or Skill(name=name, description="Does it.", body="Steps.").render())
    for rel, content in (files or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(content)
    return folder


def _refused(lib, store, src: Path, match: str) -> None:
    before = len(store.skills())
    with pytest.raises(UserError, match=match):
        lib.import_dir(src, by="ops")
    assert len(store.skills()) == before, "a refused import must store nothing"


def test_import_refuses_symlinks(lib, store, tmp_path):
    """Symlinked files and symlinked skill folders are refused, even when they point at valid skills."""
    src = tmp_path / "src"
    good = write_folder(tmp_path / "elsewhere", "good-skill")
    write_folder(src, "fine-skill")
    os.symlink(tmp_path / "secret.txt", src / "fine-skill" / "notes.md")
    (tmp_path / "secret.txt").write_text("secret")
    _refused(lib, store, src, "refusing symlink .*notes.md")
    os.remove(src / "fine-skill" / "notes.md")
    os.symlink(good, src / "good-skill")
    _refused(lib, store, src, "refusing symlink .*good-skill")


def test_import_refuses_escapes_and_bad_folders(lib, store, tmp_path):
    """Too-deep files, binary files, name/folder mismatches and spec breaks are each refused, storing nothing."""
    cases = {
        "deep": ({"examples/more/x.md": "x"}, None, "nested too deep"),
        "binary": ({"logo.png": None}, None, "not UTF-8"),
        "mismatch": ({}, Skill(name="another-name", description="d").render(), "must equal the skill's name"),
        "badkey": ({}, "---\nname: badkey\ndescription: d\nauthor: me\n---\n", "'author' is not allowed"),
    }
    for name, (files, text, match) in cases.items():
        src = tmp_path / name
        write_folder(src, "ok-skill")  # a valid sibling: all or nothing means it is not stored either
        folder = write_folder(src, name, text, {k: v for k, v in files.items() if v is not None})
        if name == "binary":
            (folder / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
        _refused(lib, store, src, match)


def test_import_needs_skill_folders(lib, store, tmp_path):
    """An empty source or a subfolder without SKILL.md is refused."""
    (tmp_path / "empty").mkdir()
    _refused(lib, store, tmp_path / "empty", "no skill folders")
    (tmp_path / "src" / "nothing-here").mkdir(parents=True)
    _refused(lib, store, tmp_path / "src", "has no SKILL.md")


def test_import_skips_hidden_entries_and_maps_names_to_tasks(lib, tmp_path):
    """.DS_Store-style files are ignored; a skill without metadata.task maps its name to a task name."""
    src = tmp_path / "src"
    folder = write_folder(src, "pdf-tools", files={"examples/a.md": "A"})
    (folder / ".DS_Store").write_bytes(b"\x00\x01binary")
    (src / ".git").mkdir()
    [row] = lib.import_dir(src, by="ops")
    assert (row.task_name, row.name, row.files) == ("pdf_tools", "pdf-tools", {"examples/a.md": "A"})
    assert "task: pdf_tools" in row.text


def test_executable_files_stay_executable_through_import_and_export(lib, tmp_path):
    """scripts/run.sh was -rwxr-xr-x on import and -rw-r--r-- after export: files are stored as text, their modes
    were dropped. The x bit is kept (metadata `protege-executable`, from the modes on disk) and set on export;
    importing the export again is the same version."""
    folder = write_folder(tmp_path / "src", "pdf-tools", files={"scripts/run.sh": "echo hi\n", "notes.md": "n\n"})
    os.chmod(folder / "scripts" / "run.sh", 0o755)
    [row] = lib.import_dir(folder, by="ops")
    lib.approve("pdf_tools", by="ann")
    [out] = lib.export(tmp_path / "out")
    assert os.stat(out / "scripts" / "run.sh").st_mode & 0o777 == 0o755
    assert not os.stat(out / "notes.md").st_mode & 0o111
    assert [r.version for r in lib.import_dir(out, by="ops")] == [row.version]


def test_a_skills_own_version_and_status_are_kept(lib, tmp_path):
    """The spec's own example has `metadata: {author: ..., version: "1.0"}`: protege overwrote `version` (and a
    `status`) with its own on export, and took a numeric `version: "7"` for its version number. Its bookkeeping is
    namespaced (`protege-version`, `protege-status`), so the skill's metadata comes back as written."""
    meta = {"author": "someone", "version": "7", "status": "beta"}
    folder = write_folder(
        tmp_path / "src", "pdf-tools", Skill(name="pdf-tools", description="d", metadata=meta).render()
    )
    [row] = lib.import_dir(folder, by="ops")
    assert row.version == 1  # not 7: that number is the skill's own
    lib.approve("pdf_tools", by="ann")
    [out] = lib.export(tmp_path / "out")
    front = yaml.safe_load((out / "SKILL.md").read_text().split("---\n")[1])["metadata"]
    assert {k: front[k] for k in meta} == meta
    assert (front["protege-version"], front["protege-status"]) == ("1", "approved")


def test_skills_exported_before_the_keys_were_namespaced_still_import(lib, tmp_path):
    """An earlier export wrote protege's version and status as plain `version`/`status` beside `task`: they are
    still read as protege's (the version kept, approved on a trusted import), and written back namespaced."""
    meta = {"task": "pdf_tools", "kind": "authored", "version": "3", "status": "approved"}
    text = Skill(name="pdf-tools", description="d", body="Steps.", metadata=meta).render()
    folder = write_folder(tmp_path / "src", "pdf-tools", text)
    [row] = lib.import_dir(folder, by="ops", trust=True)
    assert (row.version, row.status) == (3, "approved")
    shown = SkillLibrary.to_skill(row).metadata
    assert "version" not in shown and "status" not in shown and shown["protege-version"] == "3"


def test_a_lowercase_skill_md_is_named_in_the_error(lib, store, tmp_path):
    """A folder with `skill.md` was "no skill folders" or "has no SKILL.md": the error names the file to rename."""
    folder = write_folder(tmp_path / "src", "pdf-tools")
    os.rename(folder / "SKILL.md", folder / "skill.md")
    for src in (folder, tmp_path / "src"):
        _refused(lib, store, src, r"has 'skill.md'; the Agent Skills spec requires the file name 'SKILL.md'")
