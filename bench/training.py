"""Student training speed: protege's default training (`train_student` with the default `TrainConfig`) vs the plain
recipe of DESIGN §8 — stock TRL `SFTTrainer`, prompt/completion rows (completion-only loss), PEFT LoRA r=16 on all
linear layers, lr 3e-4, batch 8, fp32 — on the same rows of the bundled workload, in the same process; and the
default again with the whole instructions as the student's prompt (`TrainConfig(prompt="instructions")`), for what
the default's short prompt saves.

The runs are short (a fixed number of optimizer steps over exactly steps × 8 rows, one pass), timed around
`trainer.train()` only, and compared in training examples per second: the same rows, each as its recipe trains it
(the plain one with the whole instructions as the system turn; protege's default with its `TrainConfig.prompt`
style, so a shorter prompt counts as the saving it is, not as more tokens per second). Rounds reverse the order;
the medians are quoted. The full default training's wall time is
projected from the measured rate (and quoted as measured when the quality benchmark distilled in this run).
"""

from __future__ import annotations

import inspect
import time
from statistics import median
from typing import Any

from bench.common import Context, Headline, Result, Table

TITLE = "Student training speed"
TARGET_RATIO = 2.0
BATCH = 8
PLAIN = {"lora_r": 16, "lora_alpha": 32, "learning_rate": 3e-4, "epochs": 2, "batch_size": BATCH}
# each recipe's label and TrainConfig fields over the default; "instructions": what the default's short prompt saves
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "plain": ("plain recipe (DESIGN §8)", {}),
    "default": ("protege default", {}),
    "instructions": ("protege default, the whole instructions as prompt", {"prompt": "instructions"}),
}


def run(ctx: Context, steps: int | None = None, rounds: int | None = None) -> Result:
    from protege.distill.base_models import resolve_base
    from protege.distill.train import TrainConfig

    steps, rounds = steps or ctx.pick(2, 10), rounds or ctx.pick(1, 2)
    base = resolve_base("smollm2-135m", ctx.cache_dir)
    rows, tokens = student_rows(base, steps * BATCH)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RECIPES}
    for r in range(rounds):
        order = list(RECIPES) if r % 2 == 0 else list(reversed(RECIPES))
        for kind in order:
            ctx.log(f"[bench] training: {kind} recipe, {steps} steps (round {r + 1}/{rounds})")
            run_one = plain_run if kind == "plain" else default_run
            runs[kind].append(run_one(ctx, base, rows, steps, **RECIPES[kind][1]))
    rate = {k: median([len(rows) / x["wall_s"] for x in v]) for k, v in runs.items()}
    ratio = rate["default"] / rate["plain"]
    default_cfg = TrainConfig()
    result = Result(data={"steps": steps, "rows": len(rows), "tokens": tokens, "runs": runs, "rows_per_s": rate})
    result.headlines.append(
        Headline(
            metric="training examples/s, protege default",
            value=rate["default"],
            unit="rows/s",
            baseline=rate["plain"],
            baseline_label="plain TRL+LoRA recipe, rows/s",
            target=f"≥ {TARGET_RATIO:g}× the plain recipe",
            met=ratio >= TARGET_RATIO,
        )
    )
    pool_rows = int(900 * 0.8)  # the bundled pool's train split
    table = [
        [
            label,
            median(x["wall_s"] for x in runs[kind]),
            rate[kind],
            rate[kind] / rate["plain"],
            pool_rows * (PLAIN["epochs"] if kind == "plain" else default_cfg.epochs) / rate[kind] / 60,
        ]
        for kind, (label, _) in RECIPES.items()
    ]
    result.tables.append(
        Table(
            f"Short runs: {steps} steps × batch {BATCH} = {len(rows)} rows ({tokens:,} tokens with the whole "
            "instructions)",
            ["recipe", "wall s (median)", "rows/s", "× plain", "projected full run, min"],
            table,
        )
    )
    measured = [(w, d["train"]) for w, d in ctx.shared.get("distill", {}).items() if d.get("train")]
    for workload, train in measured:
        result.tables.append(
            Table(
                f"Measured: app.distill's training on {workload} (this run)",
                ["rows", "tokens", "wall s", "tokens/s"],
                [[train.get("rows"), train.get("train_tokens"), train.get("wall_s"), train.get("tokens_per_s")]],
            )
        )
    result.notes.append(
        f"Default config: {_described(default_cfg)}. "
        f"'Projected full run' = {pool_rows} rows (the bundled pool's train split) × epochs (plain 2, default "
        f"{default_cfg.epochs:g}) ÷ the measured rows/s."
    )
    return result


def _described(config: Any) -> str:
    """The recipe's main settings, for people: 'full fine-tuning, prompt summary, 3 epochs, lr 0.0002 (cosine), …'."""
    method = "full fine-tuning" if config.method == "full" else f"LoRA r={config.lora_r}"
    return (
        f"{method}, prompt {config.prompt}, {config.epochs:g} epochs, lr {config.learning_rate:g} "
        f"({config.lr_scheduler}), batch {config.batch_size}, shared prefix {'on' if config.shared_prefix else 'off'}"
    )


def student_rows(base: Any, n: int) -> tuple[list[dict[str, Any]], int]:
    """n training rows of the bundled workload in the student's chat format, and their total token count."""
    from transformers import AutoTokenizer

    from protege.agents.models.chat_format import render_answer, student_messages, to_chat_dicts
    from protege.agents.models.chat_render import render_chat
    from protege.demo.workload import extract_order, load_examples

    instructions = inspect.getdoc(extract_order) or ""  # what TaskSpec makes of the docstring
    examples = load_examples("pool")
    rows = []
    for i in range(n):
        ex = examples[i % len(examples)]
        chat = to_chat_dicts(student_messages(instructions, ex["input"]))
        rows.append({"messages": [*chat, {"role": "assistant", "content": render_answer(ex["output"])}]})
    tokenizer = AutoTokenizer.from_pretrained(base)
    tokens = sum(len(render_chat(tokenizer, r["messages"], generation_prompt=False)) for r in rows)
    return rows, tokens


def default_run(ctx: Context, base: Any, rows: list[dict[str, Any]], steps: int, **config: Any) -> dict[str, Any]:
    from protege.distill.train import TrainConfig, train_student

    out = ctx.folder("training", f"default-{time.time_ns()}")
    res = train_student(rows, base, out, TrainConfig(max_steps=steps, save_steps=10**6, **config))
    return {
        "wall_s": res.wall_s,
        "own_tokens": res.train_tokens,
        "own_tokens_per_s": res.tokens_per_s,
        "loss": res.loss_history[-1][1] if res.loss_history else None,
    }


def plain_run(ctx: Context, base: Any, rows: list[dict[str, Any]], steps: int, **_: Any) -> dict[str, Any]:
    """Stock TRL: prompt/completion rows, LoRA r=16 all-linear, lr 3e-4, batch 8, fp32, no protege code."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    args = SFTConfig(
        output_dir=str(ctx.folder("training", f"plain-{time.time_ns()}")),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=PLAIN["learning_rate"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
    )
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    lora = LoraConfig(
        r=PLAIN["lora_r"], lora_alpha=PLAIN["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"wall_s": wall, "loss": losses[-1] if losses else None}


def plot(ax: Any, record: dict[str, Any]) -> None:
    rate = record["data"]["rows_per_s"]
    ax.bar(
        ["plain TRL + LoRA\n(DESIGN §8)", "protege default"],
        [rate["plain"], rate["default"]],
        color=["#999999", "#3b75af"],
    )
    ax.axhline(rate["plain"] * TARGET_RATIO, color="red", linestyle="--", linewidth=1, label="target: 2× plain")
    ax.set_ylabel("training examples / s")
    ax.set_title("Student training speed (CPU)")
    ax.legend(fontsize=8)
