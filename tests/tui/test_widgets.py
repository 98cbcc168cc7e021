"""The console's drawing functions on their own: tier chart, skill diff, transcript, number formats."""

from __future__ import annotations

from protege.tui.format import pct, usd, when
from protege.tui.queries import TierSeries
from protege.tui.widgets.diff_view import diff_stats, render_diff, skill_diff
from protege.tui.widgets.tier_chart import render_chart
from protege.tui.widgets.transcript import render_transcript


def bar_heights(text: str, col_w: int) -> list[int]:
    """Filled cells per bar of a rendered chart (a bar starts every `col_w` columns after the axis)."""
    rows = [line.split("│", 1)[1] for line in text.splitlines() if "│" in line]
    width = max(len(r) for r in rows)
    return [sum(1 for row in rows if i < len(row) and row[i] != " ") for i in range(0, width, col_w)]


def test_chart_bars_scale_to_the_busiest_bucket():
    """The busiest bucket fills the chart's height; one with half the calls fills about half."""
    series = TierSeries("day", ["d1", "d2", "d3"], [{"teacher": 10}, {"replay": 5}, {}])
    text = render_chart(series, width=40, height=12).plain
    assert bar_heights(text, col_w=6)[:3] == [10, 5, 0]  # few buckets: 5-column bars and a gap
    assert "teacher 10" in text and "replay 5" in text and "calls per day, last 3" in text


def test_chart_stacks_tiers_bottom_up_in_their_colours():
    """A bucket with student and teacher calls draws student (green) below teacher (magenta)."""
    series = TierSeries("day", ["d1"], [{"student": 5, "teacher": 5}])
    chart = render_chart(series, width=20, height=12)
    styles_by_row = [
        {
            str(span.style)
            for span in line.spans
            if line.plain[span.start : span.end].strip(" ▁▂▃▄▅▆▇█") == "" and line.plain[span.start : span.end].strip()
        }
        for line in chart.split("\n")
        if "│" in line.plain
    ]
    assert "green" in styles_by_row[-1] and "magenta" in styles_by_row[0]


def test_chart_keeps_newest_buckets_that_fit():
    """With more buckets than columns, the newest ones are drawn (the last label is the newest)."""
    labels = [f"2026-01-{d:02d}" for d in range(1, 31)]
    series = TierSeries("day", labels, [{"teacher": d} for d in range(1, 31)])
    text = render_chart(series, width=27, height=6).plain
    assert text.rstrip().endswith("2026-01-30") and "2026-01-01" not in text


def test_empty_chart_says_so():
    """No calls: the chart says so instead of drawing axes."""
    assert render_chart(TierSeries("day", [], []), 40, 10).plain == "no calls yet"


def test_diff_marks_added_and_removed_lines():
    """A changed line is one removal and one addition, coloured red and green."""
    lines = skill_diff("a\nb\nc\n", "a\nB\nc\n", "v1", "v2")
    assert "-b" in lines and "+B" in lines and diff_stats(lines) == (1, 1)
    rendered = render_diff(lines)
    styles = {rendered.plain[s.start : s.end].strip(): str(s.style) for s in rendered.spans}
    assert styles["-b"] == "red" and styles["+B"] == "green"


def test_identical_versions_say_so():
    """Two versions with the same text produce an empty diff and a message."""
    assert skill_diff("x\n", "x\n", "v1", "v2") == []
    assert "same text" in render_diff([]).plain


def test_transcript_shows_roles_tool_calls_and_results():
    """Each role gets a heading; an assistant tool call shows its name and arguments; a tool result its name."""
    text = render_transcript(
        [
            {"role": "system", "content": "be brief"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"order": 7}}]},
            {"role": "tool", "name": "lookup", "tool_call_id": "c1", "content": "[paid]"},
        ]
    ).plain
    assert "▌ system\nbe brief" in text and '→ lookup {"order": 7}' in text
    assert "▌ tool · lookup c1\n[paid]" in text  # brackets in content stay text, not markup


def test_formats_fit_their_columns():
    """Money, percentages and times render short and absolute."""
    from datetime import UTC, datetime

    assert [usd(0.00002), usd(0.0123), usd(12.345), usd(12345.0), usd(None)] == [
        "$0.00002",
        "$0.0123",
        "$12.35",
        "$12,345",
        "—",
    ]
    assert [usd(-0.004802), usd(-12.345)] == ["-$0.004802", "-$12.35"]  # was $-0.004802, as the CLI never writes
    assert pct(0.9123, 1) == "91.2%" and pct(None) == "—"
    assert when(datetime(2026, 3, 1, 9, 30, tzinfo=UTC)) == "2026-03-01 09:30"


def test_a_students_record_shows_its_gate_and_leaves_per_answer_lists_out():
    """The students screen's record names a gated student's floor, coverage and end-to-end retention; the
    per-answer score and confidence lists (hundreds of numbers) stay out of it."""
    from protege.store import StudentRow
    from protege.tui.screens.students import _record

    gate = {
        "min_confidence": 0.912,
        "coverage": 0.64,
        "retention": 0.953,
        "kept_quality": 0.93,
        "measured_on": "cross-fitted, 5 folds",
        "in_sample": {"coverage": 0.7, "retention": 0.97, "kept_quality": 0.95},
    }
    row = StudentRow(
        task_name="triage",
        base="smollm2-135m",
        adapter_path="/a",
        metrics={
            "retention": 0.81,
            "scores": [1.0, 0.0] * 200,
            "confidences": [0.9] * 400,
            "gate": gate,
            "field_accuracy": {"queue": 0.97, "priority": 0.62},
            "kind_accuracy": {"copied": 0.97},
        },
    )
    text = _record(row)
    assert "confidence gate ≥ 0.912 (least-sure field): keeps 64% of calls (their quality 93.0%)" in text
    assert "end-to-end retention 95.3% on the eval split (cross-fitted, 5 folds); 97.0% on the answers" in text
    assert "retention=0.81" in text
    assert "exact match per field: priority 62.0% · queue 97.0%" in text and "copied 97.0%" in text
    assert "{" not in text  # no raw dicts
    assert "scores" not in text and "confidences" not in text and len(text) < 1000


def test_a_students_record_shows_how_it_did_behind_its_task_programs():
    """A student judged behind its task's field programs: which programs, how many fields they fixed per call,
    its retention so and its weakest fields; the per-answer lists stay out."""
    from protege.store import StudentRow
    from protege.tui.screens.students import _record

    served = {
        "programs": ["city", "order_id"],
        "fields_fixed_mean": 1.75,
        "retention": 0.9125,
        "field_accuracy": {"city": 1.0, "urgency": 0.95, "customer_name": 0.9375, "order_id": 1.0},
        "scores": [1.0] * 80,
    }
    row = StudentRow(task_name="orders", base="b", adapter_path="/a", metrics={"retention": 0.85, "served": served})
    text = _record(row)
    assert "behind its field programs (city, order_id; 1.8 fields fixed per call): retention 91.2%" in text
    assert "weakest fields customer_name 93.8% · urgency 95.0% · city 100.0%" in text and "{" not in text
    assert "behind its field programs" not in _record(StudentRow(task_name="o", base="b", adapter_path="/a"))


def test_the_students_table_shows_retention_alone_and_behind_programs():
    """The list has both figures side by side (promotion goes by the second), a dash where it was judged alone."""
    from protege.store import StudentRow
    from protege.tui.screens.students import COLUMNS, _cells

    keys = [key for _, key, _ in COLUMNS]
    served = StudentRow(
        task_name="o", base="b", adapter_path="/a", metrics={"retention": 0.85, "served": {"retention": 0.9125}}
    )
    alone = StudentRow(task_name="o", base="b", adapter_path="/a", metrics={"retention": 0.85})
    assert _cells(served)[keys.index("retention")] == "85.0%"
    assert _cells(served)[keys.index("served")] == "91.2%"
    assert _cells(alone)[keys.index("served")] == "—"


def test_a_students_record_says_where_it_is_served():
    """A student set to a server shows its host and URL; the record is unchanged for the default engine."""
    from protege.store import StudentRow
    from protege.tui.screens.students import _record

    serving = {"host": "openai:route-student", "base_url": "http://127.0.0.1:8000/v1", "since": "2026-01-01"}
    row = StudentRow(task_name="route", base="smollm2-135m", adapter_path="/a", metrics={"serving": serving})
    text = _record(row)
    assert "served by openai:route-student @ http://127.0.0.1:8000/v1" in text and "serving=" not in text
    assert "served by" not in _record(StudentRow(task_name="route", base="b", adapter_path="/a", metrics={}))


def test_a_students_record_shows_the_field_kinds_learned_from_its_traces():
    from protege.store import StudentRow
    from protege.tui.screens.students import _record

    row = StudentRow(
        task_name="orders",
        base="smollm2-135m",
        adapter_path="/a",
        metrics={"retention": 0.9, "field_kinds": {"order_id": "free", "city": "copied", "urgency": "enum"}},
    )
    text = _record(row)
    assert "field kinds" in text and "city [b]copied[/]" in text and "urgency [b]enum[/]" in text
    assert "field_kinds=" not in text
