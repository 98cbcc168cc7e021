"""The review console: `make_app()` builds the Textual app the `protege tui` command runs and the tests drive.

Four sections, each a Textual mode with its own screen stack: dashboard, skills, traces, students. Keys 1-4 (or a
click on the top bar) switch between them; every screen's bindings are also in the command palette (ctrl+p).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from protege.errors import UserError
from protege.tui.screens.dashboard import DashboardScreen
from protege.tui.screens.skills import SkillsScreen
from protege.tui.screens.students import StudentsScreen
from protege.tui.screens.traces import TracesScreen
from protege.tui.widgets.nav_bar import SECTIONS

if TYPE_CHECKING:
    from protege.app import Protege


class ProtegeConsole(App[None]):
    """Review skills and traces, watch spend, promote students — over one Protege app's store."""

    CSS_PATH = "protege.tcss"
    TITLE = "protege"
    MODES = {"dashboard": DashboardScreen, "skills": SkillsScreen, "traces": TracesScreen, "students": StudentsScreen}
    BINDINGS = [
        *(Binding(key, f"goto('{mode}')", title, show=False) for key, mode, title in SECTIONS),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(
        self, protege: Protege, *, reviewer: str, owns_protege: bool = False, trace: str | None = None
    ) -> None:
        super().__init__()
        self.protege = protege
        self.reviewer = reviewer
        self.owns_protege = owns_protege
        self.open_trace = trace  # opened over the traces section (a span's protege.trace_id leads here)

    def on_mount(self) -> None:
        if self.open_trace is None:
            self.switch_mode("dashboard")
            return
        from protege.tui.screens.trace_detail import TraceScreen

        self.switch_mode("traces")
        self.push_screen(TraceScreen(self.open_trace))

    def action_goto(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key, mode, title in SECTIONS:
            yield SystemCommand(
                f"Go to {title}", f"switch to the {title.lower()} (key {key})", partial(self.action_goto, mode)
            )
        for binding in screen.BINDINGS:  # the current screen's actions, for those who search rather than remember
            if (
                isinstance(binding, Binding)
                and binding.description
                and screen.check_action(binding.action.split("(")[0], ())
            ):
                yield SystemCommand(
                    binding.description, f"key {binding.key.split(',')[0]}", partial(screen.run_action, binding.action)
                )

    def on_unmount(self) -> None:
        if self.owns_protege:  # made by make_app from a db URL: release its store
            self.protege.close()


def make_app(
    app: Protege | None = None, *, db: str | None = None, reviewer: str | None = None, trace: str | None = None
) -> ProtegeConsole:
    """The console over `app` (a Protege) or, given only `db`, over `Protege(db=db)` (no tasks needed to review).

    `reviewer` is the name recorded on approvals, rejections and labels; default: $PROTEGE_REVIEWER or the OS user.
    `trace`: open on that trace (e.g. the `protege.trace_id` of an OpenTelemetry span).
    """
    if app is not None and db is not None:
        raise UserError(f"make_app got both an app and db={db!r}; pass one (the app already has its store)")
    owns = app is None
    if app is None:
        from protege.app import Protege

        app = Protege(db=db)
    if trace is not None and app.store.trace(trace) is None:  # else the trace screen says it "is no longer" there
        if owns:
            app.close()
        raise UserError(f"no trace {trace!r} in the store; list traces with `protege traces`")
    return ProtegeConsole(app, reviewer=reviewer or _default_reviewer(), owns_protege=owns, trace=trace)


def _default_reviewer() -> str:
    try:
        return os.environ.get("PROTEGE_REVIEWER") or getpass.getuser()
    except (KeyError, OSError):  # no user name in a bare container
        return "reviewer"
