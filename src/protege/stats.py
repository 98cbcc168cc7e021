"""Statistics the policy's rules share: how much a run of shadow agreements shows (a leaf module: students,
skills and programs are all judged by it)."""

from __future__ import annotations

import math

WINDOW_Z = 2.326  # the window backstop's one-sided 99% bound (bench/demotion_rules.py: why 99, not 95)
MIN_SHADOWS = 10  # the window backstop judges no fewer shadows (or the whole window, when it is smaller)


def agreement_upper_bound(mean: float, n: int, z: float = WINDOW_Z) -> float:
    """The window backstop's evidence: how high the agreement of `n` shadows with mean `mean` may still be (the
    Wilson score interval's one-sided 99% upper bound). The backstop demotes only when this is below the bar, not
    the mean: 8 agreements in 10 is a mean of 0.80, yet a tier whose answers are 91% right shows that often enough
    (a promoted student was demoted on exactly that, BENCHMARKS §6); the bound, 0.95, does not rule 0.91 out. Ten
    straight disagreements (bound 0.35) or 30 agreements in 50 (0.74) still demote. The window is judged after
    every shadow, so a 95% bound still demoted a steady 93%-right tier in 18% of 200-shadow streams (99%: 6%; the
    mean alone: 82%), BENCHMARKS §13."""
    if n <= 0:
        return 1.0
    p = min(max(mean, 0.0), 1.0)
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


def window_below(mean: float | None, n: int, window: int, bar: float) -> float | None:
    """The window backstop's verdict: the upper bound of `n` shadows' agreement when they are enough and show it
    below `bar`, else None (not enough shadows, or agreement that may still reach the bar)."""
    if mean is None or n < min(window, MIN_SHADOWS):
        return None
    upper = agreement_upper_bound(mean, n)
    return upper if upper < bar else None
