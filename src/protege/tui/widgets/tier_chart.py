"""A stacked bar chart of calls per tier over time, drawn with block characters (no plotting library)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from protege.tui.format import TIER_COLORS
from protege.tui.queries import TierSeries

BLOCKS = " ▁▂▃▄▅▆▇█"
AXIS_WIDTH = 7
MAX_BAR = 5  # columns per bar when there are few buckets


def render_chart(series: TierSeries, width: int, height: int) -> Text:
    """The chart as text: a legend line, `height - 2` rows of stacked bars, and the first/last bucket labels."""
    out = Text(no_wrap=True, overflow="crop")
    if not series.labels:
        return out.append("no calls yet", style="dim")
    rows = max(1, height - 2)
    room = max(1, width - AXIS_WIDTH)
    col_w = max(1, min(MAX_BAR + 1, room // len(series.labels)))  # a bar and a gap; 1 = no gap, newest only
    shown = max(1, room // col_w)
    labels, counts = series.labels[-shown:], series.counts[-shown:]
    tiers = series.tiers
    _legend(out, tiers, counts, series.unit, len(labels))
    peak = max((sum(c.values()) for c in counts), default=0) or 1
    stacks = [_stack(c, tiers, peak, rows) for c in counts]
    for r in reversed(range(rows)):
        axis = f"{peak:>5,} " if r == rows - 1 else ("    0 " if r == 0 else "      ")
        out.append(axis[: AXIS_WIDTH - 1].rjust(AXIS_WIDTH - 1) + "│", style="dim")
        for stack in stacks:
            char, tier = _cell(stack, r)
            out.append(char * max(1, col_w - 1), style=TIER_COLORS.get(tier, "white"))
            out.append(" " if col_w > 1 else "")
        out.append("\n")
    first, last = labels[0], labels[-1]
    gap = max(1, len(labels) * col_w - len(first) - len(last))
    out.append(" " * AXIS_WIDTH + first + (" " * gap + last if len(labels) > 1 else ""), style="dim")
    return out


def _legend(out: Text, tiers: list[str], counts: list[dict[str, int]], unit: str, n: int) -> None:
    for tier in tiers:
        out.append("■ ", style=TIER_COLORS.get(tier, "white"))
        out.append(f"{tier} {sum(c.get(tier, 0) for c in counts):,}  ")
    out.append(f"calls per {unit}, last {n}", style="dim")
    out.append("\n")


def _stack(count: dict[str, int], tiers: list[str], peak: int, rows: int) -> list[tuple[int, str]]:
    """Cumulative tops of each tier's segment, in eighths of a cell, bottom tier first."""
    tops, total = [], 0
    for tier in tiers:
        total += count.get(tier, 0)
        tops.append((round(total / peak * rows * 8), tier))
    return tops


def _cell(stack: list[tuple[int, str]], row: int) -> tuple[str, str]:
    """The block character of one cell and the tier that fills most of it."""
    top = stack[-1][0] if stack else 0
    fill = min(8, top - row * 8)
    if fill <= 0:
        return " ", ""
    middle = row * 8 + fill / 2
    tier = next((t for cum, t in stack if cum >= middle), stack[-1][1])
    return BLOCKS[fill], tier


class TierChart(Widget):
    """Calls by tier over time for one task; set `series` to redraw."""

    series: reactive[TierSeries | None] = reactive(None)

    def render(self) -> Text:
        if self.series is None:
            return Text("loading…", style="dim")
        return render_chart(self.series, self.size.width, self.size.height)
