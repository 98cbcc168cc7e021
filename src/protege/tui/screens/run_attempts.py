"""A run's attempts (one per tier tried, plus shadows), to jump between them."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from protege.store import TraceRow
from protege.tui.format import clip, short_id, tier_markup, usd, validity_markup, when


class RunAttemptsScreen(ModalScreen[str | None]):
    """Dismisses with the picked trace's id, or None."""

    BINDINGS = [Binding("escape,q", "cancel", "Close")]

    def __init__(self, run_id: str, attempts: list[TraceRow], *, current: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.attempts = attempts
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"Run {short_id(self.run_id)}: {len(self.attempts)} attempt(s) — Enter opens one")
            yield OptionList(*[Option(_line(t, t.id == self.current), id=t.id) for t in self.attempts], id="attempts")

    def on_mount(self) -> None:
        options = self.query_one("#attempts", OptionList)
        options.focus()
        index = next((i for i, t in enumerate(self.attempts) if t.id == self.current), 0)
        options.highlighted = index if self.attempts else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _line(t: TraceRow, current: bool) -> str:
    mark = "▶" if current else " "
    shadow = " shadow" if t.shadow else ""
    return (
        f"{mark} #{t.attempt} {tier_markup(t.tier)}{shadow} {clip(t.model, 18)} {validity_markup(t.valid)} "
        f"{usd(t.cost_usd)} {when(t.created_at)}"
    )
