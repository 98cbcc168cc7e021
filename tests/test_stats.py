"""The shadow-agreement bound the demotion rules share (protege.stats)."""

import pytest

from protege.stats import agreement_upper_bound


def test_the_window_backstops_bound_needs_evidence():
    assert agreement_upper_bound(0.8, 10) == pytest.approx(0.954, abs=1e-3)  # 8 in 10 does not rule out 0.91
    assert agreement_upper_bound(0.7, 50) == pytest.approx(0.825, abs=1e-3)  # 35 in 50 does
    assert agreement_upper_bound(0.0, 10) == pytest.approx(0.351, abs=1e-3)
    assert agreement_upper_bound(0.8, 10, z=1.645) == pytest.approx(0.931, abs=1e-3)  # the 95% bound
    assert agreement_upper_bound(1.0, 3) == 1.0 and agreement_upper_bound(0.5, 0) == 1.0
    bounds = [agreement_upper_bound(0.7, n) for n in (5, 10, 50, 500)]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] > 0.7  # narrows towards the mean with evidence
