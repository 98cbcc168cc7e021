"""The programs benchmark runs end to end on a small generated workload: per field a program, its held-out and
unseen record, induction time, and the unseen calls through the cascade (structure and sane values, not speed)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/
    sys.path.insert(0, str(ROOT))

from bench import programs  # noqa: E402
from bench.common import Context  # noqa: E402


def test_programs_benchmark_measures_a_generated_workload(tmp_path, monkeypatch):
    monkeypatch.setattr(programs, "TRACES", 90)
    ctx = Context(quick=True, scratch=tmp_path / "scratch", cache_dir=tmp_path / "cache", log=lambda m: None)
    w = programs.generated("make_invites", "invites")
    w.heldout = w.heldout[:25]
    m = programs.measure(ctx, w)
    assert m["train"] + m["heldout_traces"] == 90 and m["calls"] == 25 and m["induce_s"] > 0
    count = m["fields"]["attendee_count"]
    assert count["promoted"] and count["unseen_wrong"] == 0 and count["unseen_right"] > 0
    assert m["program_share"] > 0 and m["quality"] == 1.0 and m["teacher_only_per_1k_usd"] > 0
    table = programs._field_table(w, m)
    assert table.rows and all(len(row) == len(table.columns) for row in table.rows)
