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


def test_a_students_system_turn_in_each_style():
    """ "summary" keeps the instructions' first paragraph and any tool list; "instructions" keeps them whole."""
    import pytest

    from protege.agents.models.base import ToolSpec
    from protege.agents.models.chat_format import (
        student_messages,
        student_system,
        trained_prompt,
        with_student_prompt,
    )
    from protege.errors import UserError

    doc = "Extract the order.\n\nRules:\n- a rule\n\nMore rules."
    tool = ToolSpec(name="lookup", description="Find a customer.", parameters={"type": "object"})
    assert student_system(doc, "summary") == "Extract the order."
    assert student_system(doc, "instructions") == doc
    with_tools = student_messages(doc, {"q": 1}, [tool], "summary")[0].content
    assert with_tools.startswith("Extract the order.\n\nTools (call one with") and '"name":"lookup"' in with_tools
    assert student_messages(doc, {"q": 1}, [tool])[0].content.startswith(doc + "\n\nTools")
    rows = [{"messages": [{"role": "system", "content": doc}, {"role": "user", "content": "{}"}], "output": {}}]
    assert with_student_prompt(rows, "summary")[0]["messages"][0]["content"] == "Extract the order."
    assert rows[0]["messages"][0]["content"] == doc and with_student_prompt(rows, "instructions") is rows
    assert trained_prompt(None) == trained_prompt({"epochs": 4}) == "instructions"  # students from before
    assert trained_prompt({"prompt": "summary"}) == "summary"
    with pytest.raises(UserError, match="student prompt 'short'"):
        student_system(doc, "short")
