"""The student's confidence gate: which of its answers it keeps, and which escalate to the teacher.

A student whose answers are not all good enough can still serve the calls it is sure of. From the eval split —
each answer's confidence and its score against the teacher — `calibrate` finds the lowest confidence floor at
which the student, with every answer under the floor escalated (and so answered as the teacher would), keeps
`target` retention end to end; the floor is then stored with the student and applied on every call
(`Policy.min_confidence`, when set, overrides it). The floor is chosen on the same answers it is measured on, so
the retention quoted is in-sample: the held-out stream is the honest check.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, Field

MIN_SERVED = 10  # fewer kept answers than this say too little about the floor


class Gate(BaseModel):
    """A confidence floor and what it did on the eval split."""

    min_confidence: float = Field(description="student answers below this confidence escalate")
    coverage: float = Field(description="share of eval answers the student keeps")
    retention: float = Field(description="end-to-end retention: kept answers' scores, escalated ones as the teacher's")
    kept_quality: float = Field(description="mean score of the answers the student keeps")


def gated(confidences: Sequence[float | None], scores: Sequence[float], floor: float) -> Gate:
    """What a given floor does on the eval answers (a missing confidence passes, as in the cascade)."""
    kept = [s for c, s in zip(confidences, scores, strict=True) if c is None or c >= floor]
    n = len(scores)
    return Gate(min_confidence=floor, coverage=len(kept) / n, retention=(sum(kept) + n - len(kept)) / n,
                kept_quality=sum(kept) / len(kept) if kept else 0.0)


def calibrate(confidences: Sequence[float | None], scores: Sequence[float], *, target: float) -> Gate | None:
    """The floor that keeps the most answers while end-to-end retention stays ≥ `target`; None if none does."""
    pairs = sorted(((1.0 if c is None else c, s) for c, s in zip(confidences, scores, strict=True)), reverse=True)
    n, kept_sum, best = len(pairs), 0.0, None
    for k, (confidence, score) in enumerate(pairs, 1):
        kept_sum += score
        if k < n and pairs[k][0] == confidence:
            continue  # a floor keeps every answer of equal confidence: only the last of a tie is a real choice
        if k >= MIN_SERVED and (kept_sum + n - k) / n >= target:
            best = (confidence, k, kept_sum)
    if best is None:
        return None
    floor, k, kept_sum = best
    return Gate(min_confidence=floor, coverage=k / n, retention=(kept_sum + n - k) / n, kept_quality=kept_sum / k)


def stored_gate(metrics: dict | None) -> Gate | None:
    """The gate a student row was promoted with (`metrics["gate"]`), if any."""
    data = (metrics or {}).get("gate")
    return Gate.model_validate(data) if data else None
