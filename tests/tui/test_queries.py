"""The console's reads, on SQLite and PostgreSQL: task list, dashboard stats, the tier chart and trace pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from tui_seed import seed

from protege.store import RunRow, TraceRow
from protege.tui.queries import (
    TraceQuery,
    calls_over_time,
    count_traces,
    latest_labels,
    task_names,
    task_stats,
    trace_page,
)


@pytest.fixture
def seeded(store):
    seed(store)
    return store


def test_task_names_include_trace_only_tasks(seeded):
    """Registered tasks and tasks known only from (imported) traces are both listed, sorted."""
    seeded.insert_traces([TraceRow(task_name="imported_task", tier="import")])
    assert task_names(seeded) == ["extract_order", "imported_task", "triage"]


def test_task_stats_match_ledger_counts_and_shadows(seeded):
    """Validity is valid/all attempts; agreement is the mean of the replay shadows (one of three disagreed)."""
    st = task_stats(seeded, "triage")
    assert st.ledger == seeded.ledger("triage")
    assert st.attempts == seeded.count_traces("triage") and st.valid_attempts == st.attempts - 3
    assert st.agreement["replay"] == (pytest.approx(2 / 3), 3) and st.agreement["student"] == (None, 0)
    assert st.mean_agreement == pytest.approx(2 / 3)


def test_calls_over_time_daily_buckets_cover_every_call(seeded):
    """Ten days of triage calls chart per day, with no gaps between first and last day, summing to all runs."""
    series = calls_over_time(seeded, "triage")
    assert series.unit == "day" and series.labels[0] == "2026-03-01" and series.labels[-1] == "2026-03-11"
    assert len(series.labels) == 11
    assert sum(sum(c.values()) for c in series.counts) == 40
    assert series.counts[0] == {"teacher": 1} and series.counts[-1] == {"student": 2}  # calls 38 and 39
    assert series.tiers == ["student", "replay", "teacher"]


def test_calls_over_time_hourly_for_short_history_and_capped(seeded):
    """A task with calls inside two days is charted per hour; max_buckets keeps the newest buckets."""
    series = calls_over_time(seeded, "extract_order")
    assert series.unit == "hour" and series.labels == [
        "2026-03-09 09:00",
        "2026-03-09 10:00",
        "2026-03-09 11:00",
        "2026-03-09 12:00",
    ]
    assert calls_over_time(seeded, "extract_order", max_buckets=2).labels == ["2026-03-09 11:00", "2026-03-09 12:00"]
    assert calls_over_time(seeded, "no_such_task").labels == []


def test_failed_runs_chart_as_failed(store):
    """A run that no tier could serve (tier None) shows up as 'failed'."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    store.insert_run(RunRow(task_name="t", tier=None, status="failed", created_at=at))
    store.insert_run(RunRow(task_name="t", tier="teacher", status="ok", created_at=at + timedelta(minutes=5)))
    assert calls_over_time(store, "t").counts == [{"failed": 1, "teacher": 1}]


@pytest.mark.parametrize("sort", ["task", "tier", "model", "valid", "date", "cost"])
@pytest.mark.parametrize("descending", [True, False])
def test_trace_pages_follow_the_sort_and_tile_the_result(seeded, sort, descending):
    """Consecutive pages in any sort order hold every filtered trace exactly once, in sorted order."""
    q = TraceQuery(task="triage", sort=sort, descending=descending)
    pages = [trace_page(seeded, q, limit=7, offset=o) for o in range(0, 70, 7)]
    rows = [r for page in pages for r in page]
    assert len(rows) == len({r.id for r in rows}) == count_traces(seeded, q)
    key = {
        "task": "task_name",
        "tier": "tier",
        "model": "model",
        "valid": "valid",
        "date": "created_at",
        "cost": "cost_usd",
    }[sort]
    values = [getattr(r, key) for r in rows]
    assert values == sorted(values, reverse=descending)


def test_trace_filters_combine(seeded):
    """task + tier + validity filters narrow the count and the page alike."""
    q = TraceQuery(task="triage", tier="replay", valid=False)
    page = trace_page(seeded, q, limit=50, offset=0)
    assert count_traces(seeded, q) == len(page) == 3
    assert all(r.tier == "replay" and not r.valid for r in page)


def test_unknown_sort_is_refused():
    """A sort column that is not a trace column raises, naming it."""
    with pytest.raises(ValueError, match="'latency'"):
        TraceQuery(sort="latency")


def test_latest_label_wins(seeded):
    """latest_labels gives each trace's newest verdict only."""
    tid = seeded.traces("triage", limit=1)[0].id
    seeded.add_label(tid, "bad", reviewer="x")
    seeded.add_label(tid, "good", reviewer="y")
    assert latest_labels(seeded, [tid, "missing"]) == {tid: "good"}
    assert latest_labels(seeded, []) == {}


@pytest.mark.parametrize("sort", ["tier", "date", "cost"])
@pytest.mark.parametrize("descending", [True, False])
def test_far_pages_read_backwards_equal_forward_pages(seeded, sort, descending):
    """Pages past the middle, read from the other end, hold exactly the rows forward paging gives, ties included."""
    tie = datetime(2026, 3, 5, tzinfo=UTC)
    seeded.insert_traces([TraceRow(task_name="triage", tier="replay", cost_usd=0.5, created_at=tie) for _ in range(9)])
    q = TraceQuery(task="triage", sort=sort, descending=descending)
    total = count_traces(seeded, q)
    forward = [r.id for o in range(0, total, 8) for r in trace_page(seeded, q, limit=8, offset=o)]
    mixed = [r.id for o in range(0, total, 8) for r in trace_page(seeded, q, limit=8, offset=o, total=total)]
    assert mixed == forward and len(set(forward)) == total
