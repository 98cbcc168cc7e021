"""OpenTelemetry spans for every call, tier attempt, model request and tool call (GenAI semantic conventions).

    protege.run                      one call: task, run id, the tier that served, cost, escalations
      protege.attempt <tier>         one tier's try: its protege trace id (`protege trace ID`), validity, cost
        chat <model>                 one model request: gen_ai.* provider, model, usage, response id, finish reasons
        execute_tool <name>          one tool call the model asked for

Spans go to the global TracerProvider of `opentelemetry-api` unless the app gives its own (`Protege(otel=...)`).
With none configured nothing is built, not even the OpenTelemetry import: `Telemetry.call` returns a shared
no-op. Message content (prompts, answers, tool arguments and results) is recorded only when the app opts in
(`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true` or `Protege(otel_content=True)`), and then redacted by
the task's `Policy(redact=...)` first. Error messages never go on spans (they can quote the answer); their type does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Any, TypeVar

import protege.telemetry.genai as g

log = logging.getLogger(__name__)

CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
_CONTENT_ON = {"true", "1", "yes", "on", "span_only", "span_and_event"}
SCOPE = "protege"
T = TypeVar("T")


def content_from_env() -> bool:
    """Whether the conventions' content-capture switch is on in the environment (off by default)."""
    return os.environ.get(CONTENT_ENV, "").strip().lower() in _CONTENT_ON


class _Noop:
    """Every span helper when tracing is off: a context manager whose methods do nothing."""

    def __enter__(self) -> _Noop:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def served(self, result: Any) -> Any:
        return result

    def model_request(self, model: Any, request: Any) -> _Noop:
        return self

    def tool(self, call: Any, description: str = "") -> _Noop:
        return self

    def done(self, attempt: Any) -> None:
        return None

    def response(self, resp: Any) -> None:
        return None

    def result(self, text: str, ok: bool) -> None:
        return None


NOOP: Any = _Noop()
_ATTEMPT: ContextVar[Any] = ContextVar("protege_attempt_spans", default=NOOP)


def current_attempt() -> Any:
    """The attempt whose model requests and tool calls are being traced (a no-op outside one, or when off)."""
    return _ATTEMPT.get()


def carry_context(coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """`coro`, run under the caller's OpenTelemetry context wherever it runs (the portal's loop thread), so a call
    made inside an app's span nests under it. Unchanged when the caller has no context (or OpenTelemetry is absent)."""
    context = sys.modules.get("opentelemetry.context")
    current = context.get_current() if context is not None else None
    return _attached(coro, current, context) if current else coro


async def _attached(coro: Coroutine[Any, Any, T], current: Any, context: Any) -> T:
    token = context.attach(current)
    try:
        return await coro
    finally:
        context.detach(token)


class Telemetry:
    """Where an app's spans go: `provider` (any TracerProvider) or, when None, the global one."""

    def __init__(self, provider: Any = None, *, capture_content: bool | None = None):
        self.provider = provider
        self.capture_content = content_from_env() if capture_content is None else capture_content
        self._tracer: Any = None
        self._tracer_of: Any = None

    def tracer(self) -> Any:
        """The tracer to use now, or None when no provider is configured (the global one can be set any time)."""
        provider = self.provider if self.provider is not None else _global_provider()
        if provider is None:
            return None
        if provider is not self._tracer_of:
            from protege.version import __version__

            self._tracer, self._tracer_of = provider.get_tracer(SCOPE, __version__), provider
        return self._tracer

    def call(self, task: str, run_id: str) -> Any:
        """The span of one call (a context manager; `.served(result)` records who served it)."""
        tracer = self.tracer()
        return NOOP if tracer is None else CallSpan(tracer, task, run_id)

    def attempt(
        self, tier: str, *, run_id: str | None, redact: str, shadow: bool, cost: Callable[[Any, Any], float]
    ) -> Any:
        """The span of one tier attempt; while open, it is `current_attempt()` for the loop's requests and tools."""
        tracer = self.tracer()
        if tracer is None:
            return NOOP
        return AttemptSpan(
            tracer, tier, run_id=run_id, shadow=shadow, cost=cost, redact=redact if self.capture_content else None
        )

    def reopen(self) -> None:
        """After `shutdown`, a provider protege made from an endpoint is made again, so that an app used after
        close() still exports its spans (a stopped provider drops them silently)."""
        if not getattr(self.provider, "_protege_closed", False):
            return
        remake = getattr(self.provider, "_protege_remake", None)
        if remake is None:
            log.warning("OpenTelemetry: the app was used after close(); its spans are not exported from now on")
            return
        self.provider = remake()

    def shutdown(self, timeout_s: float = 3.0) -> None:
        """Flush and stop a provider protege configured itself (an app's own provider is the app's to stop).

        Waits at most `timeout_s`: with the collector down the exporter retries for up to 10 s, and closing an
        app must not hang on telemetry (the spans it could not deliver are lost, and said so)."""
        if not getattr(self.provider, "_protege_owned", False) or getattr(self.provider, "_protege_closed", False):
            return
        self.provider._protege_closed = True
        stopping = threading.Thread(target=self.provider.shutdown, name="protege-otel-shutdown", daemon=True)
        stopping.start()
        stopping.join(timeout_s)
        if stopping.is_alive():
            import warnings

            warnings.warn(
                f"OpenTelemetry: the last spans were not delivered within {timeout_s:g} s (is the collector "
                f"at {getattr(self.provider, '_protege_endpoint', '?')} up?); protege stopped waiting",
                stacklevel=2,
            )


def _global_provider() -> Any:
    """The global TracerProvider if the app configured one; None otherwise. An app that set a provider has
    imported opentelemetry.trace, so when the module is not loaded there is nothing to look up (or import)."""
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        if not os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
            return None
        import importlib

        trace = importlib.import_module("opentelemetry.trace")
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


class _Span:
    """A span started as the current one on enter and ended on exit; an exception marks it failed by type."""

    name = ""
    kind = "INTERNAL"

    def __init__(self, tracer: Any, attributes: dict[str, Any]):
        self.tracer = tracer
        self.attributes = attributes
        self.span: Any = None

    def __enter__(self) -> Any:
        from opentelemetry.trace import INVALID_SPAN, SpanKind

        try:
            self._cm = self.tracer.start_as_current_span(
                self.name,
                kind=getattr(SpanKind, self.kind),
                attributes=_clean(self.attributes),
                record_exception=False,
                set_status_on_exception=False,  # exception messages can quote content
            )
            self.span = self._cm.__enter__()
        except Exception as exc:  # a broken provider or processor must not fail the call: trace nothing here
            _broken(exc)
            self._cm, self.span = None, INVALID_SPAN
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            self.fail(type(exc).__name__)
        if self._cm is None:
            return
        try:
            self._cm.__exit__(exc_type, exc, tb)  # the body's own exception propagates after this, unchanged
        except Exception as error:
            _broken(error)

    def set(self, **attributes: Any) -> None:
        if self.span.is_recording():
            self.span.set_attributes(_clean(attributes))

    def fail(self, error_type: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute(g.ERROR_TYPE, error_type)
        self.span.set_status(Status(StatusCode.ERROR, error_type))


class CallSpan(_Span):
    name = "protege.run"

    def __init__(self, tracer: Any, task: str, run_id: str):
        super().__init__(tracer, {g.TASK: task, g.RUN_ID: run_id})

    def served(self, result: Any) -> Any:
        self.set(
            **{
                g.TIER: result.tier,
                g.MODEL: result.model,
                g.COST_USD: result.cost_usd,
                g.LATENCY_S: result.latency_s,
                g.ATTEMPTS: len(result.attempts),
                g.ESCALATIONS: len(result.attempts) - 1,
                g.STATUS: "ok",
            }
        )
        return result

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None:
            attempts = getattr(exc, "attempts", None) or []
            self.set(
                **{
                    g.STATUS: "failed",
                    g.ATTEMPTS: len(attempts),
                    g.ESCALATIONS: max(len(attempts) - 1, 0),
                    g.COST_USD: sum(getattr(a, "cost_usd", 0.0) for a in attempts),
                }
            )
        super().__exit__(exc_type, exc, tb)


class AttemptSpan(_Span):
    def __init__(
        self,
        tracer: Any,
        tier: str,
        *,
        run_id: str | None,
        shadow: bool,
        cost: Callable[[Any, Any], float],
        redact: str | None,
    ):
        super().__init__(tracer, {g.TIER: tier, g.RUN_ID: run_id, "protege.shadow": shadow or None})
        self.name = f"protege.attempt {tier}"
        self.cost = cost
        self.redact = redact  # None: no content on spans

    def __enter__(self) -> Any:
        super().__enter__()
        self._token = _ATTEMPT.set(self)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        _ATTEMPT.reset(self._token)
        super().__exit__(exc_type, exc, tb)

    def done(self, attempt: Any) -> None:
        """Record the attempt as the store has it (its trace id leads to `protege trace ID` and the TUI)."""
        self.set(
            **{
                g.TRACE_ID: attempt.trace_id,
                g.MODEL: attempt.model,
                g.VALID: attempt.valid,
                g.COST_USD: attempt.cost_usd,
                g.LATENCY_S: attempt.latency_s,
                g.CONFIDENCE: attempt.confidence,
                g.SKILL_VERSION: attempt.skill_version,
                g.STUDENT_ID: attempt.student_id,
            }
        )
        if not attempt.valid:
            # the class of what its model raised; else it answered, and the answer failed validation
            self.fail(type(attempt.raised).__name__ if attempt.raised is not None else "invalid_answer")

    def model_request(self, model: Any, request: Any) -> RequestSpan:
        return RequestSpan(self, model, request)

    def tool(self, call: Any, description: str = "") -> ToolSpan:
        return ToolSpan(self, call, description)

    def content(self, value: Any) -> str:
        """`value` as a JSON attribute, redacted by the task's policy."""
        from protege.distill.redact import redact_json

        clean, _ = redact_json(value, self.redact)  # type: ignore[arg-type]
        return json.dumps(clean, ensure_ascii=False, default=str)


class RequestSpan(_Span):
    """One model request (`chat <model>`): CLIENT for remote providers, INTERNAL for in-process models."""

    def __init__(self, attempt: AttemptSpan, model: Any, request: Any):
        provider, name = g.split_model(model.name)
        attributes = {
            g.OPERATION: "chat",
            g.PROVIDER: provider,
            g.REQUEST_MODEL: name,
            g.MODEL: model.name,
            g.REQUEST_MAX_TOKENS: request.max_tokens,
            g.REQUEST_TEMPERATURE: request.temperature,
            g.OUTPUT_TYPE: "json" if request.output_schema is not None else "text",
        }
        if attempt.redact is not None:
            turns = [m.model_dump(exclude_defaults=True) for m in request.messages]
            attributes[g.INPUT_MESSAGES] = attempt.content(g.to_genai(turns))
            if request.tools:
                attributes[g.TOOL_DEFINITIONS] = attempt.content(
                    [{"type": "function", **t.model_dump()} for t in request.tools]
                )
        super().__init__(attempt.tracer, attributes)
        self.name = f"chat {name}"
        self.kind = "CLIENT" if provider in g.KNOWN_PROVIDERS.values() else "INTERNAL"
        self.attempt, self.model = attempt, model

    def response(self, resp: Any) -> None:
        raw = resp.raw if isinstance(resp.raw, dict) else {}
        usage = resp.usage
        finish = resp.stop_reason or ("tool_calls" if resp.tool_calls else None)
        attributes = {
            g.RESPONSE_ID: raw.get("id") if isinstance(raw.get("id"), str) else None,
            g.RESPONSE_MODEL: raw.get("model") if isinstance(raw.get("model"), str) else None,
            g.FINISH_REASONS: [finish] if finish else None,
            # the conventions count cache reads and writes inside the input tokens; protege keeps them apart
            g.INPUT_TOKENS: usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
            g.OUTPUT_TOKENS: usage.output_tokens,
            g.CACHE_READ_TOKENS: usage.cache_read_tokens or None,
            g.CACHE_WRITE_TOKENS: usage.cache_write_tokens or None,
            g.COST_USD: self.attempt.cost(self.model, usage),
            g.CONFIDENCE: resp.confidence,
        }
        if self.attempt.redact is not None:
            turn = {"role": "assistant", "content": resp.text, "tool_calls": [c.model_dump() for c in resp.tool_calls]}
            message = {**g.to_genai([turn])[0], "finish_reason": finish or "stop"}
            attributes[g.OUTPUT_MESSAGES] = self.attempt.content([message])
        self.set(**attributes)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc is not None and getattr(exc, "status", None):
            self.set(**{"http.response.status_code": exc.status})
        super().__exit__(exc_type, exc, tb)


class ToolSpan(_Span):
    """One tool call (`execute_tool <name>`); arguments and result are content, recorded only when opted in."""

    def __init__(self, attempt: AttemptSpan, call: Any, description: str):
        attributes = {
            g.OPERATION: "execute_tool",
            g.TOOL_NAME: call.name,
            g.TOOL_TYPE: "function",
            g.TOOL_CALL_ID: call.id,
            g.TOOL_DESCRIPTION: description or None,
        }
        if attempt.redact is not None:
            attributes[g.TOOL_CALL_ARGUMENTS] = attempt.content(call.arguments)
        super().__init__(attempt.tracer, attributes)
        self.name = f"execute_tool {call.name}"
        self.attempt = attempt

    def result(self, text: str, ok: bool) -> None:
        if self.attempt.redact is not None:
            self.set(**{g.TOOL_CALL_RESULT: self.attempt.content(text)})
        if not ok:
            self.fail("tool_error")


def _broken(exc: Exception) -> None:
    """Say once per process that the tracing pipeline failed (calls go on untraced where it does)."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        import warnings

        warnings.warn(
            f"OpenTelemetry failed while protege made a span ({type(exc).__name__}: {exc}); calls go on, "
            f"untraced where it fails — check the app's TracerProvider and span processors",
            stacklevel=3,
        )


_WARNED = False


def _clean(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None dropped (an attribute cannot be null)."""
    return {k: v for k, v in attributes.items() if v is not None}
