"""What a call returns: `RunResult`, and one `Attempt` per tier tried."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

TIERS = ("program", "student", "replay", "teacher")
"""Cheapest first: the order calls escalate in."""


def gate_confidence(confidence: float | None, field_confidences: Mapping[str, float] | None) -> float | None:
    """The figure a student's confidence gate compares with its floor: its least-sure field's confidence, so one
    unsure field escalates the call; the whole answer's confidence for a model that gives none per field."""
    return min(field_confidences.values()) if field_confidences else confidence


def least_sure_field(field_confidences: Mapping[str, float] | None) -> str | None:
    """The field whose confidence the gate went by (None when the model gives none per field)."""
    return min(field_confidences, key=field_confidences.__getitem__) if field_confidences else None


def describe_field_confidences(field_confidences: Mapping[str, float] | None, shown: int = 4) -> str:
    """For people: the least-sure fields first, e.g. "quantity 0.612 (least sure) · city 0.940 · +6 more"."""
    if not field_confidences:
        return ""
    ranked = sorted(field_confidences.items(), key=lambda kv: kv[1])
    parts = [f"{name} {value:.3f}" + (" (least sure)" if i == 0 else "") for i, (name, value) in enumerate(ranked)]
    more = len(parts) - shown
    return " · ".join(parts[:shown]) + (f" · +{more} more" if more > 0 else "")


class Attempt(BaseModel):
    """One tier's try at a call, as recorded in its trace."""

    tier: str
    model: str
    valid: bool
    errors: list[str] = Field(default_factory=list)
    text: str = ""
    cost_usd: float = 0.0
    latency_s: float = 0.0
    trace_id: str
    skill_version: int | None = None
    student_id: str | None = None
    confidence: float | None = Field(default=None, description="the answer's mean token probability (local models)")
    field_confidences: dict[str, float] | None = Field(
        default=None, description="each output field the model chose → the probability of its least-sure token"
    )
    program_fields: list[str] = Field(default_factory=list)  # output fields a verified program decided
    _raised: BaseException | None = PrivateAttr(default=None)  # what its model raised (AllTiersFailed's cause)

    @property
    def raised(self) -> BaseException | None:
        """What this attempt's model raised (None: it answered, rightly or not)."""
        return self._raised

    @property
    def gate_confidence(self) -> float | None:
        """What the confidence gate went by: the least-sure field's confidence, else `confidence`."""
        return gate_confidence(self.confidence, self.field_confidences)


class RunResult(BaseModel):
    """A served call: the parsed output, who served it, what it cost, and every attempt on the way."""

    model_config = {"arbitrary_types_allowed": True}

    output: Any
    tier: str
    model: str
    cost_usd: float
    latency_s: float
    run_id: str
    trace_ids: list[str]
    attempts: list[Attempt]

    @property
    def program_fields(self) -> list[str]:
        """The output fields that came from a verified field program (not from a model)."""
        return list(self.attempts[-1].program_fields) if self.attempts else []

    @property
    def escalated(self) -> bool:
        return len(self.attempts) > 1

    @property
    def confidence(self) -> float | None:
        """The serving attempt's confidence (local models; None elsewhere)."""
        return self.attempts[-1].confidence if self.attempts else None

    @property
    def field_confidences(self) -> dict[str, float] | None:
        """The serving attempt's per-field confidences: field → probability of its least-sure token."""
        return self.attempts[-1].field_confidences if self.attempts else None
