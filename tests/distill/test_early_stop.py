"""Early stopping on held-out exact match (distill/early_stop.py) on a tiny random Llama: each epoch is scored by
the serving decoder on rows held out of training, the best epoch's weights are the ones saved, training stops
after `patience` epochs without a better score, and too few rows is a UserError."""

from __future__ import annotations

import pytest
from student_support import chat_row

from protege.distill.early_stop import expected_answer, snapshot_exact_match, split_selection
from protege.distill.train import ADAPTER_DIR, CHECKPOINT_DIR, TrainConfig, train_student
from protege.errors import UserError

SCHEMA = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
WORDS = [
    "apple",
    "river",
    "stone",
    "cloud",
    "ember",
    "maple",
    "ocean",
    "pearl",
    "quartz",
    "raven",
    "tiger",
    "violet",
    "willow",
    "amber",
    "cedar",
    "delta",
    "falcon",
    "garnet",
    "harbor",
    "iris",
]
# every input gets the same answer: a pattern even a 2-layer random model learns, so held-out rows can be right
ROWS = [chat_row("Label the word.", {"word": w}, {"label": "yes"}) for w in WORDS]
FAST = {
    "method": "full",
    "learning_rate": 1e-2,
    "batch_size": 4,
    "logging_steps": 1,
    "torch_threads": 2,
    "warmup_ratio": 0.0,
    "lr_scheduler": "constant",
    "bf16": False,
}


def test_the_best_epoch_is_kept_and_training_stops_when_it_stops_improving(tiny_base, tmp_path):
    """Ten epochs asked, patience 2: the run ends two epochs after its best score, and the saved weights are the
    best epoch's (equal to that epoch's checkpoint), not the last epoch's."""
    from safetensors.torch import load_file

    config = TrainConfig(**FAST, epochs=10, early_stopping_patience=2, early_stopping_rows=4, save_total_limit=10)
    result = train_student(ROWS, tiny_base, tmp_path / "s", config, output_schema=SCHEMA)
    scores = [s.exact_match for s in result.epoch_scores]
    best = scores.index(max(scores))
    assert max(scores) == 1.0, scores  # the constant answer is learned, and scored right on held-out rows
    assert result.stopped_early and len(scores) == best + 3 < 10, scores
    assert result.best_epoch == result.epoch_scores[best].epoch and result.rows == 16  # 4 rows held out
    steps_per_epoch = result.steps // len(scores)
    best_checkpoint = tmp_path / "s" / CHECKPOINT_DIR / f"checkpoint-{steps_per_epoch * (best + 1)}"
    saved = load_file(result.adapter_path / "model.safetensors")
    at_best = load_file(best_checkpoint / "model.safetensors")
    last = load_file(tmp_path / "s" / CHECKPOINT_DIR / f"checkpoint-{result.steps}" / "model.safetensors")
    assert all((saved[k] == at_best[k]).all() for k in at_best)
    assert any((saved[k] != last[k]).any() for k in last)  # the later epochs' weights were dropped


def test_the_saved_student_scores_what_its_epoch_scored(tiny_base, tmp_path):
    """Scoring the saved student on the same held-out rows gives the kept epoch's figure; without early
    stopping no rows are held out and no epochs are scored."""
    config = TrainConfig(**FAST, epochs=3, early_stopping_patience=1, early_stopping_rows=4)
    result = train_student(ROWS, tiny_base, tmp_path / "s", config, output_schema=SCHEMA)
    _, held_out = split_selection(ROWS, 4, config.seed)
    kept = next(s for s in result.epoch_scores if s.epoch == result.best_epoch)
    assert snapshot_exact_match(result.adapter_path, tiny_base, held_out, SCHEMA, 2) == kept.exact_match
    plain = train_student(ROWS, tiny_base, tmp_path / "p", TrainConfig(**FAST, max_steps=2))
    assert plain.epoch_scores == [] and plain.best_epoch is None and plain.rows == 20
    assert (tmp_path / "s" / ADAPTER_DIR).is_dir() and not (tmp_path / "s" / "selection").exists()


def test_selection_rows_come_out_of_training_and_are_seeded():
    """The held-out rows are drawn by seed, disjoint from the rows trained on; the answer is the row's output."""
    train, select = split_selection(ROWS, 4, seed=0)
    assert len(train) == 16 and len(select) == 4 and not [r for r in select if r in train]
    assert split_selection(ROWS, 4, seed=0) == (train, select) and split_selection(ROWS, 4, seed=1) != (train, select)
    assert expected_answer(select[0]) == {"label": "yes"}
    assert expected_answer({"messages": select[0]["messages"]}) == {"label": "yes"}


def test_too_few_rows_for_early_stopping_is_a_user_error(tiny_base, tmp_path):
    with pytest.raises(UserError, match="early_stopping_rows=32 of the 20 training rows"):
        train_student(ROWS, tiny_base, tmp_path / "s", TrainConfig(early_stopping_patience=1))
