"""Student training (DESIGN §8 step 6) on a tiny random Llama: loss falls, the student is saved atomically with
its metadata, an interrupted run resumes, bad input is a UserError — and, marked slow, the real bundled base."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from student_support import chat_row

from protege.distill.train import (
    ADAPTER_DIR,
    CHECKPOINT_DIR,
    LEARNING_RATES,
    METADATA_FILE,
    TrainConfig,
    TrainResult,
    _save_atomically,
    freeze_lower_layers,
    read_metadata,
    tokenize_row,
    train_student,
)
from protege.errors import TrainingError, UserError

INSTRUCTIONS = "Sort the message into a queue."
MESSAGES = [
    ("refund my card", "billing"),
    ("app crashes on start", "bug"),
    ("reset my password", "account"),
    ("nice weather", "other"),
]
ROWS = [chat_row(INSTRUCTIONS, {"text": text}, {"queue": queue}) for text, queue in MESSAGES]
FAST = {
    "method": "full",
    "learning_rate": 1e-2,
    "batch_size": 4,
    "logging_steps": 1,
    "torch_threads": 2,
    "warmup_ratio": 0.0,
    "lr_scheduler": "constant",
}


def test_loss_falls_on_a_tiny_overfit_set(tiny_base, tmp_path):
    """A few steps on four rows: the logged training loss falls well below where it started."""
    result = train_student(ROWS, tiny_base, tmp_path / "s", TrainConfig(**FAST, max_steps=12))
    losses = [loss for _, loss in result.loss_history]
    assert result.steps == 12 and len(losses) == 12
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.rows == 4 and result.train_tokens > 0 and result.tokens_per_s > 0


def test_training_hands_its_memory_back_when_it_ends(tiny_base, tmp_path, monkeypatch):
    """Once training ends — finished or failed — garbage is collected and freed heap handed back to the system
    (glibc keeps it otherwise: 5.8 GB after a few full fine-tuning steps of the real base), after the trainer is
    gone."""
    import gc
    import weakref

    from protege.distill import train

    released, trainers = [], []
    build = train._build_trainer

    def recording_build(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainers.append(weakref.ref(trainer))
        return trainer

    def recording_release():
        gc.collect()
        released.append(trainers[-1]() is None if trainers else None)
        return True

    monkeypatch.setattr(train, "_build_trainer", recording_build)
    monkeypatch.setattr(train, "release_memory", recording_release)
    train_student(ROWS, tiny_base, tmp_path / "s", TrainConfig(**FAST, max_steps=1))
    with pytest.raises(UserError):
        train_student(ROWS, tmp_path / "no-base", tmp_path / "t", TrainConfig(**FAST, max_steps=1))
    assert released == [True, True]  # the trainer was already garbage when memory was released


def test_memory_is_released_to_the_system_where_the_allocator_allows():
    """glibc's malloc_trim where the C library is glibc; elsewhere nothing to call, and no error."""
    import platform

    from protege.distill.train import release_memory

    assert release_memory() is (platform.libc_ver()[0] == "glibc")


def test_student_dir_holds_adapter_tokenizer_and_metadata(tiny_base, tmp_path):
    """LoRA saves an adapter; the student dir names its base and carries config and metrics; no temp dir or half
    copy is left."""
    out = tmp_path / "student"
    result = train_student(ROWS, tiny_base, out, TrainConfig(**{**FAST, "method": "lora"}, max_steps=2))
    assert result.adapter_path == out / ADAPTER_DIR
    meta = read_metadata(result.adapter_path)
    assert meta["base"] == str(tiny_base) and meta["method"] == "lora"
    assert meta["config"]["max_steps"] == 2 and meta["metrics"]["steps"] == 2
    assert (result.adapter_path / "tokenizer_config.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == [ADAPTER_DIR, CHECKPOINT_DIR]
    assert (result.adapter_path / "adapter_config.json").is_file()
    assert not (result.adapter_path / "model.safetensors").exists()  # an adapter, not a copy of the base
    assert read_metadata(tiny_base) is None  # a plain checkpoint has none


def test_each_method_has_its_own_default_learning_rate():
    """Full fine-tuning is the default; a learning rate left unset is the method's own, a given one is kept."""
    assert TrainConfig().method == "full" and TrainConfig().learning_rate == LEARNING_RATES["full"]
    assert TrainConfig(method="lora").learning_rate == LEARNING_RATES["lora"] > LEARNING_RATES["full"]
    assert TrainConfig(method="lora", learning_rate=3e-4).learning_rate == 3e-4


@pytest.mark.parametrize("steps", [0, -3])
def test_max_steps_is_a_positive_count_or_minus_one(steps):
    """max_steps=-3 was silently ignored (every epoch ran) and 0 trained a step, shown as `train 1/0`."""
    with pytest.raises(ValueError, match=rf"max_steps={steps}: pass a number of steps ≥ 1, or -1 to run every epoch"):
        TrainConfig(max_steps=steps)
    assert TrainConfig(max_steps=-1).max_steps == -1 and TrainConfig(max_steps=1).max_steps == 1


def test_frozen_layers_keep_the_base_below_and_train_above(tiny_base, tmp_path):
    """With the lower half frozen, layer 0 stays the base's weight for weight while layer 1 and the tied
    embeddings (through the LM head) learn; LoRA refuses the option, which only full fine-tuning has."""
    from safetensors.torch import load_file

    result = train_student(ROWS, tiny_base, tmp_path / "s", TrainConfig(**FAST, max_steps=2, frozen_layers=0.5))
    base = load_file(tiny_base / "model.safetensors")
    trained = load_file(result.adapter_path / "model.safetensors")
    changed = {name for name, weight in base.items() if not weight.equal(trained[name])}
    assert changed and not any(name.startswith("model.layers.0.") for name in changed), sorted(changed)
    assert any(name.startswith("model.layers.1.") for name in changed)
    assert "model.embed_tokens.weight" in changed
    with pytest.raises(ValueError, match="frozen_layers"):
        TrainConfig(method="lora", frozen_layers=0.5)


def test_a_base_without_decoder_layers_cannot_freeze_them():
    """Asked to freeze the lower layers of a base whose decoder has no `layers` list: an error naming the fix."""
    from types import SimpleNamespace

    model = SimpleNamespace(get_decoder=lambda: SimpleNamespace())
    with pytest.raises(UserError, match="frozen_layers=0.5.*set TrainConfig.frozen_layers=0"):
        freeze_lower_layers(model, 0.5)


def test_a_failed_save_leaves_the_previous_student_intact(tmp_path):
    """Saving writes into a temp dir and swaps it in: a crash mid-save keeps the old student and no debris."""
    target = tmp_path / ADAPTER_DIR
    target.mkdir()
    (target / METADATA_FILE).write_text('{"base": "old"}')

    class CrashingModel:
        def save_pretrained(self, folder):
            (Path(folder) / "adapter_model.safetensors").write_bytes(b"half")
            raise OSError("disk full")

    result = TrainResult(
        adapter_path=target,
        base="new",
        method="lora",
        loss_history=[],
        train_tokens=0,
        tokens_per_s=0,
        wall_s=0,
        steps=0,
        rows=0,
    )
    with pytest.raises(TrainingError, match="disk full"):
        _save_atomically(CrashingModel(), None, target, TrainConfig(), result)
    assert json.loads((target / METADATA_FILE).read_text()) == {"base": "old"}
    assert [p.name for p in tmp_path.iterdir()] == [ADAPTER_DIR]


def test_the_seed_decides_the_adapters_whatever_ran_before(tiny_base, tmp_path):
    """LoRA's initial weights come from `TrainConfig.seed`, not from whatever drew random numbers earlier in the
    process: the same seed trains the same adapter, another seed another one."""
    import torch
    from safetensors.torch import load_file

    def adapter(name: str, seed: int) -> dict:
        torch.rand(1000)  # what an app may have drawn before distilling
        config = TrainConfig(**{**FAST, "method": "lora"}, max_steps=1, seed=seed)
        result = train_student(ROWS, tiny_base, tmp_path / name, config)
        return load_file(result.adapter_path / "adapter_model.safetensors")

    first, again, other = adapter("a", 0), adapter("b", 0), adapter("c", 1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tiny_base, tmp_path):
    """A second call into the same folder continues from the saved step instead of starting again."""
    out = tmp_path / "s"
    config = {**FAST, "save_steps": 1, "logging_steps": 1}
    first = train_student(ROWS, tiny_base, out, TrainConfig(**config, max_steps=2))
    assert (out / CHECKPOINT_DIR / "checkpoint-2").is_dir()
    steps_run: list[int] = []
    second = train_student(
        ROWS, tiny_base, out, TrainConfig(**config, max_steps=3), progress=lambda p: steps_run.append(p.step)
    )
    assert steps_run == [3]  # steps 1 and 2 came from the checkpoint
    assert second.steps == 3 and second.loss_history[:2] == first.loss_history


def test_labels_cover_exactly_the_answer(tiny_base):
    """Loss is on the assistant's answer (and its end-of-turn token) only, never on the prompt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    example = tokenize_row(tokenizer, ROWS[0]["messages"])
    labelled = [t for t in example.labels if t != -100]
    assert tokenizer.decode(labelled) == '{"queue":"billing"}<|im_end|>\n'
    first = example.labels.index(labelled[0])
    assert all(t == -100 for t in example.labels[:first]) and len(example.input_ids) == len(example.labels)


def test_shared_prefix_gives_the_same_hidden_states(tiny_base):
    """Running the shared prompt prefix once per batch is exact: every row's states match a full forward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.distill.train import _hidden_states, shared_prefix_len

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    examples = [tokenize_row(tokenizer, row["messages"]) for row in ROWS]
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), tokenizer.pad_token_id)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):  # right padding, as the collator pads
        ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, : len(e.labels)] = torch.tensor(e.labels)
        mask[i, : len(e.input_ids)] = 1
    prefix = shared_prefix_len(ids, labels)
    assert prefix > 5  # the system turn at least
    with torch.no_grad():
        full = _hidden_states(model.get_decoder(), ids, mask, 0)[:, prefix:]
        shared = _hidden_states(model.get_decoder(), ids, mask, prefix)
    real = mask[:, prefix:].bool()
    assert torch.allclose(full[real], shared[real], atol=1e-4)


def test_bad_input_is_a_user_error(tiny_base, tmp_path):
    """Empty rows, a row without an answer turn, a base that is not a checkpoint, rows longer than max_length."""
    with pytest.raises(UserError, match="train_rows is empty"):
        train_student([], tiny_base, tmp_path)
    with pytest.raises(UserError, match="does not end with an assistant turn"):
        train_student([{"messages": ROWS[0]["messages"][:-1]}], tiny_base, tmp_path)
    with pytest.raises(UserError, match="not a checkpoint dir"):
        train_student(ROWS, tmp_path, tmp_path / "s")
    with pytest.raises(UserError, match="max_length=16"):
        train_student(ROWS, tiny_base, tmp_path / "s", TrainConfig(max_length=16))


@pytest.mark.slow
def test_real_base_learns_and_its_adapter_answers(smollm2_base, tmp_path):
    """The bundled SmolLM2 base: a few LoRA steps on a handful of rows lower the loss, and the saved adapter
    loads as a `local:` model that answers a training input correctly under the output schema.

    Deterministic by construction, with margins the numerics cannot cross: float32 (bf16 autocast rounds
    differently by CPU and kernel choice) and a learning rate that decays to zero (a constant 2e-3 made the
    loss bounce, 0.03 → 0.18, so the last step's weights were a matter of luck). Measured on 2 loaded cores:
    the loss goes 4.37 → 0.006 and the answer's least-sure token has probability 0.997."""
    from pydantic import BaseModel

    from protege.agents.models.base import Message, ModelRequest
    from protege.agents.models.local import LocalModel

    class Queue(BaseModel):
        queue: str

    rows = [chat_row(INSTRUCTIONS, {"text": t}, {"queue": q}) for t, q in MESSAGES]
    config = TrainConfig(
        method="lora",  # what the margins below were measured with (full fine-tuning is the default)
        learning_rate=2e-3,
        batch_size=4,
        max_steps=8,
        logging_steps=1,
        torch_threads=2,
        warmup_ratio=0.0,
        lr_scheduler="linear",
        bf16=False,
    )
    started = time.perf_counter()
    result = train_student(rows, smollm2_base, tmp_path / "s", config)
    losses = [loss for _, loss in result.loss_history]
    assert losses[-1] < 0.2 * losses[0], losses  # measured: 0.0014 of the first
    model = LocalModel(result.adapter_path, threads=2)
    prompt = [Message(role=m["role"], content=m["content"]) for m in rows[0]["messages"][:-1]]
    answer = model.generate(ModelRequest(messages=prompt, output_schema=Queue.model_json_schema(), max_tokens=64))
    assert Queue.model_validate_json(answer.text) == Queue(queue="billing")
    assert 0.0 <= answer.confidence <= 1.0
    print(f"real base: {result.steps} steps in {result.wall_s:.1f}s, total {time.perf_counter() - started:.1f}s")


def test_the_launch_script_trains_under_accelerate_launch(tiny_base, tmp_path):
    """`accelerate launch -m protege.distill.launch DATASET OUT` (here one CPU process) trains a student from a
    dataset folder and writes its weights; a folder that is no dataset is a one-line error."""
    import subprocess
    import sys

    dataset = tmp_path / "ds"
    dataset.mkdir()
    rows = [chat_row("Say the word.", {"w": w}, {"word": w}) for w in ("yes", "no", "maybe", "never")]
    (dataset / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "protege.distill.launch",
    ]
    done = subprocess.run(
        [
            *launch,
            str(dataset),
            str(tmp_path / "out"),
            "--base",
            str(tiny_base),
            "--config",
            '{"max_steps": 2, "torch_threads": 1}',
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["steps"] == 2 and (tmp_path / "out" / "adapter" / "model.safetensors").is_file()  # full weights
    bad = subprocess.run(
        [sys.executable, "-m", "protege.distill.launch", str(tmp_path), str(tmp_path / "o2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "has no train.jsonl" in bad.stderr
