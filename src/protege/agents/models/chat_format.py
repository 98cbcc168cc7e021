"""The one text format local models speak: in SFT data, in prompts and in parsing (DESIGN §5).

A student sees the task's instructions as the system turn and the input as compact JSON; it answers with
compact JSON, or calls a tool with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. Keeping these
functions in one place is what keeps training data and serving in step.
"""

from __future__ import annotations

import json
import re
from typing import Any

from protege.agents.models.base import Message, ToolCall, ToolSpec

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)


def compact_json(obj: Any) -> str:
    """Compact, stable JSON: no spaces, unicode kept (fewer tokens for the student to read and write)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def student_messages(
    instructions: str, task_input: dict[str, Any], tools: list[ToolSpec] | None = None
) -> list[Message]:
    """The student's prompt: instructions (+ tool list) as system, the input as compact JSON."""
    system = instructions.strip()
    if tools:
        system += "\n\n" + render_tools(tools)
    return [Message(role="system", content=system), Message(role="user", content=compact_json(task_input))]


def render_answer(output: dict[str, Any]) -> str:
    """The assistant turn of a final answer."""
    return compact_json(output)


def render_tools(tools: list[ToolSpec]) -> str:
    lines = ['Tools (call one with <tool_call>{"name": ..., "arguments": {...}}</tool_call>):']
    lines += [compact_json({"name": t.name, "description": t.description, "parameters": t.parameters}) for t in tools]
    return "\n".join(lines)


def render_tool_calls(calls: list[ToolCall]) -> str:
    return "".join(f"<tool_call>{compact_json({'name': c.name, 'arguments': c.arguments})}</tool_call>" for c in calls)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Tool calls in a local model's text; malformed ones are skipped (the loop then sees a plain answer)."""
    calls = []
    for i, m in enumerate(TOOL_CALL_RE.finditer(text)):
        try:
            body = json.loads(m.group(1))
        except json.JSONDecodeError:
            continue
        if isinstance(body, dict) and isinstance(body.get("name"), str):
            arguments = body.get("arguments")
            calls.append(
                ToolCall(id=f"call_{i}", name=body["name"], arguments=arguments if isinstance(arguments, dict) else {})
            )
    return calls


def to_chat_dicts(messages: list[Message]) -> list[dict[str, str]]:
    """Messages as plain {"role", "content"} dicts for chat templates and SFT JSONL; tool turns as text."""
    out = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "content": m.content})
        elif m.role == "assistant" and m.tool_calls:
            out.append({"role": "assistant", "content": (m.content or "") + render_tool_calls(m.tool_calls)})
        else:
            out.append({"role": m.role, "content": m.content})
    return out
