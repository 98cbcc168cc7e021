"""How the CLI shows things: rich tables for people, `--json` for scripts, one red line for errors.

Consoles are made per call, not at import, so they write to whatever sys.stdout/stderr is at the time (tests
swap them).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

MAX_COL = 28
FLEX_MIN = 16
COLUMN_GAP = 3  # between two columns of a box.SIMPLE_HEAD table: padding on both sides and a divider
TABLE_EDGES = 2  # the table's left and right edge (blank in that box)
PIPE_WIDTH = 160  # output to a file or a pipe: no terminal to fit, so tables keep their columns


def console() -> Console:
    """stdout's console: the terminal's width, or PIPE_WIDTH when stdout is not a terminal and $COLUMNS is unset
    (rich would assume 80 and cut tables that a log file or `| less -S` shows whole)."""
    out = Console(highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


def err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)  # soft_wrap: an error stays one line


def error(message: str) -> None:
    """One red line on stderr."""
    err_console().print(f"[bold red]error:[/] {escape(message)}")


def warn(message: str) -> None:
    err_console().print(f"[yellow]warning:[/] {escape(message)}")


def note(message: str) -> None:
    """Progress and hints for people: stderr, so stdout stays clean for pipes."""
    err_console().print(f"[dim]{escape(message)}[/]")


def jsonable(value: Any) -> Any:
    """Rows, models, datetimes and paths as JSON-ready data."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def emit_json(data: Any) -> None:
    """Plain JSON on stdout (no rich markup or wrapping), for `--json`."""
    sys.stdout.write(json.dumps(jsonable(data), indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def table(
    title: str | None,
    columns: list[str],
    rows: list[list[Any]],
    *,
    caption: str | None = None,
    right: tuple[str, ...] = (),
    flex: str | None = None,
    optional: tuple[str, ...] = (),
) -> None:
    """A rich table, one line per row: `right` columns are right-aligned (numbers); every column keeps its width
    (up to MAX_COL) except `flex`, which takes what is left and ends in … . On a narrow terminal the `optional`
    columns are left out, in that order, until the rest fits."""
    out = console()
    cells = [[cell if hasattr(cell, "__rich__") else escape(_cell(cell)) for cell in row] for row in rows]
    natural = {col: max([cell_len(col), *(_width(r[i]) for r in cells)]) for i, col in enumerate(columns)}
    widths = {col: min(width, MAX_COL) for col, width in natural.items()}
    shown = list(columns)
    for col in (c for c in optional if c in columns):  # a caller may list a column this listing leaves out
        if _fits(widths, shown, flex, FLEX_MIN, out.width):
            break
        shown.remove(col)
    if _fits(natural, shown, flex, FLEX_MIN, out.width):  # room for whole cells (a 32-character id)
        widths = natural
    t = Table(
        title=title,
        caption=caption,
        header_style="bold",
        title_justify="left",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    # every width set here, the flex column taking what is left: left to negotiate, rich shrank whole columns to
    # nothing on a full terminal (a trace list kept id, model and output and lost tier, valid and cost)
    rest = out.width - _used(widths, shown, flex)
    for col in shown:
        t.add_column(
            col,
            justify="right" if col in right else "left",
            no_wrap=True,
            overflow="ellipsis",
            width=min(max(rest, FLEX_MIN), natural[col]) if col == flex else widths[col],
        )
    keep = [columns.index(c) for c in shown]
    for row in cells:
        t.add_row(*[row[i] for i in keep])
    out.print(t)


def _used(widths: dict[str, int], shown: list[str], flex: str | None) -> int:
    """Columns the shown columns other than `flex` take, with the gaps and edges between and around all."""
    return sum(widths[c] for c in shown if c != flex) + COLUMN_GAP * (len(shown) - 1) + TABLE_EDGES


def _fits(widths: dict[str, int], shown: list[str], flex: str | None, flex_min: int, width: int) -> bool:
    return _used(widths, shown, flex) + (flex_min if flex in shown else 0) <= width


def _width(cell: Any) -> int:
    """Terminal columns, not characters: a CJK character or an emoji takes two."""
    return cell_len(cell.plain) if hasattr(cell, "plain") else cell_len(str(cell))


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    return str(value)


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    if value == 0:
        return "$0"
    if value < 0:
        return "-" + usd(-value)  # -$0.0127, not $-0.0127
    return f"${value:,.2f}" if value >= 100 else f"${value:,.4f}" if value >= 0.01 else f"${value:.6f}"


def secs(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def when(value: datetime | None, *, seconds: bool = False) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def short_id(value: str | None) -> str:
    return "—" if not value else value[:12]


def clip(text: str | None, width: int = 60) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def row_dict(row: Any, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """A store row (SQLModel) as JSON-ready data."""
    return {k: v for k, v in row.model_dump(mode="json").items() if k not in exclude}
