"""`python -m bench.lookahead STUDENT [--eval M] [--name NAME]`: one trained order student answering the first M
held-out rows twice, with and without the decoder's look-ahead (`Engine.lookahead`), the same weights and answer
profile — what docs/student.md's look-ahead figures come from.

STUDENT is a student folder `bench.recipe` trained (`<scratch>/recipes/NAME/student/...`, the folder holding the
weights and `answer_profile.json`). Writes exact match, per-field accuracy, latency, how many choices the look-ahead
replaced, and every answer that changed to bench/results/recipes/NAME.json. Not part of `python -m bench`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine_info
from bench.recipe import Recording, order_rows


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from protege.agents.models.chat_format import trained_prompt, with_student_prompt
    from protege.demo.workload import Order
    from protege.distill.evaluate import evaluate_student
    from protege.distill.train import read_metadata

    config = (read_metadata(args.student) or {}).get("config")
    rows = with_student_prompt(order_rows("heldout", args.eval), trained_prompt(config))  # as it was trained
    runs: dict[str, Any] = {}
    answers: dict[str, list[str | None]] = {}
    for label, on in (("without", False), ("with", True)):
        model = Recording(Path(args.student))
        model.engine.lookahead = on
        report = evaluate_student(model, rows, output_model=Order)
        reconsidered = [answer["reconsidered"] for answer in model.answers]
        runs[label] = {
            **report.model_dump(mode="json", exclude={"mismatches"}),
            "answers_reconsidered": sum(1 for n in reconsidered if n),
            "choices_reconsidered": sum(reconsidered),
        }
        answers[label] = [answer["text"] for answer in model.answers]
        print(f"[lookahead] {label}: exact match {report.exact_match:.4f}", file=sys.stderr, flush=True)
    changed = [
        {"input": row["input"], "expected": row["output"], "without": a, "with": b}
        for row, a, b in zip(rows, answers["without"], answers["with"])
        if a != b
    ]
    record = {
        "name": args.name,
        "command": " ".join(["python -m bench.lookahead", *(argv or sys.argv[1:])]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "runs": runs,
        "changed": changed,
    }
    path = Path(args.out) if args.out else RESULTS / "recipes" / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    print(f"[lookahead] {len(changed)} answers changed; wrote {path}", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.lookahead", description=__doc__.splitlines()[0])
    ap.add_argument("student", help="a trained student's folder (weights and answer_profile.json)")
    ap.add_argument("--eval", type=int, default=80, help="held-out rows answered (default 80)")
    ap.add_argument("--name", default="lookahead", help="the run's name (default lookahead)")
    ap.add_argument("--out", help="the result file (default bench/results/recipes/NAME.json)")
    return ap


if __name__ == "__main__":
    raise SystemExit(main())
