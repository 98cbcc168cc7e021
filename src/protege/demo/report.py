"""The demo's closing table: per serving tier, calls served, quality against the reference labels, cost per call
and p50 latency, then the spend against a teacher-only run. Pure functions of the calls made, easy to test."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

TIER_ORDER = ("program", "student", "replay", "teacher", "failed")


@dataclass
class Call:
    """One call the demo made: the stage, who served it, what it cost, how long it took, and how right it was."""

    stage: str
    tier: str  # the serving tier, or "failed"
    cost_usd: float
    latency_s: float
    exact: bool
    fields_right: float  # share of the reference's fields the answer got right
    escalated: bool = False


def field_accuracy(output: dict[str, Any] | None, reference: dict[str, Any]) -> float:
    """Share of the reference's fields the output matches (0 for no output)."""
    if output is None or not reference:
        return 0.0
    return sum(output.get(k) == v for k, v in reference.items()) / len(reference)


def grade(stage: str, result: Any, reference: dict[str, Any]) -> Call:
    """A served call (RunResult) graded against its reference label."""
    output = result.output.model_dump(mode="json", by_alias=True)
    acc = field_accuracy(output, reference)
    return Call(
        stage=stage,
        tier=result.tier,
        cost_usd=result.cost_usd,
        latency_s=result.latency_s,
        exact=acc == 1.0,
        fields_right=acc,
        escalated=len(result.attempts) > 1,
    )


def failed(stage: str, cost_usd: float, latency_s: float) -> Call:
    return Call(
        stage=stage,
        tier="failed",
        cost_usd=cost_usd,
        latency_s=latency_s,
        exact=False,
        fields_right=0.0,
        escalated=True,
    )


@dataclass
class TierRow:
    tier: str
    calls: int
    exact: float
    fields: float
    cost_per_call: float
    p50_latency_s: float
    escalated: int


def tier_rows(calls: list[Call]) -> list[TierRow]:
    """One row per serving tier (cheapest first), then 'all calls'."""
    groups = [(t, [c for c in calls if c.tier == t]) for t in TIER_ORDER]
    rows = [_row(t, cs) for t, cs in groups if cs]
    if calls:
        rows.append(_row("all calls", calls))
    return rows


def _row(tier: str, calls: list[Call]) -> TierRow:
    n = len(calls)
    return TierRow(
        tier=tier,
        calls=n,
        exact=sum(c.exact for c in calls) / n,
        fields=sum(c.fields_right for c in calls) / n,
        cost_per_call=sum(c.cost_usd for c in calls) / n,
        p50_latency_s=statistics.median(c.latency_s for c in calls),
        escalated=sum(c.escalated for c in calls),
    )


def savings(calls: list[Call], teacher_cost_per_call: float | None) -> dict[str, float | None]:
    """What the calls cost vs the same calls all served by the teacher."""
    spent = sum(c.cost_usd for c in calls)
    if teacher_cost_per_call is None:
        return {"spent_usd": spent, "teacher_only_usd": None, "saved_usd": None, "saved_ratio": None}
    teacher_only = teacher_cost_per_call * len(calls)
    saved = teacher_only - spent
    return {
        "spent_usd": spent,
        "teacher_only_usd": teacher_only,
        "saved_usd": saved,
        "saved_ratio": saved / teacher_only if teacher_only else None,
    }


def print_tier_table(title: str, calls: list[Call], teacher_cost_per_call: float | None) -> dict[str, Any]:
    """Print the table and the savings line; returns both as data."""
    from protege.cli.output import console, pct, secs, table, usd

    rows = tier_rows(calls)
    table(
        title,
        ["served by", "calls", "exact match", "fields right", "cost / call", "p50 latency", "escalated"],
        [
            [r.tier, r.calls, pct(r.exact), pct(r.fields), usd(r.cost_per_call), secs(r.p50_latency_s), r.escalated]
            for r in rows
        ],
        right=("calls", "exact match", "fields right", "cost / call", "p50 latency", "escalated"),
        caption="quality vs the workload's reference labels; cost and latency per call include escalations",
    )
    money = savings(calls, teacher_cost_per_call)
    if money["teacher_only_usd"] is not None:
        console().print(
            f"spent [bold]{usd(money['spent_usd'])}[/] vs [bold]{usd(money['teacher_only_usd'])}[/] teacher-only "
            f"→ saved [bold green]{usd(money['saved_usd'])}[/] ({pct(money['saved_ratio'])})"
        )
    return {"tiers": [r.__dict__ for r in rows], **money}
