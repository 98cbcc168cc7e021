"""The TUI's skill preview shows an induced skill version's field programs: per field, the program, whether it
is served, held-out accuracy and refusals; a skill without programs shows none."""

from __future__ import annotations

from programs.test_induce import _examples
from protege.programs import build
from protege.programs.service import save_programs
from protege.store import Store
from protege.tui.screens.skills import _as_markdown


def test_skill_preview_lists_field_programs(sqlite_url):
    store = Store(sqlite_url)
    try:
        programs = build("changelog", _examples(120), ["package", "changes", "summary"], promote_at=0.95)
        row = save_programs(store, "changelog", programs, instructions="Read a changelog entry.", source_trace_ids=[])
        text = _as_markdown(row.text, row.files)
        assert "Field programs: 2 of 3 fields served" in text
        assert "| changes | count of" in text and "| summary | none | no |" in text and "100.0%" in text
        assert "Field programs" not in _as_markdown(row.text, {})
    finally:
        store.close()
