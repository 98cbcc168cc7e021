"""The sandbox benchmark runs end to end at small sizes: structure and sane values, not speed."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/
    sys.path.insert(0, str(ROOT))

from bench.common import Context  # noqa: E402


def test_sandbox_benchmark_measures_calls_starts_and_verification(tmp_path) -> None:
    from bench import sandbox as bench_sandbox

    ctx = Context(quick=True, scratch=tmp_path, cache_dir=tmp_path / "cache", log=lambda m: None)
    result = bench_sandbox.run(ctx, calls=40, starts=1, traces=30)
    latency = result.data["latency"]
    assert latency["sandboxed"]["n"] == latency["in_process"]["n"] == latency["hop_only"]["n"] == 40
    assert 0 < latency["in_process"]["p50_ms"] and 0 < latency["sandboxed"]["p50_ms"] <= latency["sandboxed"]["p99_ms"]
    assert len(result.data["starts"]["start"]) == len(result.data["starts"]["restart"]) == 1
    authored = result.data["authored"]
    assert {"order_id", "contact_email", "urgency"} <= set(authored["field_agreement"])
    assert set(authored["fields_left_out"]) >= {"product", "quantity"}  # the program leaves those to a model
    stream = result.data["stream"]
    assert stream["calls"] == 30 and stream["whole_share"] == 0.0 and stream["failures"] == 0
    assert result.headlines[0].unit == "ms" and result.headlines[0].baseline > 0
