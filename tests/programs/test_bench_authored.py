"""The authored-programs benchmark runs end to end at a small size: structure and sane values, not speed."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/
    sys.path.insert(0, str(ROOT))

from bench.common import Context  # noqa: E402


def test_authored_benchmark_compares_the_program_tier_off_induced_and_authored(tmp_path) -> None:
    from bench import authored as bench_authored

    ctx = Context(quick=True, scratch=tmp_path, cache_dir=tmp_path / "cache", log=lambda m: None)
    data = bench_authored.run(ctx, calls=30).data
    off, induced, both = data["off/replay"], data["induced/replay"], data["authored/replay"]
    assert off["calls"] == both["calls"] == 30 and off["filled"] == 0 and off["latency"] is None
    # the authored program adds fields the induced ones lack (contact_email, urgency), through the sandbox
    assert both["fields_per_call"] > induced["fields_per_call"] and both["failures"] == 0
    assert both["per_field"]["urgency"]["by"] == "written by function:code-author"
    assert both["author_calls"] == 1 and both["latency"]["p50_ms"] > 0
    assert data["off/teacher"]["exact"] == 1.0  # the labels' teacher, alone
