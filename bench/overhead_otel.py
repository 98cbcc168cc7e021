"""OpenTelemetry's share of the per-call overhead: the same FunctionModel call through `app.run` with tracing off,
with an SDK provider whose exporter drops every batch (the cost of making spans), and with the OTLP/HTTP exporter
batching to a receiver on 127.0.0.1 (the receiver shares the machine, so this one includes its CPU too).

Blocks of the three apps rotate, so background noise on a shared machine lands on each; the figures are medians
and ratios to "off" from the same run. Message content capture is off (the default).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.common import Context, Table, latency_summary

MODES = ("off", "provider + no-op exporter", "OTLP/HTTP exporter, batching")


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that reads each export and answers 200 (an empty ExportTraceServiceResponse)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def _noop_provider(batch: bool = True) -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()) if batch else SimpleSpanProcessor(Drop()))
    return provider


def run_tracing(
    ctx: Context,
    make_app: Callable[..., Any],
    model: Any,
    n: int,
    rounds: int,
    block: Callable[[Any, list], list[float]],
    ticket: Callable[[int], dict],
) -> dict[str, Any]:
    """Latency summaries per mode, and (title, table, notes) for the report."""
    try:
        import opentelemetry.exporter.otlp.proto.http
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        return {"skipped": "install protege[otel] to measure tracing overhead"}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    apps = {
        "off": make_app(ctx, model),
        "provider + no-op exporter": make_app(ctx, model, otel=_noop_provider()),
        "OTLP/HTTP exporter, batching": make_app(ctx, model, otel=f"http://127.0.0.1:{server.server_address[1]}"),
    }
    try:
        warm = [ticket(-i) for i in range(1, 31)]
        for app in apps.values():
            block(app, warm)
        size = max(1, n // rounds)
        lat: dict[str, list[float]] = {mode: [] for mode in MODES}
        for r in range(rounds):
            inputs = [ticket(r * size + i) for i in range(size)]
            for mode in MODES[r % 3 :] + MODES[: r % 3]:  # rotate the order each round
                lat[mode] += block(apps[mode], inputs)
        out = {mode: latency_summary(values) for mode, values in lat.items()}
        out["spans_only_us"] = span_cost(ctx.pick(2000, 10000))
        return out
    finally:
        for app in apps.values():
            app.close()
        server.shutdown()
        server.server_close()


def span_cost(n: int) -> dict[str, float]:
    """The span machinery alone, µs per call (median of 5 repeats): the three spans of a call made and ended with
    their attributes, in-thread, without the call itself, off and with an SDK provider (its processor hands each
    span to a no-op exporter in-thread, so a flood of spans is not dropped by a full batch queue)."""
    import statistics

    from protege.agents.models.base import ModelRequest, ModelResponse, Usage
    from protege.agents.results import Attempt, RunResult
    from protege.telemetry import Telemetry

    req = ModelRequest(messages=[], output_schema={})
    resp = ModelResponse(text="{}", usage=Usage(input_tokens=300, output_tokens=20), stop_reason="end_turn")
    attempt = Attempt(tier="teacher", model="function:t", valid=True, trace_id="t1", cost_usd=0.01)
    result = RunResult(
        output=None,
        tier="teacher",
        model="function:t",
        cost_usd=0.01,
        latency_s=0.0,
        run_id="r1",
        trace_ids=["t1"],
        attempts=[attempt],
    )
    model = type("M", (), {"name": "function:t", "price_as": None})()
    out = {}
    for mode, tel in ((MODES[0], Telemetry()), (MODES[1], Telemetry(_noop_provider(batch=False)))):
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                with tel.call("triage", "r1") as call:
                    with tel.attempt(
                        "teacher", run_id="r1", redact="secrets", shadow=False, cost=lambda m, u: 0.01
                    ) as span:
                        with span.model_request(model, req) as request:
                            request.response(resp)
                        span.done(attempt)
                    call.served(result)
            runs.append((time.perf_counter() - start) / n * 1e6)
        out[mode] = statistics.median(runs)
    return out


def table(data: dict[str, Any]) -> Table:
    off = data["off"]["p50_ms"]
    spans = data.get("spans_only_us", {})
    return Table(
        "Tracing overhead per call (FunctionModel path; ratio = p50 / p50 with tracing off, same run; spans only: "
        "the three spans' machinery timed alone, µs)",
        ["tracing", "calls", "p50 (ms)", "p99 (ms)", "p50 − off (ms)", "ratio to off", "spans only (µs)"],
        [
            [
                mode,
                data[mode]["n"],
                data[mode]["p50_ms"],
                data[mode]["p99_ms"],
                data[mode]["p50_ms"] - off,
                data[mode]["p50_ms"] / off,
                spans.get(mode),
            ]
            for mode in MODES
        ],
    )


NOTE = (
    "Tracing: each call makes 3 spans (protege.run, protege.attempt, chat); 'off' is protege with no "
    "TracerProvider configured, where every span helper is a shared no-op. The OTLP receiver is a stdlib HTTP "
    "server on 127.0.0.1 in the benchmark process, so its CPU counts against the exporter's row."
)
