"""The student's confidence gate: calibration on eval answers, its cross-fitted (held-out) figures, and the
promotion verdict it feeds."""

from __future__ import annotations

import random

import pytest

from protege.distill.gate import MIN_SERVED, calibrate, cross_fitted, fold_assignment, gated, stored_gate
from protege.distill.pipeline import promotion_verdict
from protege.tasks import Policy

# 40 eval answers: the 30 most confident are right but one, the 10 least confident are all wrong
CONFIDENCES = [1.0 - i / 100 for i in range(40)]
SCORES = [1.0] * 29 + [0.0] + [0.0] * 10


def test_the_floor_keeps_the_most_answers_that_still_reach_the_target():
    """Retention 0.725 ungated; a floor at the 30th answer keeps 75% and escalates the 10 sure misses: 0.975.
    (At target 0.95 the floor goes one lower: the 31st answer is wrong and 0.95 still holds.)"""
    gate = calibrate(CONFIDENCES, SCORES, target=0.975)
    assert gate.model_dump() == {
        "min_confidence": pytest.approx(0.71),
        "coverage": 0.75,
        "retention": 0.975,
        "kept_quality": pytest.approx(29 / 30),
        "measured_on": "in-sample",
        "in_sample": None,
    }
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
    assert passed and "keeps 70%" in reason and stored_gate(weak).min_confidence == pytest.approx(0.71)
    assert "cross-fitted, 5 folds" in reason and "0.975 on the answers the floor was chosen on" in reason
    picky = {"retention": 0.725, "confidences": CONFIDENCES, "scores": SCORES}
    passed, reason = promotion_verdict(picky, Policy(promote_at=0.975, min_coverage=0.8))
    assert not passed and "Policy.min_coverage 80%" in reason and stored_gate(picky) is None
    fixed = {"retention": 0.725, "confidences": CONFIDENCES, "scores": SCORES}
    passed, reason = promotion_verdict(fixed, Policy(min_confidence=0.5))
    assert not passed and "keeps 100%" in reason and stored_gate(fixed) is None


# 60 eval answers whose confidence says nothing about their quality (80% right, at random)
_NOISE = random.Random(1)
NOISE_CONFIDENCES = [_NOISE.random() for _ in range(60)]
NOISE_SCORES = [1.0 if _NOISE.random() < 0.8 else 0.0 for _ in range(60)]


def test_folds_are_disjoint_balanced_and_seeded():
    """Every answer is in exactly one fold, folds differ in size by one at most, the same seed deals the same."""
    folds = fold_assignment(23, 5, seed=3)
    sizes = sorted(folds.count(f) for f in range(5))
    assert len(folds) == 23 and sizes == [4, 4, 5, 5, 5]
    assert fold_assignment(23, 5, seed=3) == folds and fold_assignment(23, 5, seed=4) != folds


def test_cross_fitted_figures_come_from_floors_chosen_without_the_answers_they_gate():
    """Each fold is gated by the floor calibrated on the other folds; the serving floor is calibrated on all;
    the in-sample figures are kept beside, named as such."""
    gate = cross_fitted(NOISE_CONFIDENCES, NOISE_SCORES, target=0.9, folds=5, seed=0)
    fold_of = fold_assignment(60, 5, seed=0)
    kept = []
    for fold in range(5):
        rest = [i for i in range(60) if fold_of[i] != fold]
        floor = calibrate([NOISE_CONFIDENCES[i] for i in rest], [NOISE_SCORES[i] for i in rest], target=0.9)
        kept += [
            NOISE_SCORES[i]
            for i in range(60)
            if fold_of[i] == fold and floor is not None and NOISE_CONFIDENCES[i] >= floor.min_confidence
        ]
    assert gate.coverage == len(kept) / 60 and gate.retention == pytest.approx((sum(kept) + 60 - len(kept)) / 60)
    in_sample = calibrate(NOISE_CONFIDENCES, NOISE_SCORES, target=0.9)
    assert gate.min_confidence == in_sample.min_confidence and gate.measured_on == "cross-fitted, 5 folds"
    assert gate.in_sample.retention == in_sample.retention and gate.in_sample.coverage == in_sample.coverage


def test_a_floor_fitted_to_noise_is_not_promoted():
    """Confidence that says nothing: in sample a floor reaches 0.9 (it picks the lucky answers), held out it
    does not — so the verdict refuses the student, where judging the floor on its own answers would not."""
    assert calibrate(NOISE_CONFIDENCES, NOISE_SCORES, target=0.9).retention >= 0.9
    assert cross_fitted(NOISE_CONFIDENCES, NOISE_SCORES, target=0.9).retention < 0.9
    metrics = {"retention": sum(NOISE_SCORES) / 60, "confidences": NOISE_CONFIDENCES, "scores": NOISE_SCORES}
    passed, reason = promotion_verdict(metrics, Policy(promote_at=0.9, min_coverage=0.1))
    assert not passed and "cross-fitted" in reason and "gate" not in metrics


def test_informative_confidence_holds_up_held_out():
    """Where confidence does separate right from wrong, the held-out figures are close to the in-sample ones and
    the stored gate says which figure is which."""
    metrics = {"retention": 0.725, "confidences": CONFIDENCES, "scores": SCORES}
    assert promotion_verdict(metrics, Policy(promote_at=0.975))[0]
    gate = stored_gate(metrics)
    assert gate.measured_on == "cross-fitted, 5 folds" and gate.retention == 1.0 and gate.coverage == 0.7
    assert (gate.in_sample.coverage, gate.in_sample.retention) == (0.75, 0.975)
