"""Traces: a filterable, sortable table that holds one page at a time, so it stays fast on 100k+ traces.

Filters (task, tier, validity) and the sort go to the database; the table shows PAGE_SIZE rows and loads the next
or previous page when the cursor runs off an end (or on `]` / `[`, `{` / `}` for the first / last page).
"""

from __future__ import annotations

from dataclasses import replace

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Select, Static

from protege.store import TraceRow
from protege.tui.format import clip, tier_markup, usd, validity_markup, when
from protege.tui.queries import TRACE_SORTS, TraceQuery, count_traces, latest_labels, task_names, trace_page
from protege.tui.screens.base import ReviewScreen, fit_names
from protege.tui.screens.trace_detail import TraceScreen
from protege.tui.widgets.nav_bar import NavBar
from protege.tui.widgets.paged_table import PagedTable

PAGE_SIZE = 100
TIERS = ("teacher", "replay", "student", "program", "import", "evidence", "author")
TASK_WIDTH = 11  # the least: wider when the names and the terminal allow
COLUMNS = (
    ("Task", "task", TASK_WIDTH),
    ("Tier", "tier", 7),
    ("Model", "model", 12),
    ("Valid", "valid", 5),
    ("Date (UTC)", "date", 16),
    ("Cost", "cost", 8),
    ("Lbl", "label", 3),
)
SORT_ORDER = list(TRACE_SORTS)
LABEL_MARKS = {"good": "[green]+[/]", "bad": "[red]−[/]"}


class TracesScreen(ReviewScreen):
    """The trace table; Enter opens a trace, g/b label the highlighted one."""

    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("g", "label('good')", "Good"),
        Binding("b", "label('bad')", "Bad"),
        Binding("s", "sort", "Sort"),
        Binding("S", "reverse", "Reverse", show=False),
        Binding("right_square_bracket", "page(1)", "Next page"),
        Binding("left_square_bracket", "page(-1)", "Prev page"),
        Binding("right_curly_bracket", "last_page", "Last page", show=False),
        Binding("left_curly_bracket", "first_page", "First page", show=False),
        Binding("f5,ctrl+r", "refresh", "Refresh", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.query_state = TraceQuery()
        self.page = 0
        self.total = 0
        self.page_rows: dict[str, TraceRow] = {}
        self.labels: dict[str, str] = {}
        self.task_width = TASK_WIDTH

    def compose(self) -> ComposeResult:
        yield NavBar("traces")
        with Horizontal(id="filters"):
            yield Select([], prompt="all tasks", id="task", compact=True)
            yield Select([(t, t) for t in TIERS], prompt="all tiers", id="tier", compact=True)
            yield Select([("valid", "valid"), ("invalid", "invalid")], prompt="valid+invalid", id="valid", compact=True)
        yield Static(id="page-info")
        yield PagedTable(id="traces")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#traces", PagedTable)
        for title, key, width in COLUMNS:
            table.add_column(title, width=width, key=key)
        table.focus()
        self.load_tasks()
        self.load(0)

    @property
    def table(self) -> PagedTable:
        return self.query_one("#traces", PagedTable)

    # -- loading -----------------------------------------------------------------------------------------------

    @work(group="trace-tasks")
    async def load_tasks(self) -> None:
        try:
            names = await self.read(task_names, self.store)
        except Exception as exc:
            self.fail(exc)
            return
        self.query_one("#task", Select).set_options([(n, n) for n in names])

    @work(exclusive=True, group="traces")
    async def load(self, page: int, cursor: str = "top", recount: bool = True) -> None:
        q = self.query_state
        try:
            if recount:
                self.total = await self.read(count_traces, self.store, q)
            last = max(0, (self.total - 1) // PAGE_SIZE)
            page = min(max(page, 0), last)
            rows = await self.read(
                trace_page, self.store, q, limit=PAGE_SIZE, offset=page * PAGE_SIZE, total=self.total
            )
            labels = await self.read(latest_labels, self.store, [r.id for r in rows])
        except Exception as exc:
            self.fail(exc)
            return
        self.page, self.labels = page, labels
        self.show_page(rows, cursor)

    def show_page(self, rows: list[TraceRow], cursor: str) -> None:
        table = self.table
        keep = table.cursor_row
        table.clear()
        self.task_width = fit_names(table, "task", {r.task_name for r in rows}, TASK_WIDTH)
        self.page_rows = {r.id: r for r in rows}
        for r in rows:
            table.add_row(*self.cells(r), key=r.id)
        if rows:
            row = {"top": 0, "bottom": len(rows) - 1}.get(cursor, min(keep, len(rows) - 1))
            table.move_cursor(row=row, animate=False)
        self.query_one("#page-info", Static).update(self.page_info(len(rows)))

    def cells(self, r: TraceRow) -> tuple[str, ...]:
        model = r.model.split(":", 1)[-1]  # the provider prefix does not fit
        return (
            clip(r.task_name, self.task_width),
            tier_markup(r.tier),
            clip(model, 12),
            validity_markup(r.valid, short=True),
            when(r.created_at),
            usd(r.cost_usd),
            LABEL_MARKS.get(self.labels.get(r.id, ""), ""),
        )

    def page_info(self, shown: int) -> str:
        q = self.query_state
        arrow = "↓" if q.descending else "↑"
        pages = max(1, -(-self.total // PAGE_SIZE))
        first = self.page * PAGE_SIZE + 1 if shown else 0
        return (
            f" {first:,}–{self.page * PAGE_SIZE + shown:,} of {self.total:,} traces · page {self.page + 1:,}"
            f"/{pages:,} · sorted by {q.sort} {arrow}"
        )

    def refilter(self, **changes: object) -> None:
        self.query_state = replace(self.query_state, **changes)  # type: ignore[arg-type]
        self.load(0)

    def on_select_changed(self, event: Select.Changed) -> None:
        value = event.value if isinstance(event.value, str) else None
        if event.select.id == "valid":
            self.refilter(valid=None if value is None else value == "valid")
        elif event.select.id in ("task", "tier"):
            self.refilter(**{event.select.id: value})

    # -- paging and sorting ------------------------------------------------------------------------------------

    def on_paged_table_page_request(self, event: PagedTable.PageRequest) -> None:
        self.action_page(event.step)

    def action_page(self, step: int) -> None:
        target = self.page + step
        if 0 <= target * PAGE_SIZE < self.total:
            self.load(target, "top" if step > 0 else "bottom", recount=False)

    def action_first_page(self) -> None:
        self.load(0, recount=False)

    def action_last_page(self) -> None:
        self.load(max(0, (self.total - 1) // PAGE_SIZE), "bottom", recount=False)

    def action_refresh(self) -> None:
        self.load(self.page, "keep")

    def action_sort(self) -> None:
        nxt = SORT_ORDER[(SORT_ORDER.index(self.query_state.sort) + 1) % len(SORT_ORDER)]
        self.refilter(sort=nxt, descending=nxt in ("date", "cost"))

    def action_reverse(self) -> None:
        self.refilter(descending=not self.query_state.descending)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key not in TRACE_SORTS:
            return
        if key == self.query_state.sort:
            self.action_reverse()
        else:
            self.refilter(sort=key, descending=key in ("date", "cost"))

    # -- a trace -----------------------------------------------------------------------------------------------

    @property
    def current(self) -> TraceRow | None:
        table = self.table
        if not table.row_count:
            return None
        return self.page_rows.get(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or "")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def action_open(self) -> None:
        row = self.current
        if row is not None:
            self.app.push_screen(TraceScreen(row.id), self.show_labels)

    def action_label(self, verdict: str) -> None:
        row = self.current
        if row is None:
            return
        if (
            self.act(
                self.protege.label,
                row.id,
                verdict,
                reviewer=self.reviewer,
                done=f"trace {row.id[:8]} labelled {verdict}",
            )
            is not None
        ):
            self.show_labels({row.id: verdict})

    def show_labels(self, labelled: dict[str, str] | None) -> None:
        """Put new verdicts in the label column of the rows on this page (no reload)."""
        for trace_id, verdict in (labelled or {}).items():
            self.labels[trace_id] = verdict
            if trace_id in self.page_rows:
                self.table.update_cell(trace_id, "label", LABEL_MARKS[verdict])
