"""`python -m bench [--quick] [--only NAME[,NAME]] [--workloads NAME[,NAME]] [--reuse] [--data FILE]`: run the
benchmarks, write BENCHMARKS.md.

Each benchmark's result goes to bench/results/<name>.json; the report is then rendered from every result file
there, so `--only overhead` refreshes one section and keeps the others (each says when and how it was run), and
`--workloads X` refreshes X's figures in a section and keeps the other workloads' (bench/carry.py).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from bench.carry import carry_workloads
from bench.common import BENCHMARKS, RESULTS, Context, NotRun, machine_info


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = _selected(args.only)
    if args.data is not None and not args.data.is_file():
        raise SystemExit(f"--data {str(args.data)!r} is not a file; give a JSONL file of {{'input', 'output'}} pairs")
    ctx = Context(quick=args.quick, data=args.data, workloads=_names(args.workloads), reuse=args.reuse)
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = RESULTS / f"{name}.json"
        record = run_one(name, ctx, command)
        if ctx.workloads:  # a run of some workloads keeps the others' figures from the run before
            record = carry_workloads(record, _read(path))
        path.write_text(json.dumps(record, indent=1, default=str))
        ctx.log(f"[bench] {name}: {record['status']}" + (f" ({record['reason']})" if record.get("reason") else ""))
    from bench.report import write_report

    path = write_report()
    ctx.log(f"[bench] wrote {path}")
    return 0


def run_one(name: str, ctx: Context, command: str) -> dict[str, Any]:
    """Run one benchmark; a missing piece or a failure becomes a 'not run' record instead of an exception."""
    started = datetime.now(UTC)
    clock = time.perf_counter()
    record: dict[str, Any] = {
        "name": name,
        "quick": ctx.quick,
        "command": command,
        "started_at": started.isoformat(),
        "machine": machine_info(),
    }
    try:
        module = importlib.import_module(f"bench.{name}")
        record["title"] = getattr(module, "TITLE", name)
        ctx.log(f"[bench] {name} ...")
        result = module.run(ctx)
        record.update(status="ok", **asdict(result))
    except NotRun as exc:
        record.update(status="not_run", reason=str(exc))
    except (ImportError, NotImplementedError) as exc:  # a piece another engineer is still finishing
        record.update(status="not_run", reason=f"{type(exc).__name__}: {exc or 'not implemented yet'}")
    except Exception as exc:  # one broken benchmark must not stop the others
        record.update(
            status="not_run", reason=f"failed: {type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=8)
        )
    record["wall_s"] = time.perf_counter() - clock
    return record


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return cast(dict[str, Any], json.loads(path.read_text()))
    except (OSError, ValueError):  # no earlier run, or a damaged file: nothing to carry
        return None


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


def _selected(only: str | None) -> list[str]:
    names = _names(only)
    if not names:
        return list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown!r}; choose from {', '.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]  # keep run order: later ones reuse earlier ones' work


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: the whole run takes minutes")
    ap.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these ({', '.join(BENCHMARKS)})")
    ap.add_argument(
        "--workloads",
        metavar="NAME[,NAME]",
        help="quality workloads to measure (debian-sections, orders, or a --data file's name); default all",
    )
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="measure the students the newest earlier run trained (under bench/results/tmp) instead of "
        "warming up and training new ones; their promotion is decided again by the current rules",
    )
    ap.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="extra quality workload: JSONL of {'input': {...}, 'output': {...}} pairs",
    )
    return ap


if __name__ == "__main__":
    sys.exit(main())
