"""A yes/no dialog, optionally with a note (a reason for a rejection or a retirement)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static


class ConfirmScreen(ModalScreen[str | None]):
    """Dismisses with the note ('' when none was asked for or typed) on yes, None on no."""

    BINDINGS = [
        Binding("y", "confirm", "Yes"),
        Binding("n,escape", "cancel", "No"),
    ]

    def __init__(self, question: str, *, with_note: bool = False, yes: str = "Yes") -> None:
        super().__init__()
        self.question = question
        self.with_note = with_note
        self.yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            if self.with_note:
                yield Input(placeholder="note (optional), Enter to confirm", id="note")
            with Horizontal(id="buttons"):
                yield Button(f"{self.yes} (y)", variant="primary", id="yes")
                yield Button("No (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "yes":
            self.action_confirm()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_confirm()

    def action_confirm(self) -> None:
        note = self.query_one("#note", Input).value.strip() if self.with_note else ""
        self.dismiss(note)

    def action_cancel(self) -> None:
        self.dismiss(None)
