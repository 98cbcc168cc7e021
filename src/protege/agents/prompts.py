"""Prompt building for each tier, from templates shipped as package data (agents/prompts/*.md).

- teacher: instructions + output schema (+ related skills as prior art), input as JSON;
- replay: the same plus the task's approved SKILL.md in a separate system block marked for prompt caching;
- student: instructions + compact input only (chat_format.student_messages): the skill is in the weights.
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


def _schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=1, ensure_ascii=False)


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
