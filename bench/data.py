"""The workloads benchmarks run on, as typed protege tasks with a trace pool and a held-out set.

- debian: ../shared/data/debian-sections.jsonl, a real classification workload (first 1,600 lines the pool,
  last 800 held out);
- orders: the bundled example workload (`protege.demo.workload`: 900 pool, 300 held out), 8-field extraction;
- any JSONL of {"input": {...}, "output": {...}} pairs given with --data (first 2/3 pool, last 1/3 held out),
  turned into a task whose parameters and output fields are read off the first example.
Quick mode takes the first 200 of the pool and the first 100 held out (the files are already shuffled).
"""

from __future__ import annotations

import gzip
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model

from bench.common import ROOT, Context, NotRun

DEBIAN = ROOT.parent / "shared" / "data" / "debian-sections.jsonl"
DEBIAN_POOL = 1600
QUICK_POOL, QUICK_HELDOUT = 200, 100
WORKLOADS_DIR = ROOT / "bench" / "workloads"

Section = Literal[
    "admin",
    "net",
    "utils",
    "science",
    "games",
    "sound",
    "graphics",
    "text",
    "web",
    "mail",
    "editors",
    "video",
    "database",
    "electronics",
    "math",
    "x11",
]


class DebianSection(BaseModel):
    section: Section = Field(description="the Debian archive section the package belongs in")


def classify_package(description: str) -> DebianSection:
    """File a Debian package under its archive section (admin, net, utils, science, games, sound, graphics, text,
    web, mail, editors, video, database, electronics, math or x11), given the package's English description
    (the package's own name is replaced by <package>). Pick the section the Debian maintainers would."""
    raise NotImplementedError  # answered by protege's tiers


@dataclass
class Workload:
    """A task and its labelled examples: `pool` is the traffic traces come from, `heldout` is for evaluation."""

    name: str
    task: Callable[..., Any]
    pool: list[dict[str, Any]]
    heldout: list[dict[str, Any]]
    source: str

    @property
    def task_name(self) -> str:
        return self.task.__name__


def workloads(ctx: Context) -> list[Workload]:
    """The quality workloads of this run: the bundled one, debian (when the file is there) and --data."""
    out = [orders(ctx.quick)]
    if DEBIAN.is_file():
        out.insert(0, debian(ctx.quick))
        if ctx.quick and not ctx.workloads:  # an order answer takes seconds on 2 cores: quick mode measures the
            out = out[:1]  # short-answer task unless --workloads names others
    else:
        ctx.log(f"[bench] {DEBIAN} not found: the debian workload is left out")
    if ctx.data is not None:
        out.append(from_jsonl(ctx.data, ctx.quick))
    return _chosen(out, ctx.workloads)


def _chosen(out: list[Workload], names: tuple[str, ...]) -> list[Workload]:
    """Keep the workloads named by --workloads (a name matches a workload's name or its first word)."""
    if not names:
        return out
    kept = [w for w in out if w.name in names or w.name.split()[0] in names]
    if not kept:
        raise NotRun(f"--workloads {','.join(names)!r} matches none of {[w.name for w in out]!r}")
    return kept


def debian(quick: bool) -> Workload:
    rows = read_jsonl(DEBIAN)
    pool, heldout = rows[:DEBIAN_POOL], rows[DEBIAN_POOL:]
    return _sized(Workload("debian-sections", classify_package, pool, heldout, str(DEBIAN)), quick)


def orders(quick: bool) -> Workload:
    from protege.demo.workload import extract_order, load_examples

    return _sized(
        Workload(
            "orders (bundled)", extract_order, load_examples("pool"), load_examples("heldout"), "protege.demo.workload"
        ),
        quick,
    )


def from_jsonl(path: Path, quick: bool) -> Workload:
    rows = read_jsonl(path)
    if len(rows) < 3:
        raise NotRun(f"--data {str(path)!r} has {len(rows)} examples; give at least 3 (2/3 pool, 1/3 held out)")
    cut = len(rows) * 2 // 3
    task = task_from_example(rows[0], name=_identifier(path.stem), nullable=nullable_fields(rows))
    return _sized(Workload(path.name, task, rows[:cut], rows[cut:], str(path)), quick)


def _sized(w: Workload, quick: bool) -> Workload:
    if quick:
        w.pool, w.heldout = w.pool[:QUICK_POOL], w.heldout[:QUICK_HELDOUT]
    return w


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("input"), dict) or "output" not in row:
                raise NotRun(f"{str(path)!r} line {number} is not an object with an 'input' object and an 'output'")
            rows.append(row)
    return rows


# -- a task from an example ----------------------------------------------------------------------------------------


def task_from_example(
    example: dict[str, Any], *, name: str, nullable: frozenset[str] = frozenset()
) -> Callable[..., Any]:
    """A typed task function whose parameters are the example input's keys and whose output model has the
    example output's fields (types read off the values; a null value, or a field in `nullable`, makes it
    optional)."""
    inp, out = example["input"], example["output"]
    if not isinstance(out, dict):
        out = {"value": out}  # a bare output becomes {"value": ...}
    output_model = create_model(
        f"{name.title().replace('_', '')}Output",
        **{k: (_annotation(v) | None if k in nullable else _annotation(v), ...) for k, v in out.items()},
    )
    params = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, annotation=_annotation(v)) for k, v in inp.items()]

    def task(**kwargs: Any) -> Any:
        raise NotImplementedError

    task.__name__ = task.__qualname__ = name
    task.__doc__ = (
        f"Map the input ({', '.join(inp)}) to the output ({', '.join(out)}), the way the labelled "
        f"examples of the {name} workload do."
    )
    task.__signature__ = inspect.Signature(params, return_annotation=output_model)  # type: ignore[attr-defined]
    task.__annotations__ = {**{p.name: p.annotation for p in params}, "return": output_model}
    return task


def nullable_fields(rows: list[dict[str, Any]]) -> frozenset[str]:
    """Output fields that are null in some example (their type must allow it)."""
    return frozenset(k for row in rows for k, v in output_of(row).items() if v is None)


def _annotation(value: Any) -> Any:
    if value is None:
        return Any | None
    if isinstance(value, bool):
        return bool
    if isinstance(value, int):
        return int
    if isinstance(value, float):
        return float
    if isinstance(value, str):
        return str
    if isinstance(value, list):
        return list
    return dict


def _identifier(stem: str) -> str:
    name = "".join(c if c.isalnum() else "_" for c in stem.lower()).strip("_") or "data"
    return name if name[0].isalpha() else f"t_{name}"


def output_of(row: dict[str, Any]) -> dict[str, Any]:
    out = row["output"]
    return out if isinstance(out, dict) else {"value": out}


# -- traces --------------------------------------------------------------------------------------------------------


def teacher_trace(row: dict[str, Any], task_name: str, instructions: str, **fields: Any) -> dict[str, Any]:
    """A valid teacher trace for a labelled example, shaped like the ones the cascade writes (bulk-ingest dict)."""
    from protege.tasks import input_hash

    text = json.dumps(output_of(row), ensure_ascii=False)
    return {
        "task_name": task_name,
        "task_version": 1,
        "tier": "teacher",
        "model": "anthropic:claude-opus-4-5",
        "input": row["input"],
        "input_hash": input_hash(row["input"]),
        "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": json.dumps(row["input"], ensure_ascii=False)},
            {"role": "assistant", "content": text},
        ],
        "output": output_of(row),
        "output_text": text,
        "valid": True,
        "input_tokens": 900,
        "output_tokens": 60,
        "cost_usd": 0.006,
        "latency_s": 2.5,
        **fields,
    }


def generated_orders(n: int, ctx: Context) -> list[dict[str, Any]]:
    """n order-email examples from the bundled workload's generator (seeded; cached under the scratch dir)."""
    cache = ctx.folder("workloads") / f"orders-{n}.jsonl.gz"
    if cache.is_file():
        return read_jsonl(cache)
    if not (WORKLOADS_DIR / "make_orders.py").is_file():
        raise NotRun("bench/workloads/make_orders.py (the bundled workload generator) is not here")
    sys.path.insert(0, str(WORKLOADS_DIR))
    try:
        import make_orders
    finally:
        sys.path.remove(str(WORKLOADS_DIR))
    examples = make_orders.generate(n, seed=11)  # a seed of its own: not the shipped 1,200
    make_orders.write(examples, cache)
    return examples
