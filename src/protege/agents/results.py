"""What a call returns: `RunResult`, and one `Attempt` per tier tried."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

TIERS = ("program", "student", "replay", "teacher")
"""Cheapest first: the order calls escalate in."""


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
    confidence: float | None = None
    program_fields: list[str] = Field(default_factory=list)  # output fields a verified program decided


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
