"""Prompt building: each task's schema is shown in its prompts, call after call (the schema text is memoised)."""

from __future__ import annotations

import json

from protege.agents.prompts import replay_messages, teacher_messages


def test_teacher_and_replay_prompts_show_each_schema_on_every_call():
    ints = {"type": "object", "properties": {"x": {"type": "integer"}}, "title": "Ints"}
    texts = {"type": "object", "properties": {"y": {"type": "string", "description": "é"}}, "title": "Texts"}
    for _ in range(2):
        for schema in (ints, texts):
            shown = json.dumps(schema, indent=1, ensure_ascii=False)
            other = json.dumps(texts if schema is ints else ints, indent=1, ensure_ascii=False)
            teacher = teacher_messages("t", "Do it.", schema, {"q": 1})[0].content
            replay = replay_messages("t", "Do it.", schema, {"q": 1}, "A skill.")[0].content
            assert shown in teacher and shown in replay
            assert other not in teacher and other not in replay
