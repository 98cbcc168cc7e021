"""Students: each fine-tuned candidate's metrics (retention, accuracy, latency, cost); promote and demote."""

from __future__ import annotations

from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.widgets import DataTable, Footer, Static

from protege.store import StudentRow
from protege.tui.format import clip, pct, seconds, short_id, status_markup, usd, when
from protege.tui.screens.base import ReviewScreen, fit_names
from protege.tui.screens.confirm import ConfirmScreen
from protege.tui.widgets.nav_bar import NavBar

# where each headline number lives in StudentRow.metrics (the first key present wins)
METRIC_KEYS = {
    "retention": ("retention",),
    "accuracy": ("accuracy", "student_accuracy", "score"),
    "latency": ("latency_s", "mean_latency_s", "p50_latency_s"),
    "cost": ("cost_usd", "cost_per_call_usd", "mean_cost_usd"),
}
TASK_WIDTH = 12  # the least: wider when the names and the terminal allow
COLUMNS = (
    ("Task", "task", TASK_WIDTH),
    ("Student", "id", 8),
    ("State", "state", 9),
    ("Retain", "retention", 6),
    ("+Prog.", "served", 6),  # retention behind the task's field programs, as the cascade serves the student
    ("Acc.", "accuracy", 6),
    ("Latency", "latency", 7),
    ("Cost/call", "cost", 9),
)


def metric(row: StudentRow, name: str) -> Any:
    metrics = row.metrics or {}
    return next((metrics[k] for k in METRIC_KEYS[name] if metrics.get(k) is not None), None)


class StudentsScreen(ReviewScreen):
    """A table of students, newest first; the highlighted one's full record below."""

    BINDINGS = [
        Binding("p", "promote", "Promote"),
        Binding("d", "demote", "Demote"),
        Binding("f5,ctrl+r", "refresh", "Refresh"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, StudentRow] = {}
        self.distills: list[str] = []  # automatic distills: running now, or how the last one ended

    def compose(self) -> ComposeResult:
        yield NavBar("students")
        yield DataTable(id="students", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="student-detail"):
            yield Static(id="student-record")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#students", DataTable)
        for title, key, width in COLUMNS:
            table.add_column(title, width=width, key=key)
        table.focus()
        self.load()

    def action_refresh(self) -> None:
        self.load()

    @work(exclusive=True, group="students")
    async def load(self) -> None:
        try:
            rows = await self.read(self.store.students)
            self.distills = await self.read(_distill_lines, self.store)
        except Exception as exc:
            self.fail(exc)
            return
        table = self.query_one("#students", DataTable)
        keep = table.cursor_row
        table.clear()
        width = fit_names(table, "task", {r.task_name for r in rows}, TASK_WIDTH)
        self.rows = {r.id: r for r in rows}
        for r in rows:
            table.add_row(*_cells(r, width), key=r.id)
        if rows:
            table.move_cursor(row=min(keep, len(rows) - 1), animate=False)
        self.show(self.current)

    @property
    def current(self) -> StudentRow | None:
        table = self.query_one("#students", DataTable)
        if not table.row_count:
            return None
        return self.rows.get(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value or "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show(self.rows.get(event.row_key.value or ""))

    def show(self, row: StudentRow | None) -> None:
        text = _record(row)
        if self.distills:
            text += "\n\n" + "\n".join(f"[b]auto distill[/] {escape(line)}" for line in self.distills)
        self.query_one("#student-record", Static).update(text)
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        row = self.current
        if action == "promote":
            return row is not None and row.state != "promoted" or None
        if action == "demote":
            return row is not None and row.state == "promoted" or None
        return True

    def action_promote(self) -> None:
        row = self.current
        if row is None or row.state == "promoted":
            return
        question = (
            f"Promote student {short_id(row.id)} for {row.task_name}? It will serve the task's calls "
            f"(retention {pct(metric(row, 'retention'), 1)}); a promoted one becomes a candidate."
        )
        from protege.distill.pipeline import refused_because

        refused = refused_because(row.metrics)
        if refused:
            question += f"\n\nDistill kept it as a candidate: {escape(refused)}."

        def promote(answer: str | None) -> None:
            if answer is not None and self.act(
                self.protege.promote, row.id, done=f"student {short_id(row.id)} promoted for {row.task_name}"
            ):
                self.load()

        self.app.push_screen(ConfirmScreen(question, yes="Promote"), promote)

    def action_demote(self) -> None:
        row = self.current
        if row is None or row.state != "promoted":
            return
        question = f"Demote student {short_id(row.id)}? Calls of {row.task_name} go back to replay and the teacher."

        def demote(answer: str | None) -> None:
            if answer is not None and self.act(
                self.protege.demote, row.task_name, done=f"student {short_id(row.id)} demoted"
            ):
                self.load()

        self.app.push_screen(ConfirmScreen(question, yes="Demote"), demote)


def _distill_lines(store: Any) -> list[str]:
    from protege.services.redistill import describe_lease, lease_name

    return [describe_lease(r, store.lease_live(r)) for r in store.leases(lease_name(""))]


def _cells(r: StudentRow, task_width: int = TASK_WIDTH) -> tuple[str, ...]:
    latency = metric(r, "latency")
    return (
        clip(r.task_name, task_width),
        short_id(r.id),
        status_markup(r.state),
        pct(metric(r, "retention"), 1),
        pct(_served_retention(r), 1),
        pct(metric(r, "accuracy"), 1),
        seconds(latency) if latency is not None else "—",
        usd(metric(r, "cost")),
    )


def _served_retention(row: StudentRow) -> float | None:
    served = (row.metrics or {}).get("served")
    return served.get("retention") if served else None


def _record(row: StudentRow | None) -> str:
    if row is None:
        return "[dim]No students yet: `protege distill TASK` trains one once a task has enough valid traces.[/]"
    lines = [
        f"[bold]{escape(row.task_name)}[/] student {row.id} {status_markup(row.state)}",
        f"base {escape(row.base)} · adapter {escape(row.adapter_path)}",
        f"dataset {short_id(row.dataset_id)} · created {when(row.created_at)}"
        + (f" · promoted {when(row.promoted_at)}" if row.promoted_at else ""),
        *_serving_line(row),
        *_gate_line(row),
        *_fields_line(row),
        *_served_line(row),
        *_kinds_line(row),
        "metrics: "
        + (
            "  ".join(
                f"{escape(str(k))}={_value(v)}"
                for k, v in sorted((row.metrics or {}).items())
                if not isinstance(v, list | dict)
            )  # per-answer lists, tables: above or --json
            or "none recorded"
        ),
    ]
    return "\n".join(lines)


def _serving_line(row: StudentRow) -> list[str]:
    """Where the student answers, once it was set (`protege students serve`); the torch engine otherwise."""
    from protege.services.serving import SERVING_KEY, describe

    if not (row.metrics or {}).get(SERVING_KEY):
        return []
    return [f"served by {escape(describe(row))}"]


def _gate_line(row: StudentRow) -> list[str]:
    gate = (row.metrics or {}).get("gate")
    if not gate:
        return []
    measured = gate.get("measured_on", "in-sample")
    line = (
        f"confidence gate ≥ {gate['min_confidence']:.3f} (least-sure field): keeps {pct(gate['coverage'], 0)} "
        f"of calls (their quality {pct(gate['kept_quality'], 1)}), escalates the rest · end-to-end retention "
        f"{pct(gate['retention'], 1)} on the eval split ({escape(measured)})"
    )
    if gate.get("in_sample"):
        line += f"; {pct(gate['in_sample']['retention'], 1)} on the answers the floor was chosen on"
    return [line]


def _fields_line(row: StudentRow) -> list[str]:
    """Exact match per output field (and per field kind when known), worst first: where the misses are."""
    metrics = row.metrics or {}
    fields = metrics.get("field_accuracy") or {}
    kinds = metrics.get("kind_accuracy") or {}
    lines = []
    if fields:
        lines.append(
            "exact match per field: "
            + " · ".join(
                f"{escape(name)} {pct(value, 1)}" for name, value in sorted(fields.items(), key=lambda kv: kv[1])
            )
        )
    if kinds:
        lines.append("per field kind: " + " · ".join(f"{escape(k)} {pct(v, 1)}" for k, v in kinds.items()))
    return lines


def _served_line(row: StudentRow) -> list[str]:
    """How it did as the cascade serves it: behind the task's field programs (what promotion and the gate used)."""
    served = (row.metrics or {}).get("served")
    if not served:
        return []
    fields = served.get("field_accuracy") or {}
    worst = " · ".join(f"{escape(n)} {pct(v, 1)}" for n, v in sorted(fields.items(), key=lambda kv: kv[1])[:3])
    return [
        f"behind its field programs ({escape(', '.join(served.get('programs') or []))}; "
        f"{served.get('fields_fixed_mean', 0):.1f} fields fixed per call): retention {pct(served['retention'], 1)}"
        + (f" · weakest fields {worst}" if worst else "")
    ]


def _kinds_line(row: StudentRow) -> list[str]:
    kinds = (row.metrics or {}).get("field_kinds")
    if not kinds:
        return []
    return [
        "field kinds (from the training traces; copied fields are decoded from the input's text only): "
        + ", ".join(f"{escape(name)} [b]{escape(kind)}[/]" for name, kind in kinds.items())
    ]


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return escape(str(v))
