"""Edit a SKILL.md in a TextArea; saving stores the text as a new draft version through the `save` it is given."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Static, TextArea

from protege.store import SkillRow


class SkillEditScreen(Screen[SkillRow | None]):
    """Dismisses with the new version once `save` stored the text (ctrl+s), None on cancel (escape).

    `save` returns the new version, or None when the text was refused (having told the reviewer why): the editor
    then stays open with the text as typed, so it can be fixed rather than typed again. Saving unchanged text
    does nothing.
    """

    BINDINGS = [
        Binding("ctrl+s", "save", "Save as new draft", priority=True),
        Binding("escape", "cancel", "Cancel", priority=True),
    ]

    def __init__(self, row: SkillRow, save: Callable[[str], SkillRow | None]) -> None:
        super().__init__()
        self.row = row
        self.save = save

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
        new = self.save(text)
        if new is not None:
            self.dismiss(new)

    def action_cancel(self) -> None:
        self.dismiss(None)
