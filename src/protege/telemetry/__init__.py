"""OpenTelemetry: protege's calls as GenAI spans (spans.py), the opt-in OTLP exporter (exporter.py), and OTLP
traces read back in as protege traces (otel_import.py). Light to import: the SDK loads only when configured."""

from protege.telemetry.spans import Telemetry, current_attempt

__all__ = ["Telemetry", "current_attempt"]
