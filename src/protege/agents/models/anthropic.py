"""Claude through the official `anthropic` SDK (Messages API, non-streaming).

Structured output is a forced final tool (FINAL_TOOL) whose input schema is the answer's schema; its input comes
back as JSON in `ModelResponse.text`. System messages marked `cache=True` become cached system blocks, so a
skill replayed on every call is read from Anthropic's prompt cache at a tenth of the input price.
"""

from __future__ import annotations

import json
import os
from typing import Any

import anthropic
from anthropic.types import Message as SDKMessage

from protege.agents.models.base import FINAL_TOOL, Message, ModelRequest, ModelResponse, ToolCall, Usage
from protege.agents.models.sdk_support import LoopBoundClient, map_sdk_error
from protege.agents.tokens import estimate_usage
from protege.errors import BadResponse, MissingKeyError, UserError

ENV_KEY = "ANTHROPIC_API_KEY"
FINAL_TOOL_DESCRIPTION = "Give your final answer. Call this once, when you are done, with the complete answer."


class AnthropicModel:
    """`anthropic:<model>` — e.g. AnthropicModel("claude-haiku-4-5"); the key comes from ANTHROPIC_API_KEY."""

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
        self.model_id = name.removeprefix("anthropic:")
        self.name = f"anthropic:{self.model_id}"
        self.price_as: str | None = None
        self.max_retries = max_retries
        key = api_key or os.environ.get(ENV_KEY)
        if not key:
            raise MissingKeyError("Anthropic", ENV_KEY)
        self._secret = key
        self._client = LoopBoundClient(
            lambda: anthropic.AsyncAnthropic(api_key=key, base_url=base_url, max_retries=max_retries, timeout=timeout)
        )

    async def request(self, req: ModelRequest) -> ModelResponse:
        try:
            message = await self._client.get().messages.create(**self.params(req))
        except (anthropic.AnthropicError, json.JSONDecodeError) as exc:
            raise map_sdk_error(
                exc, model=self.name, secret=self._secret, retries=self.max_retries, env_var=ENV_KEY, req=req
            ) from None
        return self.parse(message, req)

    async def aclose(self) -> None:
        await self._client.aclose()

    def params(self, req: ModelRequest) -> dict[str, Any]:
        """The Messages API arguments for a request."""
        # No temperature: the SDK dropped it from create() and Claude models after Opus 4.6 reject it (HTTP 400);
        # forced tool use with a schema keeps structured answers stable without it.
        params: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": req.max_tokens,
            "messages": transcript(req.messages),
        }
        system = [_system_block(m) for m in req.messages if m.role == "system" and m.content]
        if system:
            params["system"] = system
        tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in req.tools]
        if req.output_schema is not None:
            tools.append({"name": FINAL_TOOL, "description": FINAL_TOOL_DESCRIPTION, "input_schema": req.output_schema})
            params["tool_choice"] = {"type": "any"} if req.tools else {"type": "tool", "name": FINAL_TOOL}
        if tools:
            params["tools"] = tools
        return params

    def parse(self, message: Any, req: ModelRequest) -> ModelResponse:
        """A ModelResponse from the SDK's Message; an unreadable answer raises BadResponse carrying what it was
        billed. An answer that did not finish (max_tokens, refusal, ...) comes back with its stop reason: the
        cascade does not serve it (ModelResponse.cut_short)."""
        if not isinstance(message, SDKMessage):
            raise BadResponse(
                f"{self.name}: the provider did not answer with a message: {str(message)[:200]!r}",
                model=self.name,
                body=str(message)[:2000],
                usage=estimate_usage(req, str(message)),
            )
        reported = _usage(getattr(message, "usage", None))
        try:
            # warnings=False: a tool input that is not an object (a broken answer, rejected below) is dumped as is
            raw = message.model_dump(mode="json", warnings=False)
            final, calls, texts = _read_content(message.content)
            stop = message.stop_reason
        except (AttributeError, TypeError, ValueError) as exc:
            body = _safe_dump(message)
            raise BadResponse(
                f"{self.name}: the provider's message could not be read ({exc})",
                model=self.name,
                body=body,
                usage=reported or estimate_usage(req, json.dumps(body, default=str)),
            ) from None
        text = json.dumps(final, ensure_ascii=False) if final is not None else "".join(texts)
        if reported is None:
            raw["usage_estimated"] = True  # the trace keeps the payload: say its token counts are not the provider's
        usage = reported or estimate_usage(req, text, calls)
        return ModelResponse(text=text, tool_calls=calls, usage=usage, raw=raw, model=self.name, stop_reason=stop)


def transcript(messages: list[Message]) -> list[dict[str, Any]]:
    """Non-system messages as Anthropic turns: tool calls as tool_use blocks, tool results in user turns.

    Consecutive turns of the same role are merged (tool results of one step become one user turn), since the
    API wants user and assistant turns to alternate; empty text blocks are dropped, since it rejects them.
    """
    turns: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        role, blocks = _blocks(m)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks(m: Message) -> tuple[str, list[dict[str, Any]]]:
    if m.role == "tool":
        if not m.tool_call_id:
            raise UserError(f"tool result {m.content[:80]!r} has no tool_call_id; every tool message needs one")
        return "user", [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    if m.role == "assistant":
        blocks += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls]
    return m.role, blocks


def _system_block(m: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": m.content}
    if m.cache:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def _read_content(content: list[Any]) -> tuple[Any, list[ToolCall], list[str]]:
    finals: list[Any] = []
    calls: list[ToolCall] = []
    texts: list[str] = []
    for block in content:
        if block.type == "tool_use" and block.name == FINAL_TOOL:
            finals.append(block.input)
        elif block.type == "tool_use":
            if not isinstance(block.input, dict):
                raise ValueError(f"tool {block.name!r} was called with {block.input!r}, not an object")
            calls.append(ToolCall(id=block.id, name=block.name, arguments=block.input))
        elif block.type == "text":
            texts.append(block.text)
    return _one_final(finals), calls, texts


def _one_final(finals: list[Any]) -> Any:
    """The final answer; the final tool called twice with different answers leaves no answer to pick."""
    distinct = {json.dumps(f, sort_keys=True, default=str) for f in finals}
    if len(distinct) > 1:
        raise ValueError(f"the {FINAL_TOOL} tool was called {len(finals)} times with different answers")
    return finals[0] if finals else None


def _usage(usage: Any) -> Usage | None:
    """The usage the provider reported, or None where it sent none (or none that can be read)."""
    if usage is None:
        return None
    try:
        return Usage(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cache_read_tokens=getattr(usage, "cache_read_input_tokens", None) or 0,
            cache_write_tokens=getattr(usage, "cache_creation_input_tokens", None) or 0,
        )
    except (AttributeError, TypeError, ValueError):
        return None


def _safe_dump(message: Any) -> Any:
    try:
        return message.model_dump(mode="json", warnings=False)
    except Exception:  # the payload is already known to be broken; keep what can be kept
        return str(message)[:2000]
