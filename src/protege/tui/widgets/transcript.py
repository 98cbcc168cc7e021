"""A trace's transcript as turns: system, user, assistant (with its tool calls) and tool results."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.widgets import Static

ROLE_STYLES = {"system": "bold blue", "user": "bold cyan", "assistant": "bold magenta", "tool": "bold yellow"}


def render_transcript(messages: list[dict[str, Any]] | None) -> Text:
    """Each turn under a coloured role heading; tool calls as `→ name {args}`, tool results named by call."""
    out = Text()
    if not messages:
        return out.append("(no transcript stored)", style="dim")
    for i, msg in enumerate(messages):
        role = str(msg.get("role", "?"))
        heading = role
        if role == "tool":
            heading += f" · {msg.get('name') or ''} {msg.get('tool_call_id') or ''}".rstrip()
        if i:
            out.append("\n")
        out.append(f"▌ {heading}\n", style=ROLE_STYLES.get(role, "bold"))
        content = str(msg.get("content") or "")
        if content:
            out.append(content.rstrip("\n") + "\n")
        for call in msg.get("tool_calls") or []:
            args = json.dumps(call.get("arguments") or {}, ensure_ascii=False, sort_keys=True)
            out.append("→ ", style="yellow").append(str(call.get("name", "?")), style="bold yellow")
            out.append(f" {args}\n", style="yellow")
    return out


def render_json(value: Any) -> Text:
    """A JSON value, indented, or a dim dash when there is none."""
    if value is None:
        return Text("—", style="dim")
    return Text(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True), style="green")


class Transcript(Static):
    """The transcript of one trace; `show(messages)` replaces it."""

    def __init__(self, messages: list[dict[str, Any]] | None = None, **kwargs: Any) -> None:
        super().__init__(render_transcript(messages), **kwargs)

    def show(self, messages: list[dict[str, Any]] | None) -> None:
        self.update(render_transcript(messages))
