"""A student served by an OpenAI-compatible server: vLLM, llama.cpp's server, Ollama, TGI.

The student tier sends the prompt it was trained on (instructions as the system turn, the input as compact JSON;
the server applies the model's own chat template) with `response_format` carrying the output's JSON schema, at
temperature 0, and asks for `logprobs`. The confidence is the mean probability of the answer's tokens. Servers
report the model's own probability of every token, the schema's keys and punctuation included (the torch engine
leaves text the grammar forces out of its mean), so the scale differs from the torch engine's and a gate floor
calibrated there does not carry over as is. A server that returns no logprobs gives no confidence, so the
student's confidence gate cannot apply there (the answer is still validated, and an invalid one escalates).
A server that is down fails fast (no retries, a short timeout) so the call escalates instead of waiting. Its
calls are priced as machine time (wall time x `local_cost_per_hour`): the server is hardware you run, not a
metered API.
"""

from __future__ import annotations

import math
import time
from typing import Any

from protege.agents.models.base import ModelRequest, ModelResponse
from protege.agents.models.openai import OpenAIModel
from protege.errors import ModelError, UserError

RESPONSE_FORMATS = ("json_schema", "json_object")
"""How the schema is sent: OpenAI's `json_schema` (vLLM, llama.cpp's llama-server, Ollama), or `json_object` with
a `schema` beside it (llama-cpp-python's server, which rejects `json_schema`)."""


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
        timeout: float = 30.0,
        response_format: str = "json_schema",
    ):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise UserError(
                f"a hosted student needs the server's base_url (e.g. 'http://127.0.0.1:8000/v1'), got {base_url!r}"
            )
        if response_format not in RESPONSE_FORMATS:
            raise UserError(f"response_format {response_format!r} is not one of {', '.join(RESPONSE_FORMATS)}")
        super().__init__(name, api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout)
        self.response_format = response_format
        self.student_id = student_id
        self.price_as = f"local:{student_id}"

    async def request(self, req: ModelRequest) -> ModelResponse:
        started = time.perf_counter()
        try:
            response = await super().request(req)
        except ModelError as exc:
            if exc.usage is not None:  # the server answered, unreadably: its machine time is what the answer cost
                exc.usage.compute_s = time.perf_counter() - started
            raise
        response.usage.compute_s = time.perf_counter() - started
        return response

    def params(self, req: ModelRequest) -> dict[str, Any]:
        params = super().params(req)
        params["temperature"] = 0.0  # the student answers greedily, as in evaluation
        params["logprobs"], params["top_logprobs"] = True, 1  # llama-cpp-python sends none without top_logprobs
        if self.response_format == "json_object" and req.output_schema is not None:
            params["response_format"] = {"type": "json_object", "schema": req.output_schema}
        return params

    def parse(self, completion: Any, req: ModelRequest) -> ModelResponse:
        response = super().parse(completion, req)
        response.confidence = confidence_of(completion)
        response.raw = {**(response.raw or {}), "served_at": self.base_url, "engine": "openai-compatible"}
        return response


def confidence_of(completion: Any) -> float | None:
    """Mean probability of the chosen tokens from `choices[0].logprobs`, or None when the server sent none."""
    logprobs = getattr(completion.choices[0], "logprobs", None) if completion.choices else None
    tokens = getattr(logprobs, "content", None) or []
    values = [t.logprob for t in tokens if t.logprob is not None and math.isfinite(t.logprob)]
    if not values:
        return None
    return sum(math.exp(v) for v in values) / len(values)
