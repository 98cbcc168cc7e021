"""Short, fixed-width renderings of numbers, times and ids for tables in an 80-column terminal."""

from __future__ import annotations

from datetime import UTC, datetime

TIER_COLORS = {
    "teacher": "magenta",
    "replay": "yellow",
    "student": "green",
    "import": "cyan",
    "author": "blue",
    "failed": "red",
}
STATUS_COLORS = {
    "draft": "yellow",
    "approved": "green",
    "rejected": "red",
    "retired": "bright_black",
    "candidate": "yellow",
    "promoted": "green",
    "demoted": "bright_black",
}


def usd(value: float | None) -> str:
    """Dollars with precision that fits the size: $0.000123, $0.0123, $12.34, $1,234; below zero (savings when
    the loop cost more) as -$0.004802, as the CLI writes it, not $-0.004802."""
    if value is None:
        return "—"
    if value < 0:
        return "-" + usd(-value)
    if value == 0:
        return "$0"
    if value < 0.01:
        return f"${value:.6f}".rstrip("0")
    if value < 1:
        return f"${value:.4f}"
    if value < 1000:
        return f"${value:,.2f}"
    return f"${value:,.0f}"


def pct(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def when(value: datetime | None) -> str:
    """A UTC minute, absolute (relative times would make every screenshot differ)."""
    if value is None:
        return "—"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M")


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def short_id(value: str | None, n: int = 8) -> str:
    return (value or "—")[:n]


def clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def tier_markup(tier: str) -> str:
    return f"[{TIER_COLORS.get(tier, 'white')}]{tier}[/]"


def status_markup(status: str) -> str:
    return f"[{STATUS_COLORS.get(status, 'white')}]{status}[/]"


def validity_markup(valid: bool, *, short: bool = False) -> str:
    """Whether an answer passed validation: never "good"/"bad", which are reviewers' labels."""
    if short:  # the traces table's Valid column
        return "[green]✓ yes[/]" if valid else "[red]✗ no[/]"
    return "[green]✓ valid[/]" if valid else "[red]✗ invalid[/]"
