"""Dataset build time at 100k traces: `protege.distill.dataset.build_dataset` (select, exact and near-dup removal,
redaction, split, format, write) over 100,000 traces of the bundled workload in a SQLite store.

The traces: order emails from the bundled workload's generator, 10% of them asked twice (a recurring workload
repeats inputs, and the builder has to drop the repeats). Baseline, same run and same store: streaming the same
traces out of the store and writing each as a JSONL line with no dedup, redaction or formatting — the I/O floor.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.common import Context, Headline, Result, Table, fmt

TITLE = "Dataset build time"
TARGET_S = 15.0
FULL_N = 100_000
REPEAT_SHARE = 0.10


def run(ctx: Context, n: int | None = None) -> Result:
    from protege.distill.dataset import build_dataset  # the builder; NotRun-free: ImportError means not landed

    n = n or ctx.pick(20_000, FULL_N)
    store, task, instructions, ingest_s = _filled_store(ctx, n)
    try:
        floor_s = _io_floor(store, task, ctx)
        start = time.perf_counter()
        built = build_dataset(store, task, instructions=instructions, out_dir=ctx.folder("dataset", "out"))
        wall = time.perf_counter() - start
    finally:
        store.close()
    projected = wall * FULL_N / n
    result = Result(
        data={
            "n": n,
            "wall_s": wall,
            "floor_s": floor_s,
            "ingest_s": ingest_s,
            "counts": built.counts,
            "timings": built.timings,
        }
    )
    result.headlines.append(
        Headline(
            metric=f"build_dataset, {n:,} traces"
            + ("" if n == FULL_N else f" (×{FULL_N // n} → 100k: {projected:.1f} s)"),
            value=wall,
            unit="s",
            baseline=floor_s,
            baseline_label="read + write JSONL only, s",
            target=f"≤ {TARGET_S:g} s at 100k",
            met=projected <= TARGET_S,
        )
    )
    result.tables.append(
        Table(
            "Stages (s)",
            ["stage", "seconds", "share"],
            [[stage.removesuffix("_s"), sec, sec / wall] for stage, sec in built.timings.items()]
            + [["total", wall, 1.0]],
        )
    )
    result.tables.append(
        Table("What the builder kept and dropped", ["count", "value"], [[k, v] for k, v in built.counts.items()])
    )
    result.notes.append(
        f"{n:,} traces ({int(n * REPEAT_SHARE):,} of them repeats of earlier inputs) ingested in {fmt(ingest_s)} s "
        f"(not counted); default settings (redact='secrets', near-dup threshold from the builder, 20% eval)."
        + (
            ""
            if n == FULL_N
            else f" Quick mode measures {n:,} traces; the 100k figure is extrapolated linearly "
            f"(near-dup search is close to linear with LSH, so treat it as an estimate)."
        )
    )
    return result


def _filled_store(ctx: Context, n: int) -> tuple[Any, str, str, float]:
    from bench.data import generated_orders, orders, teacher_trace
    from protege.store import Store

    w = orders(quick=False)
    distinct = int(n * (1 - REPEAT_SHARE))
    examples = generated_orders(distinct, ctx)
    rows = examples + examples[: n - distinct]  # the repeats come later, as in a live workload
    instructions = w.task.__doc__ or ""
    store = Store(f"sqlite:///{ctx.folder('dataset') / f'traces-{n}.db'}")
    if store.count_traces(w.task_name) != n:  # built once per size; reruns reuse it
        store.close()
        (ctx.folder("dataset") / f"traces-{n}.db").unlink()
        store = Store(f"sqlite:///{ctx.folder('dataset') / f'traces-{n}.db'}")
        start = time.perf_counter()
        store.insert_traces(teacher_trace(r, w.task_name, instructions) for r in rows)
        return store, w.task_name, instructions, time.perf_counter() - start
    return store, w.task_name, instructions, 0.0


def _io_floor(store: Any, task: str, ctx: Context) -> float:
    path = ctx.folder("dataset") / "floor.jsonl"
    start = time.perf_counter()
    with path.open("w", encoding="utf-8") as out:
        for row in store.dataset_traces(task):
            out.write(json.dumps({"input": row["input"], "output": row["output"]}, ensure_ascii=False) + "\n")
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def plot(ax: Any, record: dict[str, Any]) -> None:
    """Stacked bar of the builder's stages next to the I/O floor, with the 15 s target."""
    data = record["data"]
    bottom = 0.0
    for stage, sec in data["timings"].items():
        ax.bar(["build_dataset"], [sec], bottom=bottom, label=stage.removesuffix("_s"))
        bottom += sec
    ax.bar(["read + write\n(floor)"], [data["floor_s"]], color="#999999")
    if data["n"] == FULL_N:
        ax.axhline(TARGET_S, color="red", linestyle="--", linewidth=1, label="target (100k)")
    ax.set_ylabel("seconds")
    ax.set_title(f"Dataset build, {data['n']:,} traces")
    ax.legend(fontsize=8)
