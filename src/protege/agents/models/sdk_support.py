"""What the Anthropic and OpenAI adapters share: one SDK client per event loop, and error mapping.

Both SDKs are generated from the same template, so one mapping serves them: it looks at the exception's
class name and status code rather than importing either SDK, and maps what is left after the SDK's own
retries to protege's ModelError family. API keys are scrubbed from every message and body.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from protege.agents.models.base import ModelRequest
from protege.agents.tokens import estimate_usage
from protege.errors import BadResponse, ModelError, ModelTimeout, Overloaded, RateLimited

ClientT = TypeVar("ClientT")

_TIMEOUT_STATUSES = {408, 504}
_OVERLOADED_STATUSES = {503, 529}


class LoopBoundClient(Generic[ClientT]):
    """An async SDK client per event loop: pooled connections belong to the loop that opened them, and sync
    callers may run each call in a fresh loop (asyncio.run), where an old loop's client would fail."""

    def __init__(self, make: Callable[[], ClientT]):
        self._make = make
        self._loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._client: ClientT | None = None

    def get(self) -> ClientT:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is None or self._loop() is not loop:
            self._client = self._make()
            self._loop = weakref.ref(loop)
        return self._client

    async def aclose(self) -> None:
        """Close the client if it belongs to the running loop (its connections cannot be closed elsewhere)."""
        client, self._client = self._client, None
        if client is not None and self._loop is not None and self._loop() is asyncio.get_running_loop():
            await client.close()  # type: ignore[attr-defined]


def map_sdk_error(
    exc: BaseException, *, model: str, secret: str, retries: int, env_var: str, req: ModelRequest
) -> ModelError:
    """The protege error for an SDK exception (or a JSON decode error from a malformed body)."""
    kind = type(exc).__name__
    status = getattr(exc, "status_code", None)
    body = _scrub(getattr(exc, "body", None), secret)
    after = f" after {retries} retr{'y' if retries == 1 else 'ies'}"
    if isinstance(exc, json.JSONDecodeError) or kind == "APIResponseValidationError":
        # a 200 whose body is broken: the provider billed an answer whose usage cannot be read, so it is estimated
        received = getattr(exc, "doc", None) or str(getattr(exc, "body", None) or "")
        return BadResponse(
            f"{model}: the provider's response could not be read ({_scrub(str(exc), secret)})",
            model=model,
            status=status,
            body=body,
            usage=estimate_usage(req, received),
        )
    if kind == "APITimeoutError" or status in _TIMEOUT_STATUSES:
        return ModelTimeout(
            f"{model}: no answer in time{after}; raise timeout= or try again later",
            model=model,
            status=status,
            body=body,
        )
    if kind == "APIConnectionError":
        return ModelError(
            f"{model}: could not reach the provider{after}: {_scrub(str(exc), secret)}; check the network or base_url",
            model=model,
            body=body,
        )
    if status is None:
        return ModelError(f"{model}: {kind}: {_scrub(str(exc), secret)}", model=model, body=body)
    detail = _detail(body) or _scrub(getattr(exc, "message", "") or str(exc), secret)
    if status == 429:
        return RateLimited(
            f"{model}: rate limited (HTTP 429){after}: {detail}; slow down, or raise max_retries",
            model=model,
            status=status,
            body=body,
            retry_after=_retry_after(exc),
        )
    if status in _OVERLOADED_STATUSES or _error_type(body) == "overloaded_error":
        return Overloaded(
            f"{model}: the provider is overloaded (HTTP {status}){after}: {detail}; try again later",
            model=model,
            status=status,
            body=body,
            retry_after=_retry_after(exc),
        )
    hint = f"; check {env_var}" if status in (401, 403) else ""
    retried = after if status >= 500 or status == 409 else ""  # the SDKs retry these, not other 4xx
    return ModelError(f"{model}: HTTP {status}{retried}: {detail}{hint}", model=model, status=status, body=body)


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the response's Retry-After header asks for (a number of seconds; an HTTP date is not read)."""
    headers = getattr(getattr(exc, "response", None), "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _error_type(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("type") if isinstance(error, dict) else None


def _detail(body: Any) -> str:
    error = body.get("error", body) if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:500]
    return ""


MIN_SECRET = 8


def _scrub(value: Any, secret: str) -> Any:
    """`value` with every occurrence of the API key replaced (strings, and strings inside JSON-like bodies). A key
    shorter than MIN_SECRET is a placeholder, not a secret: scrubbed, `api_key="k"` made `Fa***eProvider` of every
    message."""
    if len(secret or "") < MIN_SECRET or value is None:
        return value
    if isinstance(value, str):
        return value.replace(secret, "***")
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return _scrub(str(value), secret)
    return json.loads(text.replace(secret, "***")) if secret in text else value
