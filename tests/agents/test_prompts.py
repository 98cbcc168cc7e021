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


def test_the_replay_prompt_carries_the_skills_name_description_and_body_only():
    """The replay prompt carried the whole SKILL.md: a 300,000-character `metadata.notes`, and protege's own trace
    ids and author model, on every call. A replaying model is shown the name, description and body."""
    from protege.skills.skill import Skill

    skill = Skill(
        name="shout",
        description="Upper-cases the text. Use for the shout task.",
        body="# Procedure\n\nUpper-case it.\n",
        license="MIT",
        metadata={"notes": "n" * 300_000, "traces": "t1,t2", "model": "anthropic:claude-opus-4-5"},
    )
    from protege.skills.skill import replay_text

    block = replay_messages("shout", "Do it.", {}, {"q": 1}, replay_text(skill.render()))[1].content
    assert "name: shout\ndescription: Upper-cases the text. Use for the shout task.\n---\n\n# Procedure\n" in block
    assert len(block) < 300 and "t1,t2" not in block and "claude" not in block and "MIT" not in block
    plain = replay_messages("t", "Do it.", {}, {"q": 1}, replay_text("Plain text, no frontmatter."))[1].content
    assert plain.endswith(":\n\nPlain text, no frontmatter.\n")  # not a SKILL.md: shown as it is
