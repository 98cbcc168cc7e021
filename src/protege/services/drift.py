"""An early drift signal that needs no teacher: a promoted student's calls against their distribution at promotion.

What is compared, on the last `WINDOW` calls the student was tried on:
- its confidence (the least-sure token), against the confidences it had on the eval split at promotion;
- the input's length (characters of its JSON), against the inputs it was distilled on;
- the share of the input's words it never saw in those inputs (measured on a held-out half for the reference);
- the share of calls whose input has a field (JSON path) none of those inputs had;
- the share of calls its answer was escalated (gate or validation), against the eval's 1 − gate coverage.

Continuous features use a two-sample Kolmogorov–Smirnov test — one-sided where only one direction is trouble:
confidence alarms when it falls, the unseen-word share when it rises (a student surer than at promotion, or inputs
closer to its training set, is no reason to spend shadows) — shares an exact one-sided binomial test; each at
level `ALPHA`, small enough that the five together rarely fire on an unchanged stream. When one fires, the task's
shadow rate is raised to `Policy.drift_shadow_rate` for `Policy.drift_shadow_calls` calls, so the sequential
agreement test (.sequential) gets its evidence within tens of calls instead of hundreds. A boost that ends
without a demotion was a benign shift: what the boost saw becomes the reference, so the same shift does not fire again.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger("protege")
WINDOW = 20  # recent calls compared with the reference: small, so a shift shows within ~10 calls
MIN_RECENT = 20  # calls needed before a comparison says anything
# a reference this small still tells a large move (the KS bar grows as it shrinks: 0.78 with 12 of them) — a
# student judged on few eval answers (promoted by hand) kept its confidence test off for good
MIN_REFERENCE = 8
CHECK_EVERY = 2  # compare every this many calls (a KS test costs O(n log n): ~0.2 ms here)
ALPHA = 1e-4  # each test's level per check: five tests every 2 calls rarely fire on an unchanged stream
SHARE_FLOOR = 0.005  # a share measured as 0% at promotion is taken as this: 3 hits in 20 are a shift, 1 is not
KS_C_ALPHA = math.sqrt(-math.log(ALPHA / 2) / 2)  # the two-sample KS critical constant c(α)
KS_C_ALPHA_ONE_SIDED = math.sqrt(-math.log(ALPHA) / 2)
FALL, EITHER, RISE = -1, 0, 1  # which way a feature must move to count as drift
REFERENCE_INPUTS = 400  # newest distilled-on inputs kept as the reference
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class Observation:
    confidence: float | None
    length: int
    unseen_words: float
    unseen_field: bool
    escalated: bool


@dataclass
class Reference:
    """The student's world at promotion."""

    confidences: list[float]
    lengths: list[int]
    unseen_words: list[float]
    vocab: set[str]
    fields: set[str]
    escalated: float  # expected share of calls escalated
    unseen_fields: float  # share of inputs like the distilled-on ones with a field those lacked (held-out half)

    def observe(self, inp: dict[str, Any], confidence: float | None, escalated: bool) -> Observation:
        return Observation(
            confidence, len(_text(inp)), _unseen_share(inp, self.vocab), bool(_paths(inp) - self.fields), escalated
        )

    def absorb(self, seen: list[Observation], inputs: list[dict[str, Any]]) -> None:
        """Accept a benign shift: what a boost saw is the new normal (its distributions replace the reference's;
        its words and fields join the known ones)."""
        confidences = [o.confidence for o in seen if o.confidence is not None]
        if len(confidences) >= MIN_RECENT:
            self.confidences = confidences
        if len(seen) >= MIN_RECENT:
            self.lengths = [o.length for o in seen]
            # like at promotion: the share of words unseen in half of them, measured on the other half
            held_vocab = self.vocab.union(*(_words(i) for i in inputs[::2]))
            self.unseen_words = [_unseen_share(i, held_vocab) for i in inputs[1::2]]
        for inp in inputs:
            self.vocab.update(_words(inp))
            self.fields.update(_paths(inp))


def build_reference(inputs: list[dict[str, Any]], confidences: list[float | None], coverage: float | None) -> Reference:
    """A reference from the inputs a student was distilled on and its eval confidences / gate coverage."""
    half = inputs[::2], inputs[1::2]
    held_vocab = {w for inp in half[0] for w in _words(inp)}
    held_fields = set().union(*(_paths(i) for i in half[0])) if half[0] else set()
    # the unseen-word share of inputs like the distilled-on ones that were not in the vocabulary
    unseen = [_unseen_share(inp, held_vocab) for inp in half[1]]
    new_fields = sum(bool(_paths(i) - held_fields) for i in half[1]) / len(half[1]) if half[1] else 0.0
    return Reference(
        confidences=[c for c in confidences if c is not None],
        lengths=[len(_text(i)) for i in inputs],
        unseen_words=unseen,
        vocab={w for inp in inputs for w in _words(inp)},
        fields=set().union(*(_paths(i) for i in inputs)) if inputs else set(),
        escalated=1.0 - coverage if coverage is not None else 0.0,
        unseen_fields=new_fields,
    )


def shifts(ref: Reference, recent: list[Observation]) -> list[str]:
    """What moved, in words (empty if nothing did)."""
    out = []
    conf = [o.confidence for o in recent if o.confidence is not None]
    for name, a, b, side in (
        ("confidence", ref.confidences, conf, FALL),
        ("input length", ref.lengths, [o.length for o in recent], EITHER),
        ("unseen words", ref.unseen_words, [o.unseen_words for o in recent], RISE),
    ):
        if len(a) >= MIN_REFERENCE and len(b) >= MIN_RECENT:
            d = ks_statistic(a, b, side)
            c = KS_C_ALPHA if side == EITHER else KS_C_ALPHA_ONE_SIDED
            if d > c * math.sqrt((len(a) + len(b)) / (len(a) * len(b))):
                out.append(f"{name} (KS {d:.2f})")
    n = len(recent)
    for name, hits, p0 in (
        ("inputs with unseen fields", sum(o.unseen_field for o in recent), ref.unseen_fields),
        ("escalated", sum(o.escalated for o in recent), ref.escalated),
    ):
        p0 = min(max(p0, SHARE_FLOOR), 1 - SHARE_FLOOR)
        if binomial_tail(n, hits, p0) < ALPHA:
            out.append(f"{name} {hits / n:.0%} vs {p0:.0%}")
    return out


def binomial_tail(n: int, k: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def ks_statistic(a: list[float] | list[int], b: list[float] | list[int], side: int = EITHER) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical CDFs. `side` FALL counts
    only gaps where `b` lies below `a` (its CDF above), RISE only where it lies above, EITHER both."""
    sa, sb = sorted(a), sorted(b)
    gaps = (bisect.bisect_right(sb, x) / len(sb) - bisect.bisect_right(sa, x) / len(sa) for x in sa + sb)
    if side == EITHER:
        return max(abs(g) for g in gaps)
    return max(0.0, max(g * -side for g in gaps))


@dataclass
class TaskDrift:
    """One task's monitor state (for one promoted student)."""

    student_id: str
    ref: Reference | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    pending: deque = field(default_factory=lambda: deque(maxlen=WINDOW))  # calls seen before the reference was ready
    calls: int = 0
    boost_left: int = 0
    during_boost: list[tuple[Observation, dict]] = field(default_factory=list)
    alerts: int = 0
    last_alert: str | None = None
    last_alert_at: datetime | None = None
    loading: bool = False


def _text(inp: dict[str, Any]) -> str:
    return json.dumps(inp, ensure_ascii=False, sort_keys=True)


def _unseen_share(inp: dict[str, Any], vocab: set[str]) -> float:
    words = _words(inp)
    return sum(w not in vocab for w in words) / len(words) if words else 0.0


def _words(inp: Any) -> list[str]:
    out: list[str] = []
    _collect_words(inp, out)
    return out


def _collect_words(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.extend(w.lower() for w in _WORD.findall(value))
    elif isinstance(value, dict):
        for v in value.values():
            _collect_words(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect_words(v, out)


def _paths(value: Any, prefix: str = "") -> set[str]:
    """The input's field paths (list items share one path: `items[]`)."""
    if isinstance(value, dict):
        return set().union(*(_paths(v, f"{prefix}.{k}") for k, v in value.items())) | {prefix} if value else {prefix}
    if isinstance(value, list):
        return set().union(*(_paths(v, prefix + "[]") for v in value)) | {prefix} if value else {prefix}
    return {prefix}
