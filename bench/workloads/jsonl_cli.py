"""The command line every generated workload shares: write N seeded examples as JSONL."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def write_jsonl_main(generate: Callable[[int, int], list[dict]], doc: str | None, seed: int) -> None:
    """`python make_X.py --out FILE [--n N] [--seed S]`: `generate(n, seed)`'s examples, one JSON object a line."""
    ap = argparse.ArgumentParser(description=(doc or "").splitlines()[0] if doc else None)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=seed)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with args.out.open("w", encoding="utf-8") as f:
        for row in generate(args.n, args.seed):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
