"""The changes between two versions of a task's skill, as a coloured unified diff."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static

from protege.store import SkillRow
from protege.tui.widgets.diff_view import DiffView, diff_stats, skill_diff


class SkillDiffScreen(Screen[None]):
    """`old` -> `new` of the same task's SKILL.md."""

    BINDINGS = [Binding("escape,q,v", "close", "Back")]

    def __init__(self, old: SkillRow, new: SkillRow) -> None:
        super().__init__()
        self.old, self.new = old, new
        self.lines = skill_diff(old.text, new.text, f"v{old.version} ({old.status})", f"v{new.version} ({new.status})")

    def compose(self) -> ComposeResult:
        added, removed = diff_stats(self.lines)
        yield Static(
            f" Diff {escape(self.new.task_name)}: v{self.old.version} → v{self.new.version}   "
            f"[green]+{added}[/] [red]-{removed}[/]",
            classes="nav-bar",
        )
        with VerticalScroll(id="diff-scroll"):
            yield DiffView(self.lines, id="diff")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#diff-scroll", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
