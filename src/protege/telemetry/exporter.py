"""The opt-in exporter: `Protege(otel="http://collector:4318")` / `PROTEGE_OTEL_ENDPOINT` for apps that have no
telemetry of their own — an SDK TracerProvider with a batching OTLP/HTTP exporter (`pip install 'protege[otel]'`).

The provider is the app's own, not the global one: protege never replaces a provider an app set up, and an app
that has one needs no endpoint (protege's spans already go to it). It is flushed and shut down by `app.close()`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from protege.errors import UserError

TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector `endpoint` (`http://host:4318` → `http://host:4318/v1/traces`)."""
    if not isinstance(endpoint, str) or not endpoint.strip():
        raise UserError(
            f"otel endpoint {endpoint!r} is empty; give the collector's OTLP/HTTP base URL, "
            f"e.g. 'http://localhost:4318'"
        )
    url = urlparse(endpoint.strip())
    if url.scheme not in ("http", "https") or not url.netloc:
        raise UserError(
            f"otel endpoint {endpoint!r} is not an http(s) URL; give the collector's OTLP/HTTP base URL, "
            f"e.g. 'http://localhost:4318' (set by Protege(otel=...) or PROTEGE_OTEL_ENDPOINT)"
        )
    path = url.path.rstrip("/")
    return url._replace(path=path if path.endswith(TRACES_PATH) else path + TRACES_PATH).geturl()


def otlp_provider(endpoint: str, *, service_name: str = "protege", processor: Any = None) -> Any:
    """An SDK TracerProvider exporting to `endpoint` over OTLP/HTTP (protobuf) in batches.

    `processor` replaces the batching processor (tests and benchmarks pass their own). OTEL_SERVICE_NAME and
    OTEL_RESOURCE_ATTRIBUTES still apply, as the SDK reads them."""
    url = traces_url(endpoint)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise UserError(
            f"the OTLP exporter is not installed ({exc.name}); install it with `pip install 'protege[otel]'`, "
            f"or configure OpenTelemetry in your app and leave the endpoint unset"
        ) from None
    # shut down by app.close() (registered at exit too), with a bounded wait, not by the SDK's own exit hook
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False)
    provider.add_span_processor(processor or BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    provider._protege_owned = True  # type: ignore[attr-defined]  # Telemetry.shutdown flushes only its own
    provider._protege_endpoint = url  # type: ignore[attr-defined]
    # what an app opened again after close() exports through (a processor passed in cannot be made again)
    remake = None if processor is not None else (lambda: otlp_provider(endpoint, service_name=service_name))
    provider._protege_remake = remake  # type: ignore[attr-defined]
    return provider


def make_telemetry(otel: Any, endpoint: str | None, *, capture_content: bool | None = None) -> Any:
    """The app's Telemetry: `otel` is an endpoint URL, a TracerProvider, or None (then `endpoint` from settings,
    else the global provider)."""
    from protege.telemetry.spans import Telemetry

    if otel is None:
        otel = endpoint or None
    if isinstance(otel, str):
        return Telemetry(otlp_provider(otel), capture_content=capture_content)
    if otel is not None and not callable(getattr(otel, "get_tracer", None)):
        raise UserError(
            f"otel={otel!r} is neither a collector URL nor a TracerProvider; pass e.g. "
            f"'http://localhost:4318', or leave it out to use the global TracerProvider"
        )
    return Telemetry(otel, capture_content=capture_content)
