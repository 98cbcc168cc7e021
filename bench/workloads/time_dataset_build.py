"""Time `build_dataset` on a store of N teacher traces of the order-email task (default 100,000, all distinct
inputs: the worst case for near-duplicate search), with a realistic 3-message transcript per trace.

    python bench/workloads/time_dataset_build.py [--n 100000] [--redact secrets|pii] [--db /tmp/orders.db]

The store is made once per --db path and reused; the build itself is timed (wall and CPU) per stage.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(Path(__file__).resolve().parent)]
import make_orders  # noqa: E402

from protege.agents.models.chat_format import compact_json  # noqa: E402
from protege.demo.workload import extract_order  # noqa: E402
from protege.distill.dataset import build_dataset  # noqa: E402
from protege.store import Store  # noqa: E402
from protege.tasks import input_hash  # noqa: E402

TASK = "extract_order"


def fill(store: Store, n: int, instructions: str) -> None:
    def rows():
        for ex in make_orders.generate(n, seed=3):
            out, inp = ex["output"], ex["input"]
            yield {
                "task_name": TASK,
                "tier": "teacher",
                "model": "anthropic:claude-opus-4-5",
                "valid": True,
                "input": inp,
                "input_hash": input_hash(inp),
                "output": out,
                "output_text": compact_json(out),
                "messages": [
                    {"role": "system", "content": instructions},
                    {"role": "user", "content": compact_json(inp)},
                    {"role": "assistant", "content": compact_json(out)},
                ],
            }

    store.insert_traces(rows())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--redact", default="secrets", choices=["secrets", "pii"])
    ap.add_argument("--db", type=Path, default=Path(tempfile.gettempdir()) / "protege-bench-orders.db")
    args = ap.parse_args()
    instructions = inspect.getdoc(extract_order) or ""
    store = Store(f"sqlite:///{args.db}")
    have = store.count_traces(TASK)
    if have != args.n:
        if have:
            raise SystemExit(f"{args.db} holds {have} traces, not {args.n}: pass another --db")
        t = time.perf_counter()
        fill(store, args.n, instructions)
        print(f"filled {args.n} traces in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    out = Path(tempfile.mkdtemp(prefix="protege-ds-"))
    wall, cpu = time.perf_counter(), time.process_time()
    built = build_dataset(store, TASK, instructions=instructions, out_dir=out, redact=args.redact)
    result = {
        "traces": args.n,
        "redact": args.redact,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "stages_s": {k: round(v, 2) for k, v in built.timings.items()},
        "counts": built.counts,
        "bytes": sum(p.stat().st_size for p in built.path.iterdir()),
    }
    print(json.dumps(result))
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
