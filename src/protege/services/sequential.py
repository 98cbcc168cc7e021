"""A sequential test on shadow agreement: has a cheaper tier's agreement with the teacher fallen below the bar?

Which test, and why: an e-detector (Shin, Ramdas & Rinaldo, "E-detectors: a nonparametric framework for
sequential change detection", 2023) — a CUSUM of betting e-values, mixed over several bet sizes:

    e_t(λ) = 1 + λ·(bar − x_t)          x_t ∈ [0, 1] one shadow's agreement; E[e_t] ≤ 1 while mean agreement ≥ bar
    M_t(λ) = e_t(λ) · max(M_{t−1}(λ), 1)   (CUSUM: evidence restarts from 1 whenever it falls below)
    alarm when mean over λ of M_t(λ) ≥ 1/α

- It needs no alternative: Wald's SPRT is optimal only at the agreement it was tuned for (say bar − 0.15); after
  a shift the agreement may be 0.85 or 0.2, and the mixture over bet sizes adapts to whichever it is.
- Agreement is a score in [0, 1], not only 0/1 (field-level scores): betting e-values need only boundedness.
- It is valid at every shadow (checked after each one, with no multiple-testing penalty): while agreement stays at
  or above the bar, false alarms come on average no more often than once per 1/α shadows (the ARL bound).
- It does not need to know when inputs changed: the CUSUM forgets the good stretch before a shift, where a
  confidence sequence started at promotion would first have to outweigh it.

A fixed window of mean agreement (the `Policy.shadow_window` rule, kept as a backstop, judged by
`protege.stats.agreement_upper_bound`) needs the whole window of shadows after a shift; this test alarms after ~4
straight disagreements at bar 0.9 and in ~10 shadows at 0.3 agreement, and never reacts to one disagreement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

ALPHA = 1e-3  # false alarms at most once per ~1000 shadows (on average) while agreement is at the bar
BET_FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0625)  # of the largest bet that keeps every e-value positive
MAX_BET_SHARE = 0.9


def bets(bar: float) -> list[float]:
    """Bet sizes λ: the largest keeps 1 + λ(bar − 1) > 0 (a full agreement never zeroes the wealth)."""
    top = MAX_BET_SHARE / max(1.0 - bar, 1e-6)
    return [top * f for f in BET_FRACTIONS]


def path(scores: Iterable[float], bar: float) -> Iterator[float]:
    """The e-detector's statistic after each score (oldest first)."""
    lambdas = bets(bar)
    m = [1.0] * len(lambdas)
    for x in scores:
        x = min(max(float(x), 0.0), 1.0)
        m = [(1.0 + lam * (bar - x)) * max(mi, 1.0) for lam, mi in zip(lambdas, m, strict=True)]
        yield sum(m) / len(m)


def first_alarm(scores: Iterable[float], bar: float, alpha: float = ALPHA) -> int | None:
    """1-based index of the shadow at which the test first alarms, or None."""
    return next((i for i, stat in enumerate(path(scores, bar), 1) if stat >= 1.0 / alpha), None)


def below_bar(scores: Iterable[float], bar: float, alpha: float = ALPHA) -> bool:
    """Whether the test alarmed at any point of `scores` (oldest first): an alarm is not undone by what follows
    (shadows recorded concurrently, or by another process, may land between two checks)."""
    return first_alarm(scores, bar, alpha) is not None
