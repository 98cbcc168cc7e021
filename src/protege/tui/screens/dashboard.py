"""Dashboard: per task — calls, validity, shadow agreement, spend vs teacher-only, savings; tier mix and a chart
of calls by tier over time for the highlighted task."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.markup import escape
from textual.widgets import DataTable, Footer, Static

from protege.store import Store
from protege.tui.format import TIER_COLORS, clip, pct, usd
from protege.tui.queries import TaskStats, calls_over_time, task_names, task_stats
from protege.tui.screens.base import ReviewScreen, fit_names
from protege.tui.widgets.nav_bar import NavBar
from protege.tui.widgets.tier_chart import TierChart

TASK_WIDTH = 16  # the least: wider when the names and the terminal allow
COLUMNS = (
    ("Task", TASK_WIDTH),
    ("Calls", 8),
    ("Valid", 6),
    ("Agree", 6),
    ("Spend", 9),
    ("Teacher-only", 12),
    ("Saved", 6),
)


class DashboardScreen(ReviewScreen):
    """One row per task; the highlighted task's tier mix, spend breakdown and calls-by-tier chart below."""

    BINDINGS = [Binding("f5,ctrl+r", "refresh", "Refresh")]

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[str, TaskStats] = {}

    def compose(self) -> ComposeResult:
        yield NavBar("dashboard")
        yield DataTable(id="tasks", cursor_type="row", zebra_stripes=True)
        yield Static(id="summary")
        yield TierChart(id="chart")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#tasks", DataTable)
        for title, width in COLUMNS:
            table.add_column(title, width=width, key=title.lower())
        self.load()

    def action_refresh(self) -> None:
        self.load()

    @work(exclusive=True, group="dashboard")
    async def load(self) -> None:
        """Rows appear task by task (busiest first, by a cheap count), each once its ledger is computed."""
        table = self.query_one("#tasks", DataTable)
        keep = self.current_task
        try:
            names = await self.read(_busiest_first, self.store)
            table.clear()
            width = fit_names(table, "task", names, TASK_WIDTH)
            self.stats = {}
            for name in names:
                stats = await self.read(task_stats, self.store, name)
                self.stats[name] = stats
                table.add_row(*_cells(stats, width), key=name)
                if name == keep or (len(self.stats) == 1 and keep not in names):
                    table.move_cursor(row=table.row_count - 1, animate=False)
                    self.show_task(name)
        except Exception as exc:
            self.fail(exc)
            return
        if not names:
            self.query_one("#summary", Static).update("No tasks yet: register one with @app.task and call it.")
            self.query_one("#chart", TierChart).series = None

    @property
    def current_task(self) -> str | None:
        table = self.query_one("#tasks", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value in self.stats:
            self.show_task(event.row_key.value)

    @work(exclusive=True, group="chart")
    async def show_task(self, task: str) -> None:
        self.query_one("#summary", Static).update(_summary(self.stats[task]))
        try:
            series = await self.read(calls_over_time, self.store, task)
        except Exception as exc:
            self.fail(exc)
            return
        self.query_one("#chart", TierChart).series = series


def _busiest_first(store: Store) -> list[str]:
    return sorted(task_names(store), key=lambda name: (-store.count_traces(name), name))


def _cells(s: TaskStats, task_width: int = TASK_WIDTH) -> tuple[str, ...]:
    led = s.ledger
    saved = pct(led.savings_ratio)
    return (
        clip(s.task, task_width),
        f"{led.calls:,}",
        pct(s.valid_rate),
        pct(s.mean_agreement),
        usd(led.total_usd),
        usd(led.teacher_only_usd),
        saved,
    )


def _summary(s: TaskStats) -> str:
    """Tier mix of served calls, spend by tier vs teacher-only, and shadow agreement per cheaper tier."""
    led = s.ledger
    served = sum(led.calls_by_tier.values()) or 1
    mix = (
        "  ".join(
            f"[{TIER_COLORS.get(t, 'white')}]■[/] {t} {n / served:.0%}"
            for t, n in sorted(led.calls_by_tier.items(), key=lambda kv: -kv[1])
        )
        or "no calls served yet"
    )
    spend = "  ".join(f"{t} {usd(v)}" for t, v in sorted(led.spend_by_tier.items())) or "nothing spent"
    saved = (
        f"saved [bold green]{usd(led.savings_usd)}[/] ({pct(led.savings_ratio)})"
        if led.savings_usd is not None
        else "saved — (no valid teacher answer yet)"
    )
    agree = "  ".join(f"{t} {pct(mean)} (n={n})" for t, (mean, n) in s.agreement.items() if n) or "no shadow runs yet"
    return (
        f"[bold]{escape(s.task)}[/]  tier mix: {mix}\n"
        f"spend {usd(led.total_usd)} vs teacher-only {usd(led.teacher_only_usd)} → {saved}\n"
        f"by tier: {spend}\n"
        f"shadow agreement: {agree}"
    )
