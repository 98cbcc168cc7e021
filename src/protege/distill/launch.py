"""`python -m protege.distill.launch DATASET_DIR OUT_DIR`: train a student on a built dataset, as a script —
the form `accelerate launch` needs to train on several GPUs:

    protege dataset build TASK                       # prints the dataset folder
    accelerate launch --config_file examples/accelerate/multi_gpu.yaml \\
        -m protege.distill.launch DATASET_DIR OUT_DIR --base smollm2-135m --config '{"epochs": 3}'

Every process runs this module; `train_student` trains with TRL's own loss under several processes (DDP needs one
forward per backward, so the shared-prefix loss is a single-process speed-up) and the main process writes
OUT_DIR/adapter. Then make it the task's student — evaluated on the held-out split, recorded, promoted if it
passes, exactly as if `app.distill` had trained it:

    protege distill TASK --adapter OUT_DIR           # or app.distill(TASK, adapter=OUT_DIR); --force below min_traces

It also loads as `local:OUT_DIR/adapter` wherever a model spec goes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from protege.errors import UserError


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from protege.distill.base_models import resolve_base
    from protege.distill.pipeline import read_jsonl
    from protege.distill.train import TrainConfig, train_student
    from protege.settings import Settings

    train_file = Path(args.dataset) / "train.jsonl"
    if not train_file.is_file():
        raise UserError(f"{str(args.dataset)!r} has no train.jsonl; pass a folder `protege dataset build` wrote")
    config = TrainConfig(**json.loads(args.config))
    base = resolve_base(args.base, Settings().model_cache_dir)
    eval_file = Path(args.dataset) / "eval.jsonl"
    result = train_student(
        read_jsonl(train_file),
        base,
        args.out,
        config,
        eval_rows=read_jsonl(eval_file) if args.eval_loss and eval_file.is_file() else None,
    )
    print(
        json.dumps(
            {
                "adapter": str(result.adapter_path),
                "steps": result.steps,
                "wall_s": round(result.wall_s, 1),
                "tokens_per_s": round(result.tokens_per_s, 1),
                "eval_loss": result.eval_loss,
            }
        )
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m protege.distill.launch",
        description="Train a student on a built dataset, as a script (the form `accelerate launch` needs).",
    )
    ap.add_argument("dataset", help="a dataset folder (train.jsonl, eval.jsonl) from `protege dataset build`")
    ap.add_argument("out", help="where the student goes (OUT/adapter, OUT/checkpoints: a rerun resumes)")
    ap.add_argument("--base", default="smollm2-135m", help="student base: smollm2-135m, a local path or an HF id")
    ap.add_argument("--config", default="{}", help="TrainConfig fields as JSON, e.g. '{\"epochs\": 3}'")
    ap.add_argument("--eval-loss", action="store_true", help="also report the loss on the dataset's eval split")
    return ap


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as exc:
        sys.exit(f"error: {exc}")
