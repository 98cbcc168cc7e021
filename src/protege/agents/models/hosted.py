"""A student served by an OpenAI-compatible server: vLLM, llama.cpp's server, Ollama, TGI.

The student tier sends the prompt it was trained on (instructions as the system turn, the input as compact JSON;
the server applies the model's own chat template) with `response_format` carrying the output's JSON schema, at
temperature 0, and asks for `logprobs`. The confidence is the mean probability of the answer's tokens. Servers
report the model's own probability of every token, the schema's keys and punctuation included (the torch engine
leaves text the grammar forces out of its mean), so the scale differs from the torch engine's and a gate floor
calibrated there does not carry over as is. A server that returns no logprobs gives no confidence, so the
student's confidence gate cannot apply there (the answer is still validated, and an invalid one escalates); one
that refuses them (llama-cpp-python's server started with `--logits_all false`) is asked again without them, once,
and from then on never asked for them (a warning says so once).

A server that is down fails fast: no retries, a timeout of `DEFAULT_TIMEOUT_S` (a student answers in seconds), and
after `FAILURES_TO_SKIP` calls in a row found it down (timed out, or refused the connection) its calls skip it for
`COOL_DOWN_S` (one warning), going straight to the next tier, then try it again.

Its calls are priced as machine time at `local_cost_per_hour`: the server is hardware someone runs, not a metered
API. An answer is charged the time it waited on the server, shared with this process's other calls in flight on
that server (`local.MachineShare`): the server answers them together, so concurrent calls cost the time the
server was busy with them, not that time once per call.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from protege.agents.models.base import ModelRequest, ModelResponse
from protege.agents.models.local import server_share
from protege.agents.models.openai import OpenAIModel
from protege.errors import BadResponse, ModelError, ModelTimeout, UserError

log = logging.getLogger(__name__)
RESPONSE_FORMATS = ("json_schema", "json_object")
"""How the schema is sent: OpenAI's `json_schema` (vLLM, llama.cpp's llama-server, Ollama), or `json_object` with
a `schema` beside it (llama-cpp-python's server, which rejects `json_schema`)."""
DEFAULT_TIMEOUT_S = 10.0  # an answer takes a second or two: waiting longer only delays the escalation
FAILURES_TO_SKIP = 3  # calls in a row that found the server down before its calls skip it
COOL_DOWN_S = 30.0  # how long they skip it before trying it again


class HostedStudent(OpenAIModel):
    """`openai:<served model name>` at `base_url`, answering as student `student_id`."""

    writes_prose = False

    def __init__(
        self,
        name: str,
        *,
        student_id: str,
        base_url: str | None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        response_format: str = "json_schema",
        cool_down_s: float = COOL_DOWN_S,
    ):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise UserError(
                f"a hosted student needs the server's base_url (e.g. 'http://127.0.0.1:8000/v1'), got {base_url!r}"
            )
        if response_format not in RESPONSE_FORMATS:
            raise UserError(f"response_format {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}")
        check_timeout(timeout)
        super().__init__(name, api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)
        self.response_format = response_format
        self.student_id = student_id
        self.price_as = f"local:{student_id}"
        self.timeout_s = timeout
        self.logprobs = True  # False once the server refused them
        self.breaker = Breaker(f"{self.name} at {base_url}", timeout_s=timeout, cool_down_s=cool_down_s)

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.breaker.check()
        share = server_share(str(self.base_url))
        mark = share.start()
        try:
            response = await self._answer(req)
        except ModelError as exc:
            compute_s = share.stop(mark)
            self.breaker.record(exc)
            if exc.usage is not None:  # the server answered, unreadably: its machine time is what the answer cost
                exc.usage.compute_s = compute_s
            raise
        except BaseException:
            share.stop(mark)
            raise
        response.usage.compute_s = share.stop(mark)
        self.breaker.record(None)
        return response

    async def _answer(self, req: ModelRequest) -> ModelResponse:
        """The server's answer; asked again without logprobs, once, where it refuses them."""
        asked = self.logprobs
        try:
            return await super().request(req)
        except ModelError as exc:
            if not (asked and refuses_logprobs(exc)):
                raise
            if self.logprobs:  # concurrent calls may all have been refused: one warning
                self.logprobs = False
                log.warning(
                    "student server %s refuses logprobs (%s): its answers go on without a confidence, so no "
                    "confidence floor can hold them; for llama-cpp-python's server leave --logits_all at its "
                    "default (true)",
                    self.base_url,
                    exc,
                )
            return await super().request(req)

    def params(self, req: ModelRequest) -> dict[str, Any]:
        params = super().params(req)
        params["temperature"] = 0.0  # the student answers greedily, as in evaluation
        if self.logprobs:  # llama-cpp-python sends none without top_logprobs
            params["logprobs"], params["top_logprobs"] = True, 1
        if self.response_format == "json_object" and req.output_schema is not None:
            params["response_format"] = {"type": "json_object", "schema": req.output_schema}
        return params

    def parse(self, completion: Any, req: ModelRequest) -> ModelResponse:
        response = super().parse(completion, req)
        response.confidence = confidence_of(completion)
        response.raw = {**(response.raw or {}), "served_at": self.base_url, "engine": "openai-compatible"}
        return response


class Breaker:
    """Skips a server that keeps failing: after `FAILURES_TO_SKIP` calls in a row found it down, calls fail at once
    for `cool_down_s` (a warning says so the first time), then it is tried again; one answer closes it."""

    def __init__(
        self, server: str, *, timeout_s: float, cool_down_s: float, clock: Callable[[], float] = time.monotonic
    ):
        self.server, self.timeout_s, self.cool_down_s, self.clock = server, timeout_s, cool_down_s, clock
        self.failures = 0
        self.skip_until = 0.0
        self.warned = False  # told that the server is down, since it last answered
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise ModelError, at once, while calls skip the server."""
        left = self.skip_until - self.clock()
        if left > 0:
            raise ModelError(
                f"{self.server}: skipped for {left:.0f} s more: the last {self.failures} calls found it down "
                f"(no answer in {self.timeout_s:g} s, or no connection); start the server, or serve the student "
                f"elsewhere (`protege students serve ID ...`)"
            )

    def record(self, error: ModelError | None) -> None:
        """A call's outcome: None (an answer) or its error (only a server that is down counts)."""
        with self._lock:
            if error is None or not is_down(error):
                if self.warned:
                    log.info("%s answers again", self.server)
                self.failures, self.warned = 0, False
                return
            self.failures += 1
            if self.failures < FAILURES_TO_SKIP:
                return
            self.skip_until = self.clock() + self.cool_down_s
            if not self.warned:
                self.warned = True
                log.warning(
                    "%s: %d calls in a row found it down (last: %s); its calls go straight to the next tier for %g s "
                    "at a time until it answers (raise the timeout with `protege students serve ID HOST --timeout "
                    "S` if its answers are just slow)",
                    self.server,
                    self.failures,
                    error,
                    self.cool_down_s,
                )


def is_down(error: ModelError) -> bool:
    """A server that did not answer: timed out, or unreachable (no HTTP status, nothing billed)."""
    if isinstance(error, ModelTimeout):
        return True
    return error.status is None and error.usage is None and not isinstance(error, BadResponse)


def refuses_logprobs(error: ModelError) -> bool:
    """The server refused the request for its logprobs (llama-cpp-python with logits_all=False: HTTP 500 "logprobs
    is not supported for models created with logits_all=False")."""
    return error.status is not None and error.status >= 400 and "logprobs" in str(error).lower()


def check_timeout(timeout: float) -> float:
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise UserError(
            f"timeout {timeout!r} is not a number of seconds above 0; a student answers in seconds (default "
            f"{DEFAULT_TIMEOUT_S:g})"
        )
    return float(timeout)


def confidence_of(completion: Any) -> float | None:
    """Mean probability of the chosen tokens from `choices[0].logprobs`, or None when the server sent none."""
    logprobs = getattr(completion.choices[0], "logprobs", None) if completion.choices else None
    tokens = getattr(logprobs, "content", None) or []
    values = [t.logprob for t in tokens if t.logprob is not None and math.isfinite(t.logprob)]
    if not values:
        return None
    return sum(math.exp(v) for v in values) / len(values)
