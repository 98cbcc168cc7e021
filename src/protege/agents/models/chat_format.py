"""The one text format local models speak: in SFT data, in prompts and in parsing (DESIGN §5).

A student sees the task's instructions as the system turn and the input as compact JSON; it answers with
compact JSON, or calls a tool with `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. Keeping these
functions in one place is what keeps training data and serving in step.

A student's system turn comes in one of two styles (`TrainConfig.prompt`, recorded with the student): the whole
instructions, or only their first paragraph (`student_system`) — once fine-tuned, the examples carry the rules,
and a shorter prompt trains faster (docs/student.md, run S).
"""

from __future__ import annotations

import json
import re
from typing import Any

from protege.agents.models.base import Message, ToolCall, ToolSpec
from protege.errors import UserError

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.DOTALL)
TOOLS_HEADER = 'Tools (call one with <tool_call>{"name": ..., "arguments": {...}}</tool_call>):'
STUDENT_PROMPTS = ("instructions", "summary")
"""A student's system-turn styles: the task's whole instructions, or their first paragraph."""


def compact_json(obj: Any) -> str:
    """Compact, stable JSON: no spaces, unicode kept (fewer tokens for the student to read and write)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def student_messages(
    instructions: str,
    task_input: dict[str, Any],
    tools: list[ToolSpec] | None = None,
    prompt: str = "instructions",
) -> list[Message]:
    """The student's prompt: instructions (+ tool list) as system, in the style `prompt`; the input as compact
    JSON."""
    system = instructions.strip()
    if tools:
        system += "\n\n" + render_tools(tools)
    system = student_system(system, prompt)
    return [Message(role="system", content=system), Message(role="user", content=compact_json(task_input))]


def student_system(system: str, prompt: str = "instructions") -> str:
    """A student's system turn in the style `prompt`: "instructions" keeps it whole; "summary" keeps the
    instructions' first paragraph and, for a task with tools, the tool list (the student needs it to call one)."""
    if prompt not in STUDENT_PROMPTS:
        raise UserError(f"student prompt {prompt!r} is not one of {', '.join(STUDENT_PROMPTS)}")
    if prompt == "instructions":
        return system
    instructions, marker, tools = system.partition("\n\n" + TOOLS_HEADER)
    return instructions.strip().split("\n\n")[0].strip() + marker + tools


def trained_prompt(params: dict[str, Any] | None) -> str:
    """The system-turn style a student was trained with, from its recorded TrainConfig (a student from before the
    styles saw the whole instructions)."""
    return str((params or {}).get("prompt", "instructions"))


def with_student_prompt(rows: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    """Chat rows (`{"messages": [...], ...}`) with their system turn in the style `prompt` (the rows themselves
    when it is "instructions")."""
    if prompt == "instructions":
        return rows
    return [_restyled(row, prompt) for row in rows]


def _restyled(row: dict[str, Any], prompt: str) -> dict[str, Any]:
    messages = row.get("messages") or []
    if not messages or messages[0].get("role") != "system":
        return row
    system = {**messages[0], "content": student_system(messages[0].get("content") or "", prompt)}
    return {**row, "messages": [system, *messages[1:]]}


def render_answer(output: dict[str, Any]) -> str:
    """The assistant turn of a final answer."""
    return compact_json(output)


def render_tools(tools: list[ToolSpec]) -> str:
    lines = [TOOLS_HEADER]
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
