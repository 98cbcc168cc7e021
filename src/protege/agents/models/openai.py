"""OpenAI Chat Completions through the official `openai` SDK — and any OpenAI-compatible server.

For vLLM, llama.cpp's server or Ollama, pass `base_url=` (or set OPENAI_BASE_URL); such servers usually need no
key, so a placeholder is sent. Structured output uses `response_format` with the answer's JSON schema
(non-strict, since strict mode rejects common pydantic schemas). Usage follows protege's convention:
`input_tokens` counts uncached prompt tokens, `cache_read_tokens` the cached ones.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from protege.agents.models.base import Message, ModelRequest, ModelResponse, ToolCall, Usage
from protege.agents.models.sdk_support import LoopBoundClient, map_sdk_error
from protege.agents.tokens import estimate_usage
from protege.errors import BadResponse, MissingKeyError, UserError

ENV_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
PLACEHOLDER_KEY = "no-key-needed"
SCHEMA_NAME = "final_answer"

# Reasoning models take only their default temperature and count max_completion_tokens.
_REASONING = re.compile(r"^(o\d|gpt-5)")


class OpenAIModel:
    """`openai:<model>` — e.g. OpenAIModel("gpt-4o-mini"), or OpenAIModel("qwen2.5", base_url="http://...:8000/v1")."""

    writes_prose = True

    def __init__(
        self,
        name: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        max_retries: int = 2,
        timeout: float = 60.0,
    ):
        self.model_id = name.removeprefix("openai:")
        self.name = f"openai:{self.model_id}"
        self.price_as: str | None = None
        self.max_retries = max_retries
        self.base_url = base_url or os.environ.get(ENV_BASE_URL) or None
        key = api_key or os.environ.get(ENV_KEY)
        if not key:
            if not self.base_url:
                raise MissingKeyError("OpenAI", ENV_KEY)
            key = PLACEHOLDER_KEY
        self._secret = key if key != PLACEHOLDER_KEY else ""
        self._client = LoopBoundClient(
            lambda: openai.AsyncOpenAI(api_key=key, base_url=self.base_url, max_retries=max_retries, timeout=timeout)
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        try:
            completion = await self._client.get().chat.completions.create(**self.params(req))
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            raise map_sdk_error(
                exc, model=self.name, secret=self._secret, retries=self.max_retries, env_var=ENV_KEY, req=req
            ) from None
        return self.parse(completion, req)

    async def aclose(self) -> None:
        await self._client.aclose()

    def params(self, req: ModelRequest) -> dict[str, Any]:
        """The Chat Completions arguments for a request."""
        params: dict[str, Any] = {"model": self.model_id, "messages": [chat_message(m) for m in req.messages]}
        # OpenAI's reasoning models want max_completion_tokens; other models and compatible servers know max_tokens.
        reasoning = bool(_REASONING.match(self.model_id))
        params["max_completion_tokens" if reasoning else "max_tokens"] = req.max_tokens
        if not reasoning:
            params["temperature"] = req.temperature
        if req.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in req.tools
            ]
        if req.output_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": SCHEMA_NAME, "schema": req.output_schema, "strict": False},
            }
        return params

    def parse(self, completion: Any, req: ModelRequest) -> ModelResponse:
        """A ModelResponse from the SDK's ChatCompletion; an unreadable answer raises BadResponse carrying what it
        was billed. An answer that did not finish (length, content_filter, a refusal) comes back with its stop
        reason: the cascade does not serve it (ModelResponse.cut_short)."""
        if not isinstance(completion, ChatCompletion):
            raise BadResponse(
                f"{self.name}: the server did not answer with a chat completion: {str(completion)[:200]!r}",
                model=self.name,
                body=str(completion)[:2000],
                usage=estimate_usage(req, str(completion)),
            )
        raw = completion.model_dump(mode="json", warnings=False)  # a malformed field is read (and rejected) below
        reported = _usage(getattr(completion, "usage", None))
        try:
            choice = completion.choices[0]
            calls = [_tool_call(c) for c in choice.message.tool_calls or []]
            text = choice.message.content or ""
            stop = "refusal" if getattr(choice.message, "refusal", None) else choice.finish_reason
        except (AttributeError, IndexError, TypeError, ValueError) as exc:
            raise BadResponse(
                f"{self.name}: the server's completion could not be read ({exc})",
                model=self.name,
                body=raw,
                usage=reported or estimate_usage(req, json.dumps(raw)),
            ) from None
        if reported is None:
            raw["usage_estimated"] = True  # the trace keeps the payload: say its token counts are not the server's
        usage = reported or estimate_usage(req, text, calls)
        return ModelResponse(text=text, tool_calls=calls, usage=usage, raw=raw, model=self.name, stop_reason=stop)


def chat_message(m: Message) -> dict[str, Any]:
    """One Message as a Chat Completions message (tool calls with JSON-encoded arguments)."""
    if m.role == "tool":
        if not m.tool_call_id:
            raise UserError(f"tool result {m.content[:80]!r} has no tool_call_id; every tool message needs one")
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    if m.role == "assistant" and m.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in m.tool_calls
        ]
        return {"role": "assistant", "content": m.content or None, "tool_calls": calls}
    return {"role": m.role, "content": m.content}


def _tool_call(call: Any) -> ToolCall:
    """A tool call; arguments that are not a JSON object (a model's slip) reach the tool box as the call's error,
    which answers it so the model can retry — the rest of the answer, and what it was billed, stay usable."""
    if call.type != "function":
        raise ValueError(f"unsupported tool call type {call.type!r}")
    text = call.function.arguments or "{}"
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError as exc:
        error = f"arguments are not valid JSON: {exc}; they were {text[:200]!r}"
        return ToolCall(id=call.id, name=call.function.name, arguments_error=error)
    if not isinstance(arguments, dict):
        error = f"arguments are not a JSON object: {text[:200]!r}; send an object of the tool's parameters"
        return ToolCall(id=call.id, name=call.function.name, arguments_error=error)
    return ToolCall(id=call.id, name=call.function.name, arguments=arguments)


def _usage(usage: Any) -> Usage | None:
    """The usage the server reported, or None where it sent none (or none that can be read)."""
    if usage is None:
        return None
    try:
        details = getattr(usage, "prompt_tokens_details", None)
        cached = (getattr(details, "cached_tokens", None) or 0) if details is not None else 0
        return Usage(
            input_tokens=max(0, (usage.prompt_tokens or 0) - cached),
            output_tokens=usage.completion_tokens or 0,
            cache_read_tokens=cached,
        )
    except (AttributeError, TypeError, ValueError):
        return None
