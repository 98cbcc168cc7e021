"""Prompt building for each tier, from templates shipped as package data (agents/prompts/*.md).

- teacher: instructions + output schema (+ related skills as prior art), input as JSON;
- replay: the same plus the task's approved skill in a separate system block marked for prompt caching (the caller
  passes what a replaying model is shown of it: `skills.skill.replay_text`, its name, description and body);
- student: the instructions (by default only their first paragraph: `TrainConfig.prompt`) + compact input
  (chat_format.student_messages): the skill is in the weights.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from protege.agents.models.base import Message


@cache
def template(name: str) -> str:
    return resources.files("protege.agents").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")


MAX_SCHEMA_TEXTS = 256
"""Schema texts remembered; past this the memo starts over (only a process making many task specs)."""

_schema_texts: dict[int, tuple[dict[str, Any], str]] = {}  # id -> (the schema, held so the id stays its, text)


def _schema(schema: dict[str, Any]) -> str:
    """The schema as prompts show it, made once per schema object: json.dumps with an indent runs the pure-Python
    encoder (~20 µs, on every call), and a task's schema is fixed once its spec exists (its contract hash is
    taken from it)."""
    hit = _schema_texts.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    text = json.dumps(schema, indent=1, ensure_ascii=False)
    if len(_schema_texts) >= MAX_SCHEMA_TEXTS:
        _schema_texts.clear()
    _schema_texts[id(schema)] = (schema, text)
    return text


def input_message(task_input: dict[str, Any]) -> Message:
    return Message(role="user", content=json.dumps(task_input, indent=1, ensure_ascii=False))


def teacher_messages(
    name: str,
    instructions: str,
    output_schema: dict[str, Any],
    task_input: dict[str, Any],
    prior_art: list[str] | None = None,
) -> list[Message]:
    system = template("solve").format(name=name, instructions=instructions, output_schema=_schema(output_schema))
    messages = [Message(role="system", content=system)]
    if prior_art:
        skills = "\n\n---\n\n".join(prior_art)
        messages.append(Message(role="system", content=template("prior_art").format(skills=skills)))
    return [*messages, input_message(task_input)]


def replay_messages(
    name: str, instructions: str, output_schema: dict[str, Any], task_input: dict[str, Any], skill_text: str
) -> list[Message]:
    system = template("replay").format(name=name, instructions=instructions, output_schema=_schema(output_schema))
    skill = template("skill_block").format(skill=skill_text)
    # The skill block is the end of the static prefix: providers that cache prompts cache up to here.
    return [
        Message(role="system", content=system),
        Message(role="system", content=skill, cache=True),
        input_message(task_input),
    ]
