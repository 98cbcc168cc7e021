"""An early drift signal that needs no teacher: a promoted student's calls against their distribution at promotion.

What is compared, on the last `WINDOW` calls the student was tried on:
- its confidence (the least-sure token), against the confidences it had on the eval split at promotion;
- the input's length (characters of its JSON), against the inputs it was distilled on;
- the share of the input's words it never saw in those inputs (measured on a held-out half for the reference);
- the share of calls whose input has a field (JSON path) none of those inputs had;
- the share of calls its answer was escalated (gate or validation), against the eval's 1 − gate coverage.

Continuous features use a two-sample Kolmogorov–Smirnov test, shares a one-sided binomial z-test; each at a level
small enough that the five together rarely fire on an unchanged stream. When one fires, the task's shadow rate is
raised to `Policy.drift_shadow_rate` for `Policy.drift_shadow_calls` calls, so the sequential agreement test
(protege.sequential) gets its evidence within tens of calls instead of hundreds. A boost that ends without a
demotion was a benign shift: what the boost saw joins the reference, so the same shift does not fire again.
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
WINDOW = 40  # recent calls compared with the reference
MIN_RECENT = 20  # calls needed before a comparison says anything
CHECK_EVERY = 5  # compare every this many calls (a KS test costs O(n log n))
KS_C_ALPHA = 1.95  # two-sample KS critical constant for α ≈ 0.001
Z_ALPHA = 3.1  # one-sided z for α ≈ 0.001
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

    def observe(self, inp: dict[str, Any], confidence: float | None, escalated: bool) -> Observation:
        words = _words(inp)
        unseen = sum(w not in self.vocab for w in words) / len(words) if words else 0.0
        return Observation(confidence, len(_text(inp)), unseen, bool(_paths(inp) - self.fields), escalated)

    def absorb(self, seen: list[Observation], inputs: list[dict[str, Any]]) -> None:
        """Accept a benign shift: what a boost saw becomes part of the reference."""
        self.confidences += [o.confidence for o in seen if o.confidence is not None]
        self.lengths += [o.length for o in seen]
        self.unseen_words += [o.unseen_words for o in seen]
        for inp in inputs:
            self.vocab.update(_words(inp))
            self.fields.update(_paths(inp))


def build_reference(inputs: list[dict[str, Any]], confidences: list[float | None], coverage: float | None
                    ) -> Reference:
    """A reference from the inputs a student was distilled on and its eval confidences / gate coverage."""
    half = inputs[::2], inputs[1::2]
    held_vocab = {w for inp in half[0] for w in _words(inp)}
    unseen = []
    for inp in half[1]:  # unseen-word share of inputs like the training ones, but not in the vocabulary
        words = _words(inp)
        unseen.append(sum(w not in held_vocab for w in words) / len(words) if words else 0.0)
    return Reference(
        confidences=[c for c in confidences if c is not None], lengths=[len(_text(i)) for i in inputs],
        unseen_words=unseen, vocab={w for inp in inputs for w in _words(inp)},
        fields=set().union(*(_paths(i) for i in inputs)) if inputs else set(),
        escalated=1.0 - coverage if coverage is not None else 0.0,
    )


def shifts(ref: Reference, recent: list[Observation]) -> list[str]:
    """What moved, in words (empty if nothing did)."""
    out = []
    conf = [o.confidence for o in recent if o.confidence is not None]
    for name, a, b in (("confidence", ref.confidences, conf), ("input length", ref.lengths, [o.length for o in recent]),
                       ("unseen words", ref.unseen_words, [o.unseen_words for o in recent])):
        if len(a) >= MIN_RECENT and len(b) >= MIN_RECENT:
            d = ks_statistic(a, b)
            if d > KS_C_ALPHA * math.sqrt((len(a) + len(b)) / (len(a) * len(b))):
                out.append(f"{name} (KS {d:.2f})")
    n = len(recent)
    for name, hits, p0 in (("inputs with unseen fields", sum(o.unseen_field for o in recent), 0.0),
                           ("escalated", sum(o.escalated for o in recent), ref.escalated)):
        p0 = min(max(p0, 0.02), 0.98)  # a floor: a reference of 0% cannot make one hit a shift
        if (hits - n * p0) / math.sqrt(n * p0 * (1 - p0)) > Z_ALPHA:
            out.append(f"{name} {hits / n:.0%} vs {p0:.0%}")
    return out


def ks_statistic(a: list[float] | list[int], b: list[float] | list[int]) -> float:
    """Two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical CDFs."""
    sa, sb = sorted(a), sorted(b)
    return max(abs(bisect.bisect_right(sa, x) / len(sa) - bisect.bisect_right(sb, x) / len(sb)) for x in sa + sb)


@dataclass
class TaskDrift:
    """One task's monitor state (for one promoted student)."""

    student_id: str
    ref: Reference | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    inputs: deque = field(default_factory=lambda: deque(maxlen=WINDOW))
    calls: int = 0
    boost_left: int = 0
    during_boost: list[tuple[Observation, dict]] = field(default_factory=list)
    alerts: int = 0
    last_alert: str | None = None
    last_alert_at: datetime | None = None
    loading: bool = False


def _text(inp: dict[str, Any]) -> str:
    return json.dumps(inp, ensure_ascii=False, sort_keys=True)


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
