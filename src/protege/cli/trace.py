"""`protege trace ID`: one attempt as a transcript — header, input, every turn (tool calls and results), the
output and the validation errors, and the reviewers' labels."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group
from rich.json import JSON
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from protege.agents.results import describe_field_confidences
from protege.cli.output import console, secs, usd, when

SYSTEM_LINES = 12  # a system prompt is long and the same on every trace: show its head unless --full
TURN_CHARS = 4000


def render_trace(row: Any, labels: list[Any], *, full: bool = False) -> None:
    out = console()
    out.print(_header(row))
    out.print(Panel(_json(row.input), title="input", title_align="left", border_style="cyan"))
    for message in row.messages or []:
        out.print(_turn(message, full=full))
    if row.output is not None:
        out.print(Panel(_json(row.output), title="output", title_align="left", border_style="green"))
    elif row.output_text:
        out.print(
            Panel(
                Text(_clip(row.output_text, full)),
                title="answer text (not a valid output)",
                title_align="left",
                border_style="yellow",
            )
        )
    if row.errors:
        errors = "\n".join(f"• {escape(str(e))}" for e in row.errors)
        out.print(Panel(errors, title="validation errors", title_align="left", border_style="red"))
    for label in labels:
        colour = "green" if label.verdict == "good" else "red"
        note = f" — {escape(label.note)}" if label.note else ""
        by = escape(label.reviewer or "?")
        out.print(f"[{colour}]label {label.verdict}[/] by {by} at {when(label.created_at, seconds=True)}{note}")


def _header(row: Any) -> Group:
    verdict = "[green]valid[/]" if row.valid else "[red]invalid[/]"
    lines = [
        f"[bold]trace {row.id}[/]  {verdict}",
        f"task [bold]{escape(row.task_name)}[/] v{row.task_version} · tier [bold]{row.tier}[/] · model "
        f"{escape(row.model or '—')}" + (" · [magenta]shadow[/]" if row.shadow else ""),
        f"run {row.run_id or '—'} · attempt {row.attempt} · skill "
        f"{'v' + str(row.skill_version) if row.skill_version is not None else '—'} · student {row.student_id or '—'}",
        f"tokens in {row.input_tokens:,} / out {row.output_tokens:,} (cache read {row.cache_read_tokens:,}, write "
        f"{row.cache_write_tokens:,}) · cost {usd(row.cost_usd)} · latency {secs(row.latency_s)}"
        + (f" · confidence {row.confidence:.3f}" if row.confidence is not None else "")
        + f" · {when(row.created_at, seconds=True)}",
    ]
    if row.field_confidences:
        lines.append(f"field confidence: {escape(describe_field_confidences(row.field_confidences, shown=8))}")
    return Group(*[Text.from_markup(line) for line in lines])


def _turn(message: dict, *, full: bool) -> Panel:
    role = message.get("role", "?")
    content = message.get("content") or ""
    parts: list[Any] = []
    if content:
        if role == "system" and not full:
            lines = content.splitlines()
            shown = "\n".join(lines[:SYSTEM_LINES])
            more = len(lines) - SYSTEM_LINES
            content = shown + (f"\n… {more} more lines (--full shows them)" if more > 0 else "")
        parts.append(_maybe_json(_clip(content, full)))
    for call in message.get("tool_calls") or []:
        args = json.dumps(call.get("arguments", {}), ensure_ascii=False)
        parts.append(
            Text.from_markup(
                f"[bold magenta]→ call[/] {escape(call.get('name', '?'))}({escape(args)})"
                f"  [dim]{escape(call.get('id', ''))}[/]"
            )
        )
    title = role
    if role == "tool":
        title = f"tool result: {message.get('name') or '?'}  [dim]{message.get('tool_call_id') or ''}[/]"
    style = {"system": "dim", "user": "blue", "assistant": "white", "tool": "magenta"}.get(role, "white")
    return Panel(
        Group(*parts) if parts else Text("(empty)", style="dim"), title=title, title_align="left", border_style=style
    )


def _json(value: Any) -> Any:
    return _wrapped(json.dumps(value, ensure_ascii=False, default=str)) if value is not None else Text("—")


def _maybe_json(text: str) -> Any:
    stripped = text.strip()
    if stripped[:1] in "{[":
        try:
            json.loads(stripped)
            return _wrapped(stripped)
        except ValueError:
            pass
    return Text(text)


def _wrapped(text: str) -> JSON:
    """Highlighted JSON whose long lines wrap: rich cuts them at the panel's edge (an email body mid-SKU)."""
    rendered = JSON(text)
    rendered.text.no_wrap, rendered.text.overflow = False, "fold"
    return rendered


def _clip(text: str, full: bool) -> str:
    if full or len(text) <= TURN_CHARS:
        return text
    return text[:TURN_CHARS] + f"\n… {len(text) - TURN_CHARS:,} more characters (--full shows them)"
