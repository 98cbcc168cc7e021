"""The student's confidence gate: which of its answers it keeps, and which escalate to the teacher.

A student whose answers are not all good enough can still serve the calls it is sure of. From the eval split —
each answer's confidence (its least-sure field's, see `protege.agents.results.gate_confidence`) and its score
against the teacher — `calibrate` finds the lowest confidence floor at which the student, with every answer under
the floor escalated (and so answered as the teacher would), keeps `target` retention end to end; the floor is then
stored with the student and applied on every call (`Policy.min_confidence`, when set, overrides it).

A floor chosen on some answers flatters itself on those same answers. `cross_fitted` therefore reports figures the
floor was not tuned on: the eval answers are dealt into folds, each fold is gated by a floor calibrated on the
other folds, and coverage and retention are counted over all folds together. The floor that serves is calibrated
on every eval answer; its in-sample figures are kept beside the held-out ones, named as such.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from pydantic import BaseModel, Field

MIN_SERVED = 10  # fewer kept answers than this say too little about the floor
FOLDS = 5  # cross-fitting folds: each floor is calibrated on 80% of the eval answers


class GateFigures(BaseModel):
    """What a gate did on a set of answers."""

    coverage: float = Field(description="share of answers the student keeps")
    retention: float = Field(description="end-to-end retention: kept answers' scores, escalated ones as the teacher's")
    kept_quality: float = Field(description="mean score of the answers the student keeps")


class Gate(GateFigures):
    """A confidence floor and what it did on the eval split. `coverage`, `retention` and `kept_quality` are figures
    on answers the floor was not chosen on whenever `measured_on` says so; `in_sample` holds the flattering
    figures on the answers it was chosen on."""

    min_confidence: float = Field(description="student answers below this confidence escalate")
    measured_on: str = Field(
        default="in-sample",
        description=(
            "what coverage/retention were counted on: 'in-sample' (the answers the floor was chosen on), "
            "'cross-fitted, K folds' (each answer gated by a floor chosen without it), or 'fixed floor' (not tuned)"
        ),
    )
    in_sample: GateFigures | None = Field(
        default=None, description="the figures on the answers the floor was chosen on"
    )


def gated(confidences: Sequence[float | None], scores: Sequence[float], floor: float) -> Gate:
    """What a given floor does on the eval answers (a missing confidence passes, as in the cascade)."""
    kept = [s for c, s in zip(confidences, scores, strict=True) if _passes(c, floor)]
    n = len(scores)
    return Gate(
        min_confidence=floor,
        coverage=len(kept) / n,
        retention=(sum(kept) + n - len(kept)) / n,
        kept_quality=sum(kept) / len(kept) if kept else 0.0,
    )


def _passes(confidence: float | None, floor: float) -> bool:
    """Whether an answer is kept under `floor` (a missing confidence passes, as in the cascade)."""
    return confidence is None or confidence >= floor


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


def cross_fitted(
    confidences: Sequence[float | None], scores: Sequence[float], *, target: float, folds: int = FOLDS, seed: int = 0
) -> Gate | None:
    """The floor calibrated on every answer (None if none reaches `target`), with figures measured out of sample:
    each fold of answers is gated by a floor calibrated on the other folds (a fold whose floor cannot be found
    escalates all its answers, as a student without a gate would not be promoted to serve them)."""
    serving = calibrate(confidences, scores, target=target)
    if serving is None:
        return None
    n = len(scores)
    fold_of = fold_assignment(n, folds, seed)
    kept, kept_sum = 0, 0.0
    for fold in range(min(folds, n)):
        inside = [i for i in range(n) if fold_of[i] == fold]
        outside = [i for i in range(n) if fold_of[i] != fold]
        floor = calibrate([confidences[i] for i in outside], [scores[i] for i in outside], target=target)
        if floor is None:
            continue
        served = [scores[i] for i in inside if _passes(confidences[i], floor.min_confidence)]
        kept, kept_sum = kept + len(served), kept_sum + sum(served)
    return Gate(
        min_confidence=serving.min_confidence,
        coverage=kept / n,
        retention=(kept_sum + n - kept) / n,
        kept_quality=kept_sum / kept if kept else 0.0,
        measured_on=f"cross-fitted, {min(folds, n)} folds",
        in_sample=GateFigures(**serving.model_dump(include=set(GateFigures.model_fields))),
    )


def fold_assignment(n: int, folds: int, seed: int = 0) -> list[int]:
    """Answer i's fold: the answers shuffled (seeded: the same eval split always gets the same folds), then dealt
    round-robin, so folds differ in size by one at most."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold_of = [0] * n
    for rank, i in enumerate(order):
        fold_of[i] = rank % folds
    return fold_of


def stored_gate(metrics: dict | None) -> Gate | None:
    """The gate a student row was promoted with (`metrics["gate"]`), if any."""
    data = (metrics or {}).get("gate")
    return Gate.model_validate(data) if data else None
