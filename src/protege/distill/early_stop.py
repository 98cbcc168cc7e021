"""Early stopping on held-out exact match (not loss): more epochs cost nothing when they do not help.

After every epoch the student as it stands answers a small selection sample — rows held out of training — with
the same decoder that serves it (`LocalModel`, batched, under the output schema's grammar). The epoch with the
best exact match is kept (its trainable weights are copied in memory; a LoRA adapter is a few MB), and training
stops once `patience` epochs in a row fail to beat it. Loss keeps falling while a student memorizes its
training answers; exact match on unseen inputs is what the cascade serves, so it is what picks the epoch.

The sample comes out of the training rows, never from the eval split: the eval report must stay a figure
nothing was tuned on.
"""

from __future__ import annotations

import gc
import json
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from protege.agents.models.base import Message, ModelRequest
from protege.agents.models.local import LocalModel


class EpochScore(BaseModel):
    """One epoch's exact match on the selection sample."""

    epoch: float
    exact_match: float


def split_selection(rows: Sequence[dict[str, Any]], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(training rows, selection rows): `n` rows drawn at random (seeded) out of `rows`, the rest kept in order."""
    picked = set(random.Random(seed).sample(range(len(rows)), n))
    return [r for i, r in enumerate(rows) if i not in picked], [r for i, r in enumerate(rows) if i in picked]


def expected_answer(row: dict[str, Any]) -> Any:
    """The answer a selection row should get: its parsed `output`, else its last (assistant) turn parsed."""
    if "output" in row:
        return row["output"]
    return _loads(row["messages"][-1].get("content") or "")


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


class _Snapshot(LocalModel):
    """A LocalModel on an engine of its own: never cached, so each epoch's copy is freed once scored."""

    def __init__(self, base: Path, adapter: Path | None, engine: Any):
        super().__init__(base, adapter=adapter)
        self._engine = engine

    @property
    def engine(self):
        return self._engine


def snapshot_exact_match(
    folder: Path,
    base_dir: Path,
    rows: Sequence[dict[str, Any]],
    output_schema: dict[str, Any] | None,
    threads: int | None,
) -> float:
    """Exact match of the student saved in `folder` (an adapter over `base_dir`, or a full checkpoint)."""
    from protege.agents.models.local_engine import Engine

    adapter = folder if (folder / "adapter_config.json").is_file() else None
    base = base_dir if adapter else folder
    engine = Engine(base, adapter, None, "auto", threads)
    try:
        model = _Snapshot(base, adapter, engine)
        budget = max(len(engine.tokenizer(r["messages"][-1]["content"])["input_ids"]) for r in rows) * 2 + 16
        requests = [
            ModelRequest(
                messages=[Message(role=m["role"], content=m.get("content") or "") for m in r["messages"][:-1]],
                output_schema=output_schema,
                max_tokens=budget,
            )
            for r in rows
        ]
        answers = model.generate_batch(requests, return_exceptions=True)
        hits = [not isinstance(a, Exception) and _loads(a.text) == expected_answer(r) for a, r in zip(answers, rows)]
        return sum(hits) / len(rows)
    finally:
        del engine
        gc.collect()


def early_stopping_callback(
    select_rows: Sequence[dict[str, Any]],
    base_dir: Path,
    tokenizer,
    scratch: Path,
    *,
    patience: int,
    output_schema: dict[str, Any] | None,
    threads: int | None,
):
    """A TrainerCallback that scores each epoch, remembers the best one's weights and stops after `patience`
    epochs without improvement; `restore_best(model)` puts the best epoch's weights back after training."""
    from transformers import TrainerCallback

    class EarlyStopping(TrainerCallback):
        def __init__(self) -> None:
            self.scores: list[EpochScore] = []
            self.best: EpochScore | None = None
            self.best_state: dict[str, Any] | None = None
            self.stopped_early = False

        def on_epoch_end(self, args, state, control, model=None, **kwargs):
            folder = scratch / f"epoch-{len(self.scores) + 1}"
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            try:
                score = snapshot_exact_match(folder, base_dir, select_rows, output_schema, threads)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            self.scores.append(EpochScore(epoch=round(state.epoch or 0.0, 3), exact_match=score))
            if self.best is None or score > self.best.exact_match:
                self.best = self.scores[-1]
                self.best_state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
            elif len(self.scores) - self.scores.index(self.best) - 1 >= patience:
                self.stopped_early = control.should_training_stop = True

        def restore_best(self, model) -> None:
            if self.best_state is None or self.best is self.scores[-1]:
                return
            for name, param in model.named_parameters():
                if name in self.best_state:
                    param.data.copy_(self.best_state[name])

    return EarlyStopping()
