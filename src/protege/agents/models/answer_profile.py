"""What the training traces showed about a task's answers, stored with its student (`protege_answers.json` in the
adapter dir, beside `protege_student.json`) and applied by the answer grammar when the student decodes.

- `max_answer_tokens`: the longest training answer plus a margin; an answer that reaches it stops and is
  reported as `stop_reason="max_tokens"` — never closed into valid JSON.
- `bounds`, per path of the answer ("items", "items[]", "address.city"): `max_items`, `max_length` and
  `max_digits` (of a number's integer part; the largest seen, with a margin; reaching one reports
  `stop_reason="bound"`), `unique_items` (every trace's list
  was unique: a repeated item is refused), `copy` (every value was a substring of the call's input: only
  substrings of this call's input may be written) and `copy_edges` (the classes of character seen just before
  and after those values — a break, a word character, a joiner — so a copy cannot start or stop mid-word where
  no trace did) and `copy_trimmed` (no value began or ended with white space, so none may).
- `fields`: each top-level field's kind — copied, enum, number (read from the input), computed (a number not in
  the input), free — and the share of traces whose values were spans of the input.

The learning is `protege.distill.answer_kinds.learn_answer_profile`; this module only reads and writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

PROFILE_FILE = "protege_answers.json"
FieldKind = Literal["copied", "enum", "number", "computed", "free"]


class FieldProfile(BaseModel):
    """One top-level output field as the traces show it."""

    kind: FieldKind
    traces: int = Field(default=0, description="training traces with a value (not null, not empty) for the field")
    copy_rate: float | None = Field(default=None, description="share of those whose every value is a span of the input")


class AnswerProfile(BaseModel):
    """Bounds and field kinds learned from a student's training traces."""

    traces: int = 0
    copy_threshold: float = 0.98
    copy_constraint: bool = Field(default=True, description="decode copied fields under the input's substrings")
    longest_answer_tokens: int | None = None
    max_answer_tokens: int | None = None
    bounds: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fields: dict[str, FieldProfile] = Field(default_factory=dict)

    def kinds(self) -> dict[str, str]:
        return {name: f.kind for name, f in self.fields.items()}

    def grammar_bounds(self, *, copy: bool = True) -> dict[str, dict[str, Any]]:
        """The bounds the grammar applies; without `copy` (the switch is off) copied fields are free text."""
        if copy and self.copy_constraint:
            return self.bounds
        return {path: {k: v for k, v in b.items() if not k.startswith("copy")} for path, b in self.bounds.items()}

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / PROFILE_FILE
        path.write_text(self.model_dump_json(indent=2))
        return path


def read_profile(folder: str | Path | None) -> AnswerProfile | None:
    """The profile stored in a student's adapter dir, or None (a student trained before profiles, or a base)."""
    if folder is None:
        return None
    path = Path(folder) / PROFILE_FILE
    if not path.is_file():
        return None
    return AnswerProfile.model_validate_json(path.read_text())


def kinds_summary(kinds: dict[str, str] | None) -> str:
    """'copied 4 · enum 1 · computed 1 …' for a table cell ('–' when none were learned)."""
    if not kinds:
        return "–"
    counts: dict[str, int] = {}
    for kind in kinds.values():
        counts[kind] = counts.get(kind, 0) + 1
    order = ["copied", "number", "enum", "computed", "free"]
    return " · ".join(f"{kind} {counts[kind]}" for kind in order if kind in counts)
