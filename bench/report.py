"""Render BENCHMARKS.md (and bench/results/benchmarks.png) from the result files in bench/results/.

Each result file is one benchmark's latest run, so the report can mix a fresh `--only` run with older ones:
every section says how and when its numbers were made. A benchmark module with a `plot(ax, record)` function
gets a panel in the figure.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from bench.common import BENCHMARKS, RESULTS, ROOT, fmt

REPORT = ROOT / "BENCHMARKS.md"
PLOT = RESULTS / "benchmarks.png"


def load_records(folder: Path = RESULTS) -> list[dict[str, Any]]:
    records = {}
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if record.get("name") in BENCHMARKS:
            extra = path.with_suffix(".md")  # hand-written results of a helper script, kept under the section
            record["extra"] = extra.read_text().strip() if extra.is_file() else ""
            records[record["name"]] = record
    return [records[name] for name in BENCHMARKS if name in records]


def write_report(folder: Path = RESULTS, out: Path = REPORT) -> Path:
    records = load_records(folder)
    plot = write_plot(records, folder / PLOT.name)
    out.write_text(render(records, Path(os.path.relpath(plot, out.parent)) if plot else None))
    return out


def render(records: list[dict[str, Any]], plot: Path | None) -> str:
    lines = [
        "# protege benchmarks",
        "",
        "What protege saves, what it keeps, and what it costs to run. Every figure is a ratio against a "
        "baseline measured in the same run; latencies are medians (p50) unless marked p99, because these "
        "machines are shared and noisy. Reproduce with `make bench` (quick mode, `python -m bench --quick`: "
        "small sizes, a few minutes) or `make bench-full` (`python -m bench`); `python -m bench --only NAME` "
        "re-runs one section, `--workloads NAME` re-measures only those quality workloads (a section keeps "
        "the others' figures, with a note naming their run), `--reuse` measures the students "
        'of the newest earlier run again, `--data FILE` adds a JSONL workload of `{"input", "output"}` '
        "pairs. Single training recipes on the order workload: `python -m bench.recipe` "
        "(results in bench/results/recipes/).",
        "",
    ]
    if not records:
        return "\n".join([*lines, "No results yet: run `python -m bench --quick`.", ""])
    lines += _machine(records), ""
    lines += _summary(records)
    if plot is not None:
        lines += ["", f"![benchmark summary]({plot.as_posix()})"]
    for i, record in enumerate(records, 1):
        lines += ["", *_section(i, record)]
    return "\n".join(lines) + "\n"


def _machine(records: list[dict[str, Any]]) -> str:
    newest = max(records, key=lambda r: r.get("started_at", ""))
    m = newest.get("machine", {})
    cpus = {r.get("machine", {}).get("cpu") for r in records}
    label = "**Machine**" if len(cpus) == 1 else "**Machine** (of the newest section; each section names its CPU)"
    parts = [
        f"{label}: {m.get('cpu')}, {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, {m.get('os')}",
        f"Python {m.get('python')}",
        f"torch {m.get('torch')}",
        f"transformers {m.get('transformers')}",
        f"SQLAlchemy {m.get('sqlalchemy')}",
        f"LangGraph {m.get('langgraph')}",
    ]
    return "; ".join(parts) + "."


def _summary(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Summary",
        "",
        "| benchmark | figure | value | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        title = r.get("title", r["name"])
        if r["status"] != "ok":
            lines.append(f"| {title} | not run: {_cell(r.get('reason', ''))[:300]} | | | | | |")
            continue
        if not r.get("headlines"):
            lines.append(f"| {title} | no headline figure in this run: see its section | | | | | |")
        for h in r.get("headlines", []):
            base = f"{fmt(h.get('baseline'))} ({h.get('baseline_label')})" if h.get("baseline") is not None else "–"
            ratio = h["value"] / h["baseline"] if h.get("value") is not None and h.get("baseline") else None
            met = {True: "yes", False: "**no**", None: "–"}[h.get("met")]
            lines.append(
                f"| {title} | {_cell(h['metric'])} | {fmt(h.get('value'))} {h.get('unit', '')} | {_cell(base)}"
                f" | {fmt(ratio)} | {_cell(h.get('target', ''))} | {met} |"
            )
    return lines


def _section(i: int, r: dict[str, Any]) -> list[str]:
    mode = "quick" if r.get("quick") else "full"
    lines = [
        f"## {i}. {r.get('title', r['name'])}",
        "",
        f"`{r.get('command')}` ({mode} mode; started {r.get('started_at', '')[:19].replace('T', ' ')} UTC; "
        f"{fmt(r.get('wall_s'))} s; 1-minute load average at start {fmt(r.get('machine', {}).get('load_avg_1m'))}; "
        f"{r.get('machine', {}).get('cpu')})",
    ]
    if r["status"] != "ok":
        return [*lines, "", f"**Not run:** {r.get('reason')}"]
    for table in r.get("tables", []):
        lines += [
            "",
            f"**{table['title']}**",
            "",
            "| " + " | ".join(table["columns"]) + " |",
            "|" + "---|" * len(table["columns"]),
        ]
        lines += ["| " + " | ".join(_cell(fmt(v)) for v in row) + " |" for row in table["rows"]]
    if r.get("notes"):
        lines += [""] + [f"- {note}" for note in r["notes"]]
    if r.get("extra"):
        lines += ["", *r["extra"].splitlines()]
    return lines


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_plot(records: list[dict[str, Any]], path: Path) -> Path | None:
    """One panel per benchmark that knows how to plot itself; None when there is nothing to draw."""
    panels = []
    for r in records:
        if r["status"] != "ok":
            continue
        try:
            plot = getattr(importlib.import_module(f"bench.{r['name']}"), "plot", None)
        except ImportError:
            plot = None
        if plot is not None:
            panels.append((plot, r))
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, (plot, record) in zip(axes.flat, panels):
        plot(ax, record)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
