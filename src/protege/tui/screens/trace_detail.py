"""One trace: its facts, the transcript turn by turn, the output and validation errors; label it good or bad;
jump to the other attempts of the same run."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.widgets import Footer, Static

from protege.agents.results import describe_field_confidences
from protege.store import LabelRow, TraceRow
from protege.tui.format import seconds, short_id, tier_markup, usd, validity_markup, when
from protege.tui.screens.base import ReviewScreen
from protege.tui.screens.run_attempts import RunAttemptsScreen
from protege.tui.widgets.transcript import Transcript, render_json


class TraceScreen(ReviewScreen[dict]):
    """Shows the trace `trace_id`; `r` lists its run's attempts and opens the one picked.

    Dismisses with the labels given here ({trace id: verdict}), so the table can update without a reload.
    """

    BINDINGS = [
        Binding("g", "label('good')", "Good"),
        Binding("b", "label('bad')", "Bad"),
        Binding("r", "attempts", "Run attempts"),
        Binding("escape,q", "close", "Back"),
    ]

    def __init__(self, trace_id: str) -> None:
        super().__init__()
        self.trace_id = trace_id
        self.trace: TraceRow | None = None
        self.labelled: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Static(id="trace-title", classes="nav-bar")
        yield Static(id="trace-meta")
        with VerticalScroll(id="trace-body"):
            yield Static("Transcript", classes="section")
            yield Transcript(id="transcript")
            yield Static("Output", classes="section")
            yield Static(id="output")
            yield Static("Validation", classes="section")
            yield Static(id="errors")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#trace-body", VerticalScroll).focus()
        self.load()

    @work(exclusive=True, group="trace")
    async def load(self) -> None:
        try:
            trace = await self.read(self.store.trace, self.trace_id)
            labels = await self.read(self.store.labels, self.trace_id)
        except Exception as exc:
            self.fail(exc)
            return
        if trace is None:
            self.notify(f"trace {self.trace_id!r} is no longer in the store", severity="error")
            return
        self.trace = trace
        self.query_one("#trace-title", Static).update(
            f" Trace {short_id(trace.id)} · {escape(trace.task_name)} · {tier_markup(trace.tier)}"
            f" · {escape(trace.model)}"
        )
        self.query_one("#trace-meta", Static).update(_meta(trace, labels))
        self.query_one("#transcript", Transcript).show(trace.messages)
        output = render_json(trace.output) if trace.output is not None else Text(trace.output_text or "—")
        self.query_one("#output", Static).update(output)
        errors = "\n".join(f"[red]✗[/] {escape(str(e))}" for e in trace.errors or []) or "[green]✓ valid[/]"
        self.query_one("#errors", Static).update(errors)
        self.query_one("#trace-body", VerticalScroll).scroll_home(animate=False)

    def action_label(self, verdict: str) -> None:
        if (
            self.act(
                self.protege.label,
                self.trace_id,
                verdict,
                reviewer=self.reviewer,
                done=f"trace {self.trace_id[:8]} labelled {verdict}",
            )
            is not None
        ):
            self.labelled[self.trace_id] = verdict
            self.load()

    @work(exclusive=True, group="attempts")
    async def action_attempts(self) -> None:
        if self.trace is None or not self.trace.run_id:
            self.notify("this trace belongs to no run", severity="warning")
            return
        try:
            attempts = await self.read(self.store.traces, run_id=self.trace.run_id, limit=50, oldest_first=True)
        except Exception as exc:
            self.fail(exc)
            return
        self.app.push_screen(RunAttemptsScreen(self.trace.run_id, attempts, current=self.trace_id), self.open)

    def open(self, trace_id: str | None) -> None:
        if trace_id and trace_id != self.trace_id:
            self.trace_id = trace_id
            self.load()

    def action_close(self) -> None:
        self.dismiss(self.labelled)


def _meta(t: TraceRow, labels: list[LabelRow]) -> str:
    tokens = f"{t.input_tokens:,} in / {t.output_tokens:,} out"
    if t.cache_read_tokens or t.cache_write_tokens:
        tokens += f" (cache {t.cache_read_tokens:,} read, {t.cache_write_tokens:,} written)"
    lines = [
        f"{validity_markup(t.valid)} · {usd(t.cost_usd)} · {seconds(t.latency_s)} · {tokens} · {when(t.created_at)}",
        f"run {short_id(t.run_id)} attempt {t.attempt}"
        + (" · [bold]shadow[/]" if t.shadow else "")
        + (f" · skill v{t.skill_version}" if t.skill_version is not None else "")
        + (f" · student {short_id(t.student_id)}" if t.student_id else ""),
    ]
    if t.field_confidences:
        lines.append(f"field confidence: {escape(describe_field_confidences(t.field_confidences))}")
    if labels:
        last = labels[-1]
        colour = "green" if last.verdict == "good" else "red"
        lines.append(
            f"label [{colour}]{last.verdict}[/] by {escape(last.reviewer or '—')} at {when(last.created_at)}"
            + (f" — {escape(last.note)}" if last.note else "")
        )
    else:
        lines.append("[dim]not labelled: g good, b bad (bad traces never reach a dataset)[/]")
    return "\n".join(lines)
