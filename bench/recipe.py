"""`python -m bench.recipe NAME [--train N] [--eval M] [--base NAME] [--config JSON] [--student DIR]`: one
training recipe on the bundled order workload, measured — how docs/student.md's runs are made.

Trains `train_student` on the first N rows of the workload's pool (the reference answers as the teacher's, so exact
match = retention; or of `--rows FILE`, a built dataset's train.jsonl) with `TrainConfig(**config)`, then answers
the first M held-out rows with the student
(`LocalModel`, constrained decoding under the answer profile learned from the same rows, as `app.distill` does,
prompt-lookup drafts) and writes exact match, per-field accuracy, latency and
the training figures to bench/results/recipes/NAME.json. The first 20 held-out rows are answered again without
drafts (token by token), for the latency that drafting saves. Not part of `python -m bench`: one run is tens of
minutes on 2 cores. `--student DIR` answers with an earlier run's student instead of training one (say `--eval 300`:
the first 80 held-out orders are easier than the rest, docs/student.md "All 300 traces"). `--programs` answers the
held-out rows once more with field programs induced and verified on the same training rows deciding the fields
they are promoted for, the student decoding the rest with those values fixed (the cascade's programs + student,
without its deferral to a student that beat a program on the eval split: there is no eval split here).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, Context, machine_info
from protege.agents.models.local import LocalModel  # torch loads on first answer, not here


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from protege.agents.models.chat_format import with_student_prompt
    from protege.demo.workload import Order
    from protege.distill.evaluate import evaluate_student
    from protege.distill.train import TrainConfig

    config = TrainConfig(**json.loads(args.config))
    ctx = Context()
    eval_rows = with_student_prompt(order_rows("heldout", args.eval), config.prompt)  # as train_student trains
    train_rows = _train_rows(args)
    if args.student:
        adapter, train_figures = _earlier_student(args.student), None
    else:
        adapter, train_figures = _train(args, config, ctx, train_rows)
    ctx.log(f"[recipe] answering {len(eval_rows)} held-out rows with {adapter}")
    student = Recording(adapter)
    report = evaluate_student(student, eval_rows, output_model=Order)
    ctx.log("[recipe] the first 20 again, token by token")
    plain = evaluate_student(LocalModel(adapter, prompt_lookup=False), eval_rows[:20], output_model=Order)
    record = {
        "name": args.name,
        "command": " ".join(["python -m bench.recipe", *(argv or sys.argv[1:])]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "base": args.base,
        "config": config.model_dump(mode="json"),
        "student": str(adapter) if args.student else None,
        "train": train_figures,
        "eval": report.model_dump(mode="json", exclude={"mismatches"}),
        "eval_without_drafts_first_20": plain.model_dump(mode="json", exclude={"mismatches"}),
        "gates": _gates(report, student.min_probs),
        "with_programs": _with_programs(adapter, train_rows, eval_rows) if args.programs else None,
        "mismatches": [m.model_dump(mode="json") for m in report.mismatches],
        "answers": student.answers[: len(eval_rows)],
    }
    path = RESULTS / "recipes" / f"{args.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    ctx.log(
        f"[recipe] exact match {report.exact_match:.3f}, median {report.median_latency_s:.2f} s per answer; "
        f"wrote {path}"
    )
    if record["with_programs"]:
        ctx.log(f"[recipe] with programs: exact match {record['with_programs']['eval']['exact_match']:.3f}")
    return 0


def _train_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rows the recipe trains on (or, with --student, would have): --rows FILE or the pool's first N."""
    from protege.distill.pipeline import read_jsonl

    return read_jsonl(Path(args.rows))[: args.train] if args.rows else order_rows("pool", args.train)


def _with_programs(adapter: Path, train_rows: list[dict[str, Any]], eval_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Programs + student on the held-out rows: programs induced and verified on the training rows (as the
    program tier's induction does on the teacher's traces) fix the fields they decide; the student the rest."""
    from protege.agents.fixed_fields import program_values
    from protege.demo.workload import Order
    from protege.distill.evaluate import evaluate_student
    from protege.programs.verify import build
    from protege.tasks import Policy

    fields = list(Order.model_fields)
    examples = [(row["input"], row["output"]) for row in train_rows]
    programs = build("extract_order", examples, fields, promote_at=Policy().promote_at)
    fixed = [program_values(programs, row["input"]) for row in eval_rows]
    report = evaluate_student(LocalModel(adapter), eval_rows, output_model=Order, fixed=fixed)
    return {
        "programs": {name: fp.describe() for name, fp in programs.served.items()},
        "program_accuracy": programs.field_accuracy(),
        "fields_fixed_mean": sum(map(len, fixed)) / max(1, len(fixed)),
        "eval": report.model_dump(mode="json", exclude={"mismatches"}),
        "mismatches": [m.model_dump(mode="json") for m in report.mismatches],
    }


def _earlier_student(folder: str) -> Path:
    """An earlier run's student to answer with again (e.g. on more held-out rows: the first 80 are easier)."""
    adapter = Path(folder)
    if not (adapter / "config.json").is_file():
        raise SystemExit(
            f"--student {folder!r} holds no trained student (no config.json); "
            "pass an earlier run's bench/results/tmp/recipes/NAME/student/adapter folder"
        )
    return adapter


def _train(
    args: argparse.Namespace, config: Any, ctx: Context, train_rows: list[dict[str, Any]]
) -> tuple[Path, dict[str, Any]]:
    """Train the recipe's student on `train_rows` and learn its answer profile, as `app.distill` does; its folder
    and figures."""
    from protege.demo.workload import Order
    from protege.distill.answer_kinds import learn_for_student
    from protege.distill.base_models import resolve_base
    from protege.distill.train import train_student

    base = resolve_base(args.base, ctx.cache_dir)
    out = ctx.folder("recipes", args.name)
    ctx.log(f"[recipe] {args.name}: training on {len(train_rows)} rows with {config.model_dump(exclude_defaults=True)}")
    trained = train_student(train_rows, base, out / "student", config, output_schema=Order.model_json_schema())
    # the pipeline's serving path: the answer profile learned from the same rows bounds and constrains decoding
    learn_for_student(train_rows, Order.model_json_schema(), trained.adapter_path)
    ctx.log(f"[recipe] trained in {trained.wall_s:.0f} s")
    return trained.adapter_path, _train_figures(trained)


class Recording(LocalModel):
    """A LocalModel that keeps each answer's least-sure token probability (an alternative confidence), its text
    and how many choices the decoder's look-ahead replaced in it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.min_probs: list[float | None] = []
        self.answers: list[dict[str, Any]] = []  # every answer with its input, for per-miss analysis

    def generate_batch(self, requests: list[Any], **options: Any) -> list[Any]:
        responses = super().generate_batch(requests, **options)  # evaluate_student and generate both come here
        self.min_probs += [None if isinstance(r, Exception) else r.raw.get("min_prob") for r in responses]
        for request, r in zip(requests, responses, strict=True):  # batches come sorted by length, so key by input
            failed = isinstance(r, Exception)
            self.answers.append(
                {
                    "input": request.task_input,
                    "text": None if failed else r.text,
                    "reconsidered": 0 if failed else r.raw.get("reconsidered", 0),
                }
            )
        return responses


def _gates(report: Any, min_probs: list[float | None]) -> dict[str, Any]:
    """What a confidence gate calibrated on these answers would keep, per confidence measure and target: the
    cascade's own measure (least-sure field, else mean probability) and the answer's least-sure token. Figures
    are cross-fitted (`measured_on`), the in-sample ones beside them."""
    from protege.distill.gate import cross_fitted

    out = {}
    for measure, values in (("gate_confidence", report.confidences), ("min_prob", min_probs)):
        for target in (0.9, 0.95, 0.99):
            gate = cross_fitted(values, report.scores, target=target)
            out[f"{measure}@{target}"] = gate.model_dump() if gate else None
    return out


def order_rows(split: str, n: int) -> list[dict[str, Any]]:
    """The first n rows of a split of the bundled workload, as `build_dataset` writes them (reference = teacher)."""
    import inspect

    from protege.agents.models.chat_format import render_answer, student_messages, to_chat_dicts
    from protege.demo.workload import extract_order, load_examples

    instructions = inspect.getdoc(extract_order) or ""  # what TaskSpec makes of the docstring
    rows = []
    for ex in load_examples(split)[:n]:
        chat = to_chat_dicts(student_messages(instructions, ex["input"]))
        chat.append({"role": "assistant", "content": render_answer(ex["output"])})
        rows.append({"messages": chat, "input": ex["input"], "output": ex["output"]})
    return rows


def _train_figures(trained: Any) -> dict[str, Any]:
    return {
        "rows": trained.rows,
        "steps": trained.steps,
        "wall_s": trained.wall_s,
        "tokens": trained.train_tokens,
        "tokens_per_s": trained.tokens_per_s,
        "epoch_scores": [s.model_dump() for s in trained.epoch_scores],
        "best_epoch": trained.best_epoch,
        "stopped_early": trained.stopped_early,
        "loss_first": trained.loss_history[0][1] if trained.loss_history else None,
        "loss_last": trained.loss_history[-1][1] if trained.loss_history else None,
    }


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.recipe", description=__doc__.split(" — ")[0].replace("\n", " "))
    ap.add_argument("name", help="the run's name (its result file and scratch folder)")
    ap.add_argument("--train", type=int, default=300, help="training rows: the first N of the pool (default 300)")
    ap.add_argument("--eval", type=int, default=100, help="held-out rows answered (default 100)")
    ap.add_argument("--base", default="smollm2-135m", help="the student's base model (default smollm2-135m)")
    ap.add_argument("--config", default="{}", help="TrainConfig fields as JSON, e.g. '{\"epochs\": 3}'")
    ap.add_argument(
        "--rows", help="train on the first N rows of this JSONL file instead (a built dataset's train.jsonl)"
    )
    ap.add_argument(
        "--student",
        help="answer with this trained student's folder (an earlier run's adapter) instead of training one; "
        "--config's prompt must be the one it was trained with",
    )
    ap.add_argument(
        "--programs",
        action="store_true",
        help="also answer with field programs induced from the training rows fixing the fields they decide",
    )
    return ap


if __name__ == "__main__":
    sys.exit(main())
