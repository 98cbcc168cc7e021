"""A skill as the Agent Skills spec (agentskills.io) defines it: a SKILL.md of YAML frontmatter and a markdown body,
plus optional extra files one level deep. `Skill.parse` reads one, `render` writes one, `validate` enforces the spec.

Rendering is canonical (fixed key order, one blank line after the frontmatter), so `parse(render(s)) == s` and a
skill exported, imported and exported again is byte-for-byte the same.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from protege.errors import UserError

ALLOWED_KEYS = ("name", "description", "license", "compatibility", "metadata", "allowed-tools")
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_COMPATIBILITY = 500
MAX_BODY_LINES = 500  # the body must stay under this many lines
MAX_BODY_TOKENS = 5000
SKILL_FILE = "SKILL.md"
STATUSES = ("draft", "approved", "rejected", "retired")
VERSION_KEY = "protege-version"
STATUS_KEY = "protege-status"
EXECUTABLE_KEY = "protege-executable"
"""protege's metadata keys for what a skill file cannot say by itself: its stored version and review state (added
on export, taken back on import), and which extra files are executable (a JSON list: file modes are not text).
Namespaced, so a skill's own `version` (the spec's own example has `version: "1.0"`) or `status` stay its own."""
LEGACY_KEYS = {"version": VERSION_KEY, "status": STATUS_KEY}  # what protege wrote before it namespaced them
CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab, LF, CR; and DEL


def skill_name(task: str) -> str:
    """The spec name of a task's skill: 'extract_order' -> 'extract-order' (lowercase, single hyphens, <= 64).
    Accented letters keep their base letter ('Café' -> 'cafe') rather than being dropped."""
    ascii_task = unicodedata.normalize("NFKD", task).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_task.lower()).strip("-")[:MAX_NAME].rstrip("-")
    if not name:
        raise UserError(f"task name {task!r} has no letters or digits to make a skill name from")
    return name


def estimate_tokens(text: str) -> int:
    """Approximate token count, by the estimate protege uses everywhere (agents.tokens.count_tokens): characters / 4
    under-counted CJK text about four times."""
    from protege.agents.tokens import count_tokens

    return count_tokens(text)


class Skill(BaseModel):
    """One skill: the frontmatter fields, the markdown body and extra files (relative path -> text)."""

    name: str
    description: str
    body: str = ""
    license: str | None = None
    compatibility: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    allowed_tools: str | None = None  # the spec's space-delimited `allowed-tools`
    files: dict[str, str] = Field(default_factory=dict)

    @field_validator("body")
    @classmethod
    def _normalize_body(cls, body: str) -> str:
        # Canonical body: LF line ends, no leading/trailing blank lines, one final newline (empty stays empty).
        body = body.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
        return body + "\n" if body else ""

    # -- protege's fields, kept in `metadata` as the spec asks -------------------------------------------------

    @property
    def task(self) -> str:
        return self.metadata.get("task") or self.name.replace("-", "_")

    @property
    def version(self) -> int | None:
        """The stored version this skill was read from (`protege-version`), if any."""
        v = self.metadata.get(VERSION_KEY, "")
        return int(v) if v.isdigit() else None

    @property
    def status(self) -> str | None:
        return self.metadata.get(STATUS_KEY)

    @property
    def executables(self) -> set[str]:
        """The extra files that are executable (their mode's x bit), from metadata `protege-executable`."""
        return set(_executable_list(self.metadata.get(EXECUTABLE_KEY)))

    def with_executables(self, paths: set[str]) -> Skill:
        """The skill with `paths` (of its files) recorded as executable; none recorded when `paths` is empty. The
        metadata stays as it is when it says so already (its key order too: a re-import stores the same text)."""
        if paths == self.executables:
            return self
        meta = {k: v for k, v in self.metadata.items() if k != EXECUTABLE_KEY}
        if paths:
            meta[EXECUTABLE_KEY] = json.dumps(sorted(paths))
        return self.model_copy(update={"metadata": meta})

    @property
    def kind(self) -> str | None:
        return self.metadata.get("kind")

    @property
    def text(self) -> str:
        return self.render()

    def header(self) -> list[tuple[str, str]]:
        """The frontmatter for people to read: the fields that are set, metadata as `key=value` pairs."""
        metadata = ", ".join(f"{k}={v}" for k, v in self.metadata.items())
        fields = [("name", self.name), ("description", self.description), *self._optional(), ("metadata", metadata)]
        return [(k, v) for k, v in fields if v]

    def _optional(self) -> list[tuple[str, str | None]]:
        """The spec's optional text fields, by their SKILL.md keys."""
        return [("license", self.license), ("compatibility", self.compatibility), ("allowed-tools", self.allowed_tools)]

    # -- SKILL.md ----------------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, *, files: dict[str, str] | None = None, folder: str | None = None) -> Skill:
        """Read a SKILL.md (plus its extra files) and validate it; `folder` is the directory name it came from."""
        front, body = _split_frontmatter(text)
        unknown = [k for k in front if k not in ALLOWED_KEYS]
        if unknown:
            raise UserError(
                f"SKILL.md frontmatter key {unknown[0]!r} is not allowed by the Agent Skills spec; "
                f"allowed keys: {', '.join(ALLOWED_KEYS)} (put custom fields under `metadata`)"
            )
        for key in ("name", "description", "license", "compatibility", "allowed-tools"):
            if key in front and not isinstance(front[key], str):
                raise UserError(f"SKILL.md `{key}` must be a string, got {front[key]!r}")
        metadata = front.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise UserError(f"SKILL.md `metadata` must be a mapping of strings to strings, got {metadata!r}")
        _check_metadata(metadata)
        metadata = _upgrade_legacy(metadata)
        for key in ("name", "description"):
            if key not in front:
                raise UserError(f"SKILL.md frontmatter needs `{key}`; got keys {sorted(front)!r}")
        try:
            skill = cls(
                name=front["name"],
                description=front["description"],
                body=body,
                license=front.get("license"),
                compatibility=front.get("compatibility"),
                metadata=metadata,
                allowed_tools=front.get("allowed-tools"),
                files=dict(files or {}),
            )
        except ValidationError as exc:
            raise UserError(f"SKILL.md does not fit the skill model: {exc.errors()[0]['msg']}") from exc
        return skill.validate(folder=folder)

    def render(self) -> str:
        """The SKILL.md text: canonical YAML frontmatter, a blank line, then the body."""
        front: dict[str, Any] = {"name": self.name, "description": self.description}
        for key, value in (("license", self.license), ("compatibility", self.compatibility)):
            if value is not None:
                front[key] = value
        if self.metadata:
            front["metadata"] = dict(self.metadata)
        if self.allowed_tools is not None:
            front["allowed-tools"] = self.allowed_tools
        return f"---\n{_dump(front)}---\n\n{self.body}"

    # -- the spec's rules --------------------------------------------------------------------------------------

    def validate(self, *, folder: str | None = None) -> Skill:  # type: ignore[override]
        """Raise UserError naming the first broken spec rule and its value; return self when valid."""
        _check_name(self.name)
        if folder is not None and folder != self.name:
            raise UserError(
                f"skill folder {folder!r} must equal the skill's name {self.name!r}: rename the folder or the name"
            )
        if not self.description.strip() or len(self.description) > MAX_DESCRIPTION:
            raise UserError(
                f"skill description must be 1-{MAX_DESCRIPTION} characters of text, got {len(self.description)}: "
                f"{_clip(self.description)!r}"
            )
        if self.compatibility is not None and not 1 <= len(self.compatibility) <= MAX_COMPATIBILITY:
            raise UserError(
                f"skill compatibility must be 1-{MAX_COMPATIBILITY} characters, got {len(self.compatibility)}: "
                f"{_clip(self.compatibility)!r}"
            )
        for key, value in (("license", self.license), ("allowed-tools", self.allowed_tools)):
            if value is not None and not value.strip():
                raise UserError(f"skill `{key}` must not be empty when given, got {value!r}; leave it out instead")
        _check_metadata(self.metadata)
        _executable_list(self.metadata.get(EXECUTABLE_KEY))
        check_body(self.body)
        for path in self.files:
            check_file_path(path)
        self._check_characters()
        return self

    def _check_characters(self) -> None:
        """Refuse control characters (PostgreSQL text refuses NUL outright) and lone surrogates in any field."""
        fields: list[tuple[str, str | None]] = [
            ("description", self.description),
            ("body", self.body),
            *self._optional(),
        ]
        fields += [(f"metadata key {k!r}", k) for k in self.metadata]
        fields += [(f"metadata {k!r}", v) for k, v in self.metadata.items()]
        fields += [(f"file path {p!r}", p) for p in self.files]
        fields += [(f"file {p!r}", text) for p, text in self.files.items()]
        for field, value in fields:
            if value is not None:
                check_characters(value, f"skill {field}")


def check_file_path(path: str) -> str:
    """An extra file's path: relative, at most one folder deep, no '..', no hidden parts, not SKILL.md itself."""
    parts = path.split("/")
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or re.match(r"^[A-Za-z]:", path) is not None
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
    )
    if bad:
        raise UserError(
            f"skill file path {path!r} must be relative and stay inside the skill folder "
            f"(no absolute paths, '..', backslashes or hidden names), e.g. 'examples/case.md'"
        )
    if len(parts) > 2:
        raise UserError(
            f"skill file {path!r} is nested too deep: files go at most one folder down, e.g. 'scripts/x.py'"
        )
    if len(parts) == 1 and path.upper() == SKILL_FILE.upper():  # case-insensitive file systems (macOS) clash too
        raise UserError(f"skill file {path!r} clashes with the skill's own {SKILL_FILE}; give it another name")
    return path


def check_characters(text: str, what: str) -> str:
    """Skill text is plain text: tab, LF and CR are the only control characters (no NUL, no escape codes), and
    it must be valid Unicode (no lone surrogates)."""
    bad = CONTROL_RE.search(text)
    if bad is not None:
        line = text.count("\n", 0, bad.start()) + 1
        raise UserError(
            f"{what} holds control character {bad.group()!r} on line {line}; skills are plain text "
            f"(tab, newline and carriage return are the only control characters allowed): remove it"
        )
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        bad_char = exc.object[exc.start]
        raise UserError(f"{what} holds {bad_char!r}, a lone surrogate (not valid Unicode): remove it") from exc
    return text


def _check_name(name: str) -> None:
    if not 1 <= len(name) <= MAX_NAME or not NAME_RE.match(name):
        raise UserError(
            f"skill name {name!r} must be 1-{MAX_NAME} characters of a-z, 0-9 and single hyphens, not starting or "
            f"ending with a hyphen (e.g. 'extract-order')"
        )


def _check_metadata(metadata: dict[Any, Any]) -> None:
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UserError(
                f"skill metadata must map strings to strings, got {key!r}: {value!r}; quote the value in YAML"
            )


def _upgrade_legacy(metadata: dict[str, str]) -> dict[str, str]:
    """Skills exported by protege before its keys were namespaced carry its version and status as plain `version`
    and `status`, beside `task`: read those as protege's. Any other `version` or `status` is the skill's own."""
    if VERSION_KEY in metadata or STATUS_KEY in metadata:
        return metadata
    legacy = "task" in metadata and metadata.get("status") in STATUSES and metadata.get("version", "").isdigit()
    return {LEGACY_KEYS.get(k, k): v for k, v in metadata.items()} if legacy else metadata


def _executable_list(value: str | None) -> list[str]:
    if not value:
        return []
    try:
        paths = json.loads(value)
    except json.JSONDecodeError:
        paths = None
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise UserError(
            f"skill metadata {EXECUTABLE_KEY!r} must be a JSON list of file paths, got {value!r}; protege writes it "
            f"from the files' modes on import: remove the key and import the folder again"
        )
    return paths


@lru_cache(maxsize=64)
def replay_text(text: str) -> str:
    """What a replaying model is shown of a SKILL.md: its name, description and body. Metadata (protege's trace ids
    and author model, or a skill's own notes of any size) and the other fields steer nothing and would be paid for
    on every call. Text that is not a SKILL.md is shown as it is. Cached: the same text comes on every call."""
    try:
        front, body = _split_frontmatter(text)
    except UserError:
        return text
    name, description = front.get("name"), front.get("description")
    if not isinstance(name, str) or not isinstance(description, str):
        return text
    front_text = _dump({"name": name, "description": description})
    return f"---\n{front_text}---\n\n" + body.strip("\n") + "\n"


def check_body(body: str) -> None:
    """The spec's body budget: under 500 lines and about 5,000 tokens."""
    lines = len(body.splitlines())
    if lines >= MAX_BODY_LINES:
        raise UserError(
            f"skill body has {lines} lines; the spec keeps SKILL.md under {MAX_BODY_LINES}: move detail into "
            f"extra files (e.g. examples/more.md)"
        )
    tokens = estimate_tokens(body)
    if tokens > MAX_BODY_TOKENS:
        raise UserError(
            f"skill body is about {tokens} tokens; the spec keeps it under ~{MAX_BODY_TOKENS}: move detail into "
            f"extra files (e.g. examples/more.md)"
        )


def _dump(front: dict[str, Any]) -> str:
    """YAML for the frontmatter; readable unicode unless that would not read back the same.

    PyYAML writes some characters (NEL, the Unicode line and paragraph separators) raw into quoted scalars, where
    a reader folds them; then the ASCII-only form, with every such character escaped, is used instead.
    """
    options: dict[str, Any] = {"sort_keys": False, "default_flow_style": False, "width": 10**6}
    dumped = yaml.safe_dump(front, allow_unicode=True, **options)
    if yaml.safe_load(dumped) != front:
        dumped = yaml.safe_dump(front, allow_unicode=False, **options)
    return dumped


def _split_frontmatter(text: str) -> tuple[dict[str, Any], str]:
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.startswith("---\n"):
        raise UserError(f"SKILL.md must start with a '---' line of YAML frontmatter, got {_clip(text)!r}")
    end = text.find("\n---\n", 3)
    if end == -1:
        if text.endswith("\n---"):
            end = len(text) - 4
        else:
            raise UserError("SKILL.md frontmatter has no closing '---' line")
    try:
        front = yaml.safe_load(text[4 : end + 1]) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"SKILL.md frontmatter is not valid YAML: {exc}") from exc
    if not isinstance(front, dict):
        raise UserError(f"SKILL.md frontmatter must be a YAML mapping, got {front!r}")
    return front, text[end + 5 :]


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + "..."


__all__ = [
    "ALLOWED_KEYS",
    "SKILL_FILE",
    "Skill",
    "check_body",
    "check_characters",
    "check_file_path",
    "estimate_tokens",
    "replay_text",
    "skill_name",
]
