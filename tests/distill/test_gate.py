"""The student's confidence gate: calibration on eval answers, and the promotion verdict it feeds."""

from __future__ import annotations

import pytest

from protege.distill.gate import MIN_SERVED, calibrate, gated, stored_gate
from protege.distill.pipeline import promotion_verdict
from protege.tasks import Policy

# 40 eval answers: the 30 most confident are right but one, the 10 least confident are all wrong
CONFIDENCES = [1.0 - i / 100 for i in range(40)]
SCORES = [1.0] * 29 + [0.0] + [0.0] * 10


def test_the_floor_keeps_the_most_answers_that_still_reach_the_target():
    """Retention 0.725 ungated; a floor at the 30th answer keeps 75% and escalates the 10 sure misses: 0.975.
    (At target 0.95 the floor goes one lower: the 31st answer is wrong and 0.95 still holds.)"""
    gate = calibrate(CONFIDENCES, SCORES, target=0.975)
    assert gate.model_dump() == {"min_confidence": pytest.approx(0.71), "coverage": 0.75, "retention": 0.975,
                                 "kept_quality": pytest.approx(29 / 30)}
    assert gated(CONFIDENCES, SCORES, gate.min_confidence) == gate  # measuring the floor gives the same figures
    assert calibrate(CONFIDENCES, SCORES, target=0.95).coverage == 31 / 40
    strict = calibrate(CONFIDENCES, SCORES, target=1.0)
    assert strict.coverage == 29 / 40 and strict.retention == 1.0  # stop just above the confident miss


def test_ties_missing_confidences_and_hopeless_students():
    """A floor keeps all answers of equal confidence; a missing confidence passes (as in the cascade); a student
    that needs a floor keeping fewer than MIN_SERVED answers gets none."""
    tied = calibrate([0.9] * 20 + [0.5] * 20, [1.0] * 19 + [0.0] + [0.0] * 20, target=0.9)
    assert tied.min_confidence == 0.9 and tied.coverage == 0.5
    assert gated([None, 0.2], [1.0, 0.0], floor=0.5).coverage == 0.5
    assert calibrate([0.9] * 40, [0.0] * 40, target=0.95) is None
    few = [1.0] * (MIN_SERVED - 1) + [0.5] * 40
    assert calibrate(few, [1.0] * (MIN_SERVED - 1) + [0.0] * 40, target=0.95) is None


def test_promotion_verdict_plain_gated_refused_and_policy_floor():
    """Retention passing promotes with no gate; failing, a gate that keeps ≥ min_coverage promotes and is stored;
    one that keeps less does not; a floor set in the policy is measured instead of calibrated."""
    good = {"retention": 0.97, "confidences": CONFIDENCES, "scores": [1.0] * 40}
    assert promotion_verdict(good, Policy())[0] and "gate" not in good
    weak = {"retention": 0.725, "confidences": CONFIDENCES, "scores": SCORES}
    passed, reason = promotion_verdict(weak, Policy(promote_at=0.975))
    assert passed and "keeps 75%" in reason and stored_gate(weak).min_confidence == pytest.approx(0.71)
    picky = {"retention": 0.725, "confidences": CONFIDENCES, "scores": SCORES}
    passed, reason = promotion_verdict(picky, Policy(promote_at=0.975, min_coverage=0.8))
    assert not passed and "Policy.min_coverage 80%" in reason and stored_gate(picky) is None
    fixed = {"retention": 0.725, "confidences": CONFIDENCES, "scores": SCORES}
    passed, reason = promotion_verdict(fixed, Policy(min_confidence=0.5))
    assert not passed and "keeps 100%" in reason and stored_gate(fixed) is None
