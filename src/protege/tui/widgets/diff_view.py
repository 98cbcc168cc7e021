"""A unified diff of two SKILL.md versions, coloured: added lines green, removed red, hunks cyan."""

from __future__ import annotations

import difflib

from rich.text import Text
from textual.widgets import Static

LINE_STYLES = (("+++", "bold"), ("---", "bold"), ("@@", "cyan"), ("+", "green"), ("-", "red"))


def skill_diff(old: str, new: str, old_name: str, new_name: str, *, context: int = 3) -> list[str]:
    """Unified diff lines (no trailing newlines) from `old` to `new`."""
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), old_name, new_name, n=context, lineterm="")
    return list(lines)


def render_diff(lines: list[str]) -> Text:
    out = Text(no_wrap=False)
    if not lines:
        return out.append("the two versions have the same text", style="dim")
    for line in lines:
        style = next((s for prefix, s in LINE_STYLES if line.startswith(prefix)), "")
        out.append(line + "\n", style=style)
    return out


def diff_stats(lines: list[str]) -> tuple[int, int]:
    """Lines added and removed (headers not counted)."""
    added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
    removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
    return added, removed


class DiffView(Static):
    """Shows a coloured unified diff."""

    def __init__(self, lines: list[str], **kwargs: object) -> None:
        super().__init__(render_diff(lines), **kwargs)  # type: ignore[arg-type]
