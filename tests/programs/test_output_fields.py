"""The output fields field programs are made for, read from a task's output schema: a recursive output model's
schema is a `$ref` into its `$defs` (pydantic writes no top-level `properties` then), resolved, so such a task
is not left with no fields at all."""

from __future__ import annotations

from types import SimpleNamespace

from pydantic import BaseModel

from protege.cli import programs as programs_cli
from protege.skills.program_check import output_fields


class Outline(BaseModel):
    label: str
    children: list[Outline] = []


class Flat(BaseModel):
    name: str
    count: int


def test_a_recursive_models_fields_are_found_through_its_root_ref():
    schema = Outline.model_json_schema()
    assert "properties" not in schema and output_fields(schema) == ["label", "children"]
    assert output_fields(Flat.model_json_schema()) == ["name", "count"]
    assert output_fields({}) == [] and output_fields({"$ref": "#/$defs/Missing"}) == []


def test_programs_induce_asks_for_a_recursive_models_fields(monkeypatch):
    import protege.programs.service as service

    asked = {}
    monkeypatch.setattr(service, "induce_stored", lambda store, task, fields, **kw: asked.setdefault("f", fields))
    row = SimpleNamespace(output_schema=Outline.model_json_schema(), policy={}, instructions="")
    programs_cli._induce(None, "outline", row)
    assert asked["f"] == ["label", "children"]
