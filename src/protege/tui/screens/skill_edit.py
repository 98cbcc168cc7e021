"""Edit a SKILL.md in a TextArea; saving hands the text back (the skills screen stores it as a new draft)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static, TextArea

from protege.store import SkillRow


class SkillEditScreen(Screen[str | None]):
    """Dismisses with the edited text on save (ctrl+s), None on cancel (escape); saving unchanged text cancels."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save as new draft", priority=True),
        Binding("escape", "cancel", "Cancel", priority=True),
    ]

    def __init__(self, row: SkillRow) -> None:
        super().__init__()
        self.row = row

    def compose(self) -> ComposeResult:
        yield Static(
            f" Editing {escape(self.row.task_name)} (from v{self.row.version}): saving makes a new draft version",
            classes="nav-bar",
        )
        yield TextArea(self.row.text, id="editor", soft_wrap=True, show_line_numbers=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#editor", TextArea).focus()

    def action_save(self) -> None:
        text = self.query_one("#editor", TextArea).text
        if text == self.row.text:
            self.notify("no changes to save", severity="warning")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)
