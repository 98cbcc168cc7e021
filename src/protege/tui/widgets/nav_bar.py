"""The one-line bar of screens at the top: shows where you are and the key (or click) that goes elsewhere."""

from __future__ import annotations

from textual.markup import escape
from textual.widgets import Static

SECTIONS = (
    ("1", "dashboard", "Dashboard"),
    ("2", "skills", "Skills"),
    ("3", "traces", "Traces"),
    ("4", "students", "Students"),
)


class NavBar(Static):
    """Tabs as text: `1 Dashboard  2 Skills  3 Traces  4 Students`, the current one highlighted, each clickable."""

    def __init__(self, active: str, *, detail: str = "") -> None:
        super().__init__(self.markup(active, detail), classes="nav-bar")
        self.active = active

    @staticmethod
    def markup(active: str, detail: str = "") -> str:
        parts = []
        for key, mode, title in SECTIONS:
            style = "reverse bold" if mode == active else "dim"
            parts.append(f"[@click=app.goto('{mode}')][{style}] {key} {title} [/][/]")
        tail = f"  [bold]›[/] {escape(detail)}" if detail else ""
        return " protege " + " ".join(parts) + tail
