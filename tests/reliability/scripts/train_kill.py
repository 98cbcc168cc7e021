"""Worker: train a student on a tiny base; optionally SIGKILL itself at a given optimizer step.

    python train_kill.py BASE_DIR OUT_DIR STEPS_LOG KILL_AT_STEP(0 = never) [--build-and-train]

With --build-and-train the tiny base is built into BASE_DIR first (one process, one import of transformers).

Appends every optimizer step it reports to STEPS_LOG (one per line), so the parent sees where a run started.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tiny_base import ROWS, TRAIN_CONFIG, build_tiny_base


def main() -> None:
    base, out, log, kill_at = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
    if "--build-and-train" in sys.argv:
        build_tiny_base(base, [m["content"] for r in ROWS for m in r["messages"]])
    from protege.distill.train import TrainConfig, train_student

    def progress(p) -> None:
        with open(log, "a") as f:
            f.write(f"{p.step}\n")
        if p.step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # a checkpoint of an earlier step is on disk by now

    result = train_student(ROWS, base, out, TrainConfig(**TRAIN_CONFIG), progress=progress)
    print(f"steps={result.steps} adapter={result.adapter_path}")


if __name__ == "__main__":
    main()
