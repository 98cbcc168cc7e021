"""Snapshot tests: every console screen at 80x24 over the fixed seed store matches its accepted SVG.

Update the accepted snapshots after an intended change with `pytest tests/tui --snapshot-update` and look at
them (the report pytest-textual-snapshot writes shows the differences).
"""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, TextArea
from tui_seed import student_id, trace_id

from protege.tui.app import make_app
from protege.tui.screens.trace_detail import TraceScreen

SIZE = (80, 24)


@pytest.fixture
def snap(snap_compare, seeded_url, settle):
    """snap(*steps): run the steps (key names, or callables of the pilot) on a fresh console, then compare."""

    def compare(*steps) -> bool:
        async def run_before(pilot) -> None:
            await settle(pilot)
            for step in steps:
                if callable(step):
                    result = step(pilot)
                    if result is not None:
                        await result
                else:
                    await pilot.press(step)
                await settle(pilot)

        return snap_compare(make_app(db=seeded_url, reviewer="alice"), terminal_size=SIZE, run_before=run_before)

    return compare


def row(selector: str, key: str):
    def move(pilot) -> None:
        table = pilot.app.screen.query_one(selector, DataTable)
        table.move_cursor(row=table.get_row_index(key), animate=False)

    return move


def test_dashboard(snap):
    """Dashboard: tasks with calls, validity, agreement, spend and savings; triage's tier mix and daily chart."""
    assert snap()


def test_skills(snap):
    """Skills: versions by task and state, the highlighted draft's review record and rendered SKILL.md."""
    assert snap("2", row("#skills", "triage:3"))


def test_skill_approved_record(snap):
    """Skills: an approved version shows who approved it and when."""
    assert snap("2", row("#skills", "triage:2"))


def test_skill_diff(snap):
    """Skill diff: v2 -> v3 of triage, one line changed."""
    assert snap("2", row("#skills", "triage:3"), "v")


def test_skill_edit(snap):
    """Skill editor: the SKILL.md in a TextArea with save/cancel bindings."""

    def no_blink(pilot) -> None:
        pilot.app.screen.query_one(TextArea).cursor_blink = False

    assert snap("2", row("#skills", "triage:3"), "e", no_blink)


def test_approve_confirm(snap):
    """Approve asks first, naming the version that will retire."""
    assert snap("2", row("#skills", "triage:3"), "a")


def test_traces(snap):
    """Traces: the first page, newest first, with filters, page info and labels."""
    assert snap("3")


def test_trace_detail(snap):
    """Trace view: an escalated replay attempt's facts, label, transcript, raw output and validation error."""

    async def open_trace(pilot) -> None:
        await pilot.app.push_screen(TraceScreen(trace_id("triage", 12, 0)))

    assert snap("3", open_trace)


def test_run_attempts(snap):
    """Run attempts: the replay attempt and the teacher's escalation of the same run."""

    async def open_trace(pilot) -> None:
        await pilot.app.push_screen(TraceScreen(trace_id("triage", 12, 0)))

    assert snap("3", open_trace, "r")


def test_students(snap):
    """Students: candidates and the promoted one with retention, accuracy, latency and cost."""
    assert snap("4", row("#students", student_id("triage-b")))


def test_promote_confirm(snap):
    """Promote asks first."""
    assert snap("4", row("#students", student_id("triage-a")), "p")
