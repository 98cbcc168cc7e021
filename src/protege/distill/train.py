"""Fine-tune a student: TRL `SFTTrainer`, every weight (the default) or PEFT LoRA adapters, on teacher traces
(DESIGN §8 step 6).

Rows are TRL conversational rows, ``{"messages": [{"role", "content"}, ...]}``; every assistant turn is a
completion and the loss is on completions only. What makes it fast on a CPU (measurements:
docs/student.md):

- shared-prefix batches: every prompt starts with the same system turn (the task's instructions), often most of
  the tokens. `_StudentTrainer` runs that prefix once per batch and lets every row attend to its key/value cache,
  instead of recomputing it for each row (same loss and gradients, fewer FLOPs);
- the LM head runs on completion positions only (the 49k-way projection of prompt tokens is wasted work);
- batches of similar lengths (`group_by_length`) instead of padding to the longest row of a random batch;
- on request (`TrainConfig.frozen_layers`, off by default: it cost quality), full fine-tuning leaves the lowest
  layers as the base's and autograd stops above them, so they cost a forward pass only;
- bf16 autocast where the hardware has bf16 matrix units (CPUs with AMX/AVX512-BF16, recent GPUs).

With `TrainConfig.early_stopping_patience` the epoch is chosen by exact match on rows held out of training
(`early_stop.py`), not by loss.

Several GPUs: launch the same call under ``accelerate launch`` (``accelerate config`` once; DDP, or FSDP/DeepSpeed
for bigger bases). Under several processes the trainer falls back to TRL's own loss (no shared prefix), because
DDP needs exactly one forward per backward.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from protege.agents.models.chat_format import with_student_prompt
from protege.distill.early_stop import EpochScore, early_stopping_callback, split_selection
from protege.distill.rare_nulls import repeat_rare_nulls
from protege.distill.sft_rows import (  # noqa: F401 - tokenize_row: re-exported, its old home
    TokenizedExample,
    check_rows,
    shared_prefix_len,
    tokenize_row,
    tokenize_rows,
)
from protege.errors import TrainingError, UserError

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
METADATA_FILE = "protege_student.json"


LEARNING_RATES = {"full": 2e-4, "lora": 1e-3}
"""The default learning rate of each method (docs/student.md: runs E, J and V)."""


class TrainConfig(BaseModel):
    """How a student is trained. Defaults are measured on the bundled base (docs/student.md)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["lora", "full"] = Field(
        default="full",
        description="update every weight (the default: measured best for a base this small) or train LoRA adapters",
    )
    prompt: Literal["instructions", "summary"] = Field(
        default="summary",
        description="the system turn the student is trained and served with: the instructions' first paragraph "
        "(the default: as good on the order workload and faster to train, docs/student.md run S) or all of them",
    )
    frozen_layers: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="full fine-tuning: the share of the decoder's lowest layers kept as the base's. Their backward "
        "pass is skipped (about two thirds of their cost: 1/3 trains ~20% faster); the token embeddings then learn "
        'through the LM head only. Opt-in: on the orders it cost quality (docs/student.md, "Frozen lower layers")',
    )
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: str | list[str] = Field(default="all-linear", description="PEFT target modules")
    epochs: float = Field(default=3.0, gt=0, description="passes over the rows (3 at lr 2e-4: docs/student.md, run V)")
    max_steps: int = Field(default=-1, description="stop after this many optimizer steps (-1: run all epochs)")
    learning_rate: float | None = Field(
        default=None,
        gt=0,
        description=f"None: the method's own ({', '.join(f'{k} {v:g}' for k, v in LEARNING_RATES.items())})",
    )
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=8, ge=1, description="rows per optimizer step (per device)")
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(
        default=2048, ge=16, description="rows longer than this (prompt + answer tokens) are skipped"
    )
    shared_prefix: bool = Field(default=True, description="run the prompt prefix all rows share once per batch")
    group_by_length: bool = True
    bf16: bool | None = Field(default=None, description="bf16 autocast; None = where the hardware supports it")
    seed: int = 0
    save_steps: int | None = Field(default=None, description="checkpoint every N steps; None = once per epoch")
    save_total_limit: int = Field(default=2, ge=1)
    logging_steps: int = Field(default=5, ge=1)
    torch_threads: int | None = Field(default=None, description="CPU threads for torch; None = torch's default")
    early_stopping_patience: int | None = Field(
        default=None,
        ge=1,
        description=(
            "after each epoch score exact match on rows held out of training; keep the best epoch and stop after "
            "this many epochs without a better one (None: off, train every epoch)"
        ),
    )
    early_stopping_rows: int = Field(default=32, ge=1, description="training rows held out to pick the epoch by")
    repeat_rare_nulls: bool = Field(
        default=False,
        description="repeat the rows where a usually-filled field is null (in under 5% of the rows) until such "
        "rows are ~5% of them, at most 4 times each, so the student learns when to answer null there "
        "(rare_nulls.py; opt-in: on the orders it fixed those nulls but not exact match, docs/student.md)",
    )

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, steps: int) -> int:
        # the trainer reads any value ≤ 0 as "no limit" (-3 ran every epoch) yet reports 0 as the total (1 step ran)
        if steps == 0 or steps < -1:
            raise ValueError(f"max_steps={steps!r}: pass a number of steps ≥ 1, or -1 to run every epoch")
        return steps

    @model_validator(mode="after")
    def _method_defaults(self) -> TrainConfig:
        if self.frozen_layers and self.method != "full":
            raise ValueError(
                f"frozen_layers={self.frozen_layers!r} applies to method='full'; LoRA already leaves the base frozen"
            )
        if self.learning_rate is None:  # a few adapter weights, started at zero, take a larger rate than all
            self.learning_rate = LEARNING_RATES[self.method]
        return self


class TrainResult(BaseModel):
    """What a training run produced: the adapter (or full model) dir and how the run went."""

    adapter_path: Path
    base: str
    method: str
    loss_history: list[tuple[int, float]] = Field(description="(step, training loss) as logged")
    train_loss: float | None = Field(default=None, description="mean training loss over the run")
    eval_loss: float | None = None
    train_tokens: int = Field(description="tokens of the training rows processed, prompts included")
    tokens_per_s: float
    wall_s: float
    steps: int
    rows: int
    skipped_rows: int = 0
    epoch_scores: list[EpochScore] = Field(
        default_factory=list, description="early stopping: each epoch's exact match on the rows held out to choose it"
    )
    best_epoch: float | None = Field(default=None, description="early stopping: the epoch whose weights were kept")
    stopped_early: bool = False
    rare_nulls: dict[str, int] = Field(
        default_factory=dict, description="fields rarely null in the rows: how many rows had them null (repeated)"
    )


class TrainProgress(BaseModel):
    """One progress report: handed to the `progress` callback after every optimizer step."""

    step: int
    total_steps: int
    epoch: float
    loss: float | None = None
    tokens: int = 0
    elapsed_s: float = 0.0


ProgressFn = Callable[[TrainProgress], None]


def train_student(
    train_rows: Sequence[dict[str, Any]],
    base_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    eval_rows: Sequence[dict[str, Any]] | None = None,
    progress: ProgressFn | None = None,
    output_schema: dict[str, Any] | None = None,
) -> TrainResult:
    """Train a student on `train_rows` from the checkpoint at `base_dir`; write it to `out_dir`/adapter.

    An interrupted run resumes from the newest checkpoint in `out_dir`/checkpoints. The saved dir holds the
    adapter (or full weights), the tokenizer and `protege_student.json` (base, config, metrics). With
    `config.early_stopping_patience`, `early_stopping_rows` of `train_rows` are held out and answered after every
    epoch (under `output_schema`'s grammar, when given) to keep the best epoch (`early_stop.py`). The rows' system
    turn is trained in the style `config.prompt` (`chat_format.student_system`), the one the student is served with.
    The memory training used is handed back to the system when it ends (`release_memory`).
    """
    try:
        return _train_student(
            train_rows, base_dir, out_dir, config, eval_rows=eval_rows, progress=progress, output_schema=output_schema
        )
    finally:
        release_memory()  # the trainer, its optimizer state and activations are garbage once _train_student returns


def release_memory() -> bool:
    """Collect garbage and hand freed host memory back to the OS (glibc's `malloc_trim`; whether it could), and
    the CUDA cache where torch has one. glibc keeps what a process freed for reuse: after 6 full fine-tuning steps
    of the 135M base the process held 5.8 GB it no longer used (0.63 GB after the trim), which a long-running app
    that distills now and then would keep."""
    import ctypes
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): its allocator decides
        return False
    trim(0)
    return True


def _train_student(
    train_rows: Sequence[dict[str, Any]],
    base_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None,
    *,
    eval_rows: Sequence[dict[str, Any]] | None,
    progress: ProgressFn | None,
    output_schema: dict[str, Any] | None,
) -> TrainResult:
    config = config or TrainConfig()
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    check_rows(train_rows, "train_rows")
    if eval_rows:
        check_rows(eval_rows, "eval_rows")
    train_rows = with_student_prompt(list(train_rows), config.prompt)
    eval_rows = with_student_prompt(list(eval_rows), config.prompt) if eval_rows else None
    select_rows: list[dict[str, Any]] = []
    if config.early_stopping_patience:
        train_rows, select_rows = _hold_out_selection(train_rows, config)
    repeated: dict[str, int] = {}
    if config.repeat_rare_nulls:  # after the selection rows are held out: none of them is also trained on
        train_rows, repeated = repeat_rare_nulls(train_rows)
    if not (base_dir / "config.json").is_file():
        raise UserError(f"base {str(base_dir)!r} is not a checkpoint dir; resolve it with resolve_base() first")

    import torch

    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    tokenizer, model = _load_for_training(base_dir, config)
    examples, skipped = tokenize_rows(tokenizer, train_rows, config.max_length)
    if not examples:
        raise UserError(
            f"every training row is longer than max_length={config.max_length} tokens; raise TrainConfig.max_length"
        )
    eval_examples = tokenize_rows(tokenizer, eval_rows, config.max_length)[0] if eval_rows else None
    trainer = _build_trainer(model, tokenizer, examples, eval_examples, out_dir, config, progress)
    stopper = None
    if select_rows and config.early_stopping_patience:
        stopper = early_stopping_callback(
            select_rows,
            base_dir,
            tokenizer,
            out_dir / "selection",
            patience=config.early_stopping_patience,
            output_schema=output_schema,
            threads=config.torch_threads,
        )
        trainer.add_callback(stopper)
    checkpoint = _last_checkpoint(out_dir / CHECKPOINT_DIR)
    started = time.perf_counter()
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(f"training on {str(base_dir)!r} failed: {exc}") from exc
    wall = time.perf_counter() - started
    if stopper is not None:
        stopper.restore_best(trainer.model)
        shutil.rmtree(out_dir / "selection", ignore_errors=True)
    eval_loss = trainer.evaluate()["eval_loss"] if eval_examples else None
    result = _result(trainer, examples, skipped, base_dir, out_dir, config, wall, eval_loss)
    result.train_loss = output.training_loss
    result.rare_nulls = repeated
    if stopper is not None:
        result.epoch_scores, result.stopped_early = stopper.scores, stopper.stopped_early
        result.best_epoch = stopper.best.epoch if stopper.best else None
    _save_atomically(trainer.model, tokenizer, out_dir / ADAPTER_DIR, config, result)
    return result


def _hold_out_selection(rows: Sequence[dict[str, Any]], config: TrainConfig) -> tuple[list[dict], list[dict]]:
    n = config.early_stopping_rows
    if len(rows) < 2 * n:
        raise UserError(
            f"early stopping holds out early_stopping_rows={n} of the {len(rows)} training rows, which "
            f"leaves too few to train on; lower early_stopping_rows or set early_stopping_patience=None"
        )
    return split_selection(rows, n, config.seed)


def _load_for_training(base_dir: Path, config: TrainConfig):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    set_seed(config.seed)  # the adapters' initial weights too: the same seed gives the same student in any process
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # LoRA with bf16: the frozen base is stored in bf16 (no per-op casts of its weights, half the memory traffic)
    # while PEFT keeps the adapters, which the optimizer updates, in float32.
    frozen_bf16 = config.method == "lora" and use_bf16(config)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16 if frozen_bf16 else torch.float32)
    model.config.use_cache = False
    if config.method == "lora":
        return tokenizer, _with_lora(model, config, frozen_bf16)
    if config.frozen_layers:
        freeze_lower_layers(model, config.frozen_layers)
    return tokenizer, model


def freeze_lower_layers(model: Any, share: float) -> int:
    """Keep the lowest `share` of the decoder's layers as they are; return how many that is.

    Autograd then stops at the first trainable layer, so the frozen ones cost a forward pass only. The embedding
    lookup's output is detached for that: with tied weights (SmolLM2, Gemma) the table still learns, through the
    LM head.
    """
    layers = getattr(model.get_decoder(), "layers", None)
    if layers is None:
        raise UserError(
            f"frozen_layers={share!r}: {type(model).__name__} has no decoder `layers` to freeze; "
            "set TrainConfig.frozen_layers=0 for this base"
        )
    frozen = round(len(layers) * share)
    for layer in layers[:frozen]:
        layer.requires_grad_(False)
    if frozen:
        model.get_input_embeddings().register_forward_hook(lambda _module, _args, output: output.detach())
    return frozen


def _with_lora(model: Any, config: TrainConfig, frozen_bf16: bool) -> Any:
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.target_modules,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    if frozen_bf16:  # autocast runs the adapters in bf16 too; PEFT's own fp32 cast of x would only add copies
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                module.cast_input_dtype_enabled = False
    return peft_model


def use_bf16(config: TrainConfig) -> bool:
    """bf16 autocast when asked, else where the hardware has bf16 matrix units."""
    if config.bf16 is not None:
        return config.bf16
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return _cpu_has_bf16_units()


def _cpu_has_bf16_units() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def _build_trainer(model, tokenizer, examples, eval_examples, out_dir: Path, config: TrainConfig, progress):
    from datasets import Dataset
    from trl import SFTConfig

    def as_dataset(items: list[TokenizedExample]) -> Dataset:
        return Dataset.from_list(
            [{"input_ids": e.input_ids, "labels": e.labels, "length": len(e.input_ids)} for e in items]
        )

    args = SFTConfig(
        output_dir=str(out_dir / CHECKPOINT_DIR),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate or LEARNING_RATES[config.method],
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_length=config.max_length,
        bf16=use_bf16(config),
        activation_checkpointing=False,  # recomputing activations: slower, and memory is not short
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        length_column_name="length",
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=not _has_accelerator(),
    )
    callback = _progress_callback(progress) if progress else None
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=as_dataset(examples),
        eval_dataset=as_dataset(eval_examples) if eval_examples else None,
        processing_class=tokenizer,
        callbacks=[callback] if callback else None,
        shared_prefix=config.shared_prefix,
    )
    if callback:
        callback.trainer = trainer
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; `progress` reports to the caller instead
    return trainer


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())


def _last_checkpoint(checkpoints: Path) -> Path | None:
    if not checkpoints.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    found = get_last_checkpoint(str(checkpoints))
    return Path(found) if found else None


def _result(trainer, examples, skipped, base_dir, out_dir, config, wall, eval_loss) -> TrainResult:
    history = [(int(h["step"]), float(h["loss"])) for h in trainer.state.log_history if "loss" in h]
    tokens = trainer.train_tokens
    return TrainResult(
        adapter_path=out_dir / ADAPTER_DIR,
        base=str(base_dir),
        method=config.method,
        loss_history=history,
        eval_loss=eval_loss,
        train_tokens=tokens,
        tokens_per_s=tokens / wall if wall > 0 else 0.0,
        wall_s=wall,
        steps=trainer.state.global_step,
        rows=len(examples),
        skipped_rows=skipped,
    )


def _save_atomically(model, tokenizer, target: Path, config: TrainConfig, result: TrainResult) -> None:
    """Write adapter + tokenizer + metadata into a temp dir, then swap it in: readers never see half a student."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        meta = {
            "base": result.base,
            "method": config.method,
            "config": config.model_dump(mode="json"),
            "metrics": result.model_dump(mode="json", exclude={"adapter_path"}),
        }
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(f"could not save the student to {str(target)!r}: {exc}") from exc


def read_metadata(path: str | Path) -> dict[str, Any] | None:
    """The metadata a trained student dir carries, or None for a plain checkpoint."""
    meta = Path(path) / METADATA_FILE
    return json.loads(meta.read_text()) if meta.is_file() else None


# -- the trainer ---------------------------------------------------------------------------------------------------


def _trainer_class():
    """SFTTrainer with a loss that shares the prompt prefix and runs the LM head on labelled positions only."""
    import torch
    import torch.nn.functional as F
    from trl import SFTTrainer

    class StudentTrainer(SFTTrainer):
        def __init__(self, *args, shared_prefix: bool = True, **kwargs):
            self.shared_prefix = shared_prefix
            self.train_tokens = 0
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs or self.accelerator.num_processes > 1 or "attention_mask" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            if model.training:
                self.train_tokens += int(mask.sum())
            causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
            prefix = shared_prefix_len(ids, labels) if self.shared_prefix and ids.shape[0] > 1 else 0
            # accelerate applies autocast by wrapping model.forward, which this path does not call
            with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=self.args.bf16):
                hidden = _hidden_states(causal_lm.get_decoder(), ids, mask, prefix)
                targets = labels[:, prefix + 1 :]
                selected = targets != -100
                logits = causal_lm.get_output_embeddings()(hidden[:, :-1][selected]).float()
            chosen = targets[selected]
            count = num_items_in_batch if num_items_in_batch is not None else selected.sum().clamp(min=1)
            loss = F.cross_entropy(logits, chosen, reduction="sum") / count
            mode = "train" if model.training else "eval"
            with torch.no_grad():
                accuracy = (logits.argmax(-1) == chosen).float().mean().item() if len(chosen) else 0.0
            self._metrics[mode]["mean_token_accuracy"].append(accuracy)
            self._metrics[mode]["num_tokens"] = [self.train_tokens]
            return loss

    return StudentTrainer


def _hidden_states(decoder, ids, mask, prefix: int):
    """Last hidden states of positions prefix..end; the first `prefix` tokens run once for the whole batch."""
    import torch

    if prefix == 0:
        return decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    head = decoder(input_ids=ids[:1, :prefix], use_cache=True)
    cache = head.past_key_values
    batch = ids.shape[0]
    for layer in cache.layers:
        layer.keys = layer.keys.expand(batch, -1, -1, -1)
        layer.values = layer.values.expand(batch, -1, -1, -1)
    positions = torch.arange(prefix, ids.shape[1], device=ids.device).expand(batch, -1)
    out = decoder(
        input_ids=ids[:, prefix:], attention_mask=mask, past_key_values=cache, position_ids=positions, use_cache=True
    )
    return out.last_hidden_state


def _progress_callback(progress: ProgressFn):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def __init__(self) -> None:
            self.started = time.perf_counter()
            self.loss: float | None = None
            self.trainer: Any = None  # set once the trainer exists: it counts the tokens

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args, state, control, **kwargs):
            progress(
                TrainProgress(
                    step=state.global_step,
                    total_steps=state.max_steps,
                    epoch=state.epoch or 0.0,
                    loss=self.loss,
                    tokens=getattr(self.trainer, "train_tokens", 0),
                    elapsed_s=time.perf_counter() - self.started,
                )
            )

    return ProgressCallback()
