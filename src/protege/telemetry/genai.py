"""The OpenTelemetry GenAI semantic conventions as protege uses them: attribute names, and transcripts in the
conventions' message format (both ways, so spans protege writes can be read back by `import-traces`).

Names follow the conventions as of opentelemetry-semantic-conventions 0.66b2 (`gen_ai.provider.name`, which
replaced `gen_ai.system`). Messages are `{"role", "parts": [{"type": "text", "content"}, {"type": "tool_call",
"id", "name", "arguments"}, {"type": "tool_call_response", "id", "result"}]}`, recorded on spans as JSON strings
(structured span attributes are not supported by the Python SDK yet, which the conventions allow).
"""

from __future__ import annotations

from typing import Any

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
OUTPUT_TYPE = "gen_ai.output.type"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ_TOKENS = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
TOOL_NAME = "gen_ai.tool.name"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
ERROR_TYPE = "error.type"

INFERENCE_OPERATIONS = ("chat", "text_completion", "generate_content")

# protege's own attributes (the `protege.` namespace)
TASK = "protege.task"
RUN_ID = "protege.run_id"
TRACE_ID = "protege.trace_id"  # the protege trace (one tier attempt), as `protege trace ID` and the TUI show it
TIER = "protege.tier"
MODEL = "protege.model"
COST_USD = "protege.cost_usd"
LATENCY_S = "protege.latency_s"
ESCALATIONS = "protege.escalations"
ATTEMPTS = "protege.attempts"
STATUS = "protege.status"
VALID = "protege.valid"
CONFIDENCE = "protege.confidence"
SKILL_VERSION = "protege.skill_version"
STUDENT_ID = "protege.student_id"

# providers the conventions name; any other "provider:" prefix is recorded as it is (custom values are allowed)
KNOWN_PROVIDERS = {"anthropic": "anthropic", "openai": "openai"}


def split_model(name: str) -> tuple[str, str]:
    """'anthropic:claude-opus-4-5' -> ('anthropic', 'claude-opus-4-5'); a name without a prefix -> ('protege', name)."""
    provider, sep, model = name.partition(":")
    if not sep or not provider or not model:
        return "protege", name
    return KNOWN_PROVIDERS.get(provider, provider), model


def join_model(provider: str | None, model: str | None) -> str | None:
    """The inverse of `split_model`: a protege "provider:model" name from span attributes."""
    if not model:
        return None
    if not provider or provider == "protege" or model.startswith(f"{provider}:"):
        return model
    return f"{provider}:{model}"


def to_genai(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """protege transcript turns (Message dicts) in the conventions' message format."""
    out = []
    for m in messages:
        parts: list[dict[str, Any]] = []
        if m.get("role") == "tool":
            parts.append({"type": "tool_call_response", "id": m.get("tool_call_id"), "result": m.get("content", "")})
        elif m.get("content"):
            parts.append({"type": "text", "content": m["content"]})
        for call in m.get("tool_calls") or []:
            parts.append(
                {
                    "type": "tool_call",
                    "id": call.get("id"),
                    "name": call.get("name"),
                    "arguments": call.get("arguments") or {},
                }
            )
        message: dict[str, Any] = {"role": m.get("role", "user"), "parts": parts}
        if m.get("role") == "tool" and m.get("name"):
            message["name"] = m["name"]
        out.append(message)
    return out


def from_genai(messages: list[Any]) -> list[dict[str, Any]]:
    """Messages in the conventions' format as OpenAI-style chat messages (what `cli.imports.convert_messages` reads).

    Raises ValueError on a message that is not an object with a role."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ValueError(f"message {i} is not an object with a role")
        parts = m.get("parts")
        if parts is None and "content" in m:  # older instrumentations wrote {"role", "content"}
            parts = [{"type": "text", "content": m["content"]}]
        texts, calls, responses = [], [], []
        for part in parts or []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("content") or ""))
            elif kind == "tool_call":
                calls.append(
                    {
                        "id": part.get("id"),
                        "type": "function",
                        "function": {"name": part.get("name"), "arguments": part.get("arguments") or {}},
                    }
                )
            elif kind == "tool_call_response":
                responses.append(part)
        if responses:  # one tool message per response part
            for r in responses:
                result = r.get("result")
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": r.get("id"),
                        "name": m.get("name"),
                        "content": result if isinstance(result, str) else _json(result),
                    }
                )
            continue
        turn: dict[str, Any] = {"role": m["role"], "content": "".join(texts)}
        if calls:
            turn["tool_calls"] = calls
        out.append(turn)
    return out


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
