"""The demotion rules' operating characteristic: for a tier whose shadow agreement holds steady at p (no shift),
how often each rule takes it out of service within a number of shadows, and how soon.

A demotion above the bar is a false alarm that costs every later call the teacher's price; one below it is the
point. Pure simulation of the rules protege applies after each shadow (services.lifecycle): the window of the last
`shadow_window` shadows, at least 10 — judged by its mean (the rule before 2026-12-05) or by the mean's one-sided
99% upper bound (`protege.stats.agreement_upper_bound`, now) — and the sequential test (`below_bar`), which the
default runs first. Shadows are Bernoulli(p) agreements, seeded.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from collections.abc import Callable
from typing import Any

from bench.common import Table

BAR, WINDOW = 0.9, 50
AGREEMENTS = (0.97, 0.93, 0.91, 0.85, 0.8, 0.6, 0.3)
RULES = {
    "window mean (before)": "mean",
    "window 99% bound (now)": "bound",
    "sequential test": "sequential",
    "default: sequential or bound": "default",
}


def run_all(streams: int, shadows: int) -> dict[str, Any]:
    """Per agreement and rule: the share of streams demoted within `shadows` shadows, and the median shadow at
    which the demoted ones were."""
    out: dict[str, Any] = {}
    for p in AGREEMENTS:
        firsts = {rule: [] for rule in RULES.values()}
        for seed in range(streams):
            rng = random.Random(seed * 7919 + int(p * 1000))
            scores = [1.0 if rng.random() < p else 0.0 for _ in range(shadows)]
            for rule in firsts:
                firsts[rule].append(first_demotion(scores, rule))
        out[f"{p:g}"] = {rule: _summary(found, streams) for rule, found in firsts.items()}
    return out


def first_demotion(scores: list[float], rule: str) -> int | None:
    """1-based shadow at which `rule` first demotes, or None."""
    from protege.services.sequential import first_alarm

    sequential = first_alarm(scores, BAR) if rule in ("sequential", "default") else None
    window = _first_window(scores, _judge(rule)) if rule in ("mean", "bound", "default") else None
    hits = [h for h in (sequential, window) if h is not None]
    return min(hits) if hits else None


def _judge(rule: str) -> Callable[[float, int], bool]:
    from protege.stats import agreement_upper_bound

    if rule == "mean":
        return lambda mean, n: mean < BAR
    return lambda mean, n: agreement_upper_bound(mean, n) < BAR


def _first_window(scores: list[float], below: Callable[[float, int], bool]) -> int | None:
    from protege.stats import MIN_SHADOWS

    window: deque[float] = deque(maxlen=WINDOW)
    for i, x in enumerate(scores, 1):
        window.append(x)
        if len(window) >= MIN_SHADOWS and below(sum(window) / len(window), len(window)):
            return i
    return None


def _summary(found: list[int | None], streams: int) -> dict[str, Any]:
    hits = [f for f in found if f is not None]
    return {"demoted": len(hits) / streams, "median_shadow": statistics.median(hits) if hits else None}


def table(data: dict[str, Any], streams: int, shadows: int) -> Table:
    def cell(s: dict[str, Any]) -> str:
        share = f"{s['demoted']:.1%}"
        return share if s["median_shadow"] is None else f"{share} (shadow {s['median_shadow']:g})"

    return Table(
        f"Demotion rules on a steady tier: share of {streams} streams demoted within {shadows} shadows (median "
        f"shadow of those demoted), bar {BAR:g}, window {WINDOW}",
        ["true agreement", *RULES],
        [
            [f"{float(p):.0%}" + (" (above the bar)" if float(p) >= BAR else ""), *(cell(r[k]) for k in RULES.values())]
            for p, r in data.items()
        ],
    )
