"""Student inference on CPU: per-call latency and tokens/s of protege's LocalModel (the student tier's model),
vs plain transformers `generate` (fp32, greedy, the chat template, no other help) with the same weights, on the
same held-out prompts, in the same process.

The student is the one `app.distill` trained in this run's quality benchmark (or, run alone, one trained here on
the bundled workload). Latency: calls one at a time, as a single caller sees them. Throughput: the same prompts
one at a time, as one `generate_batch`, and from 8 concurrent callers (whose calls the engine batches).
"""

from __future__ import annotations

import asyncio
import time
from statistics import fmean, median
from typing import Any

from bench.common import Context, Headline, NotRun, Result, Table, latency_summary

TITLE = "Student inference on CPU"
TARGET_S = 0.5
STEP_CONTEXT = 400  # tokens of context in the step-cost measurement: a task's instructions plus one input


def run(ctx: Context, n: int | None = None) -> Result:
    from protege.agents.models.local import LocalModel  # ImportError: not landed yet → "not run"

    p = _student(ctx)
    app, w = p.app, p.workload
    row = app.store.student(p.report.student_id)
    base_dir = app.base_dir(row.base)
    spec = student_spec(app.handle(w.task_name).spec, row)
    n = n or ctx.pick(20, 100)
    rows = w.heldout[:n]
    model = LocalModel(base_dir, adapter=row.adapter_path, name=f"local:{row.id}")
    ours = asyncio.run(_local_calls(model, spec, rows))
    throughput = asyncio.run(_throughput(model, spec, rows, ours))
    steps = step_costs(model.engine)
    plain = _plain_generate(base_dir, row.adapter_path, spec, rows[: ctx.pick(5, 20)])
    result = Result(
        data={"workload": w.name, "protege": ours, "plain": plain, "throughput": throughput, "step_ms": steps}
    )
    result.headlines.append(
        Headline(
            metric=f"student latency per answer, p50 ({w.name})",
            value=ours["p50_ms"] / 1e3,
            unit="s",
            baseline=plain["p50_ms"] / 1e3,
            baseline_label="plain transformers generate, s",
            target=f"≤ {TARGET_S:g} s",
            met=ours["p50_ms"] / 1e3 <= TARGET_S,
        )
    )
    result.tables.append(
        Table(
            f"Per answer, {w.name} held-out prompts, 1 caller",
            ["path", "calls", "p50 s", "p99 s", "output tokens/s", "output tokens/answer"],
            [
                [label, m["n"], m["p50_ms"] / 1e3, m["p99_ms"] / 1e3, m["tokens_per_s"], m["tokens_per_answer"]]
                for label, m in (("protege LocalModel", ours), ("plain transformers generate", plain))
            ],
        )
    )
    result.tables.append(
        Table(
            f"Throughput, {len(rows)} {w.name} held-out prompts (batch size {model.engine.batch_size})",
            ["path", "answers/s", "× one at a time", "answers as one at a time"],
            [
                [
                    label,
                    t["answers_per_s"],
                    t["answers_per_s"] / throughput["one at a time"]["answers_per_s"],
                    t["same"],
                ]
                for label, t in throughput.items()
            ],
        )
    )
    result.tables.append(
        Table(
            f"One decoding step (a token per row, {STEP_CONTEXT}-token context), by rows in the batch",
            ["rows", "ms per step", "ms per row"],
            [[rows_, ms, ms / rows_] for rows_, ms in steps.items()],
        )
    )
    return result


def step_costs(engine: Any, sizes: tuple[int, ...] = (1, 2, 4, 8, 16), reps: int = 9) -> dict[int, float]:
    """Median ms of one forward pass feeding one token to each of `rows` rows over a STEP_CONTEXT-token cache:
    what a decoding step costs as the batch grows (memory-bound steps cost little more with more rows)."""
    import torch
    from transformers import DynamicCache

    model, device, out = engine.model, engine.device, {}
    with torch.inference_mode():
        for rows in sizes:
            cache = DynamicCache(config=model.config)
            model(
                input_ids=torch.randint(100, 10_000, (1, STEP_CONTEXT), device=device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            cache.batch_repeat_interleave(rows)
            times = []
            for step in range(reps):
                position = torch.full((rows, 1), STEP_CONTEXT + step, device=device)
                started = time.perf_counter()
                model(
                    input_ids=torch.randint(100, 10_000, (rows, 1), device=device),
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=1,
                )
                times.append(time.perf_counter() - started)
            out[rows] = median(times) * 1e3
    return out


def _student(ctx: Context) -> Any:
    from bench.data import orders

    prepared = [p for p in ctx.shared.get("prepared", {}).values() if p.report is not None]
    if not prepared:
        doing = "reusing an earlier run's" if ctx.reuse else "distilling one on the bundled workload"
        ctx.log(f"[bench] inference: no student from this run yet; {doing}")
        p = _earlier_or_new(ctx, orders(ctx.quick))
        if p.report is None:
            raise NotRun(f"no student: app.distill failed ({p.distill_error})")
        prepared = [p]
    return next((p for p in prepared if p.workload.name.startswith("orders")), prepared[0])


def _earlier_or_new(ctx: Context, w: Any) -> Any:
    """A student of `w`: distilled now; with --reuse the newest quality run's, else the newest student_programs
    run's (the one a `--only student_programs` run distilled)."""
    from bench.quality import prepare
    from bench.student_programs import reused_for_engines

    try:
        return prepare(ctx, w)
    except NotRun:
        if not ctx.reuse:
            raise
        return reused_for_engines(ctx, w)


async def _local_calls(model: Any, spec: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    for row in rows[:2]:  # warm-up: first calls load weights and build caches
        await model.request(_request(spec, row))
    latencies, tokens, texts = [], [], []
    for row in rows:
        start = time.perf_counter()
        resp = await model.request(_request(spec, row))
        latencies.append(time.perf_counter() - start)
        tokens.append(resp.usage.output_tokens)
        texts.append(resp.text)
    return {**_summary(latencies, tokens), "latencies": latencies, "texts": texts}


async def _throughput(model: Any, spec: Any, rows: list[dict[str, Any]], sequential: dict[str, Any]) -> dict:
    """Answers per second one at a time (the latency run), as one batch, and from 8 concurrent callers; and the
    share of answers equal to the one-at-a-time ones (batching should change none)."""
    requests = [_request(spec, row) for row in rows]
    alone = sequential.pop("texts")
    start = time.perf_counter()
    batched = await asyncio.to_thread(model.generate_batch, requests)
    batch_s = time.perf_counter() - start
    gate = asyncio.Semaphore(8)

    async def call(req: Any) -> Any:
        async with gate:
            return await model.request(req)

    start = time.perf_counter()
    concurrent = await asyncio.gather(*(call(req) for req in requests))
    concurrent_s = time.perf_counter() - start

    def same(responses: list[Any]) -> float:
        return sum(r.text == a for r, a in zip(responses, alone)) / len(alone)

    return {
        "one at a time": {"answers_per_s": len(rows) / sum(sequential.pop("latencies")), "same": 1.0},
        "generate_batch": {"answers_per_s": len(rows) / batch_s, "same": same(batched)},
        "8 concurrent callers": {"answers_per_s": len(rows) / concurrent_s, "same": same(concurrent)},
    }


def student_spec(spec: Any, student: Any) -> Any:
    """The task's spec as `student` is asked: its instructions in the prompt style it was trained with (what the
    cascade does for it), so a benchmark's direct calls see the student's own prompt."""
    from types import SimpleNamespace

    from protege.agents.models.chat_format import student_system, trained_prompt

    instructions = student_system(spec.instructions.strip(), trained_prompt(student.params))
    return SimpleNamespace(
        name=spec.name, instructions=instructions, output_schema=spec.output_schema, output_model=spec.output_model
    )


def _request(spec: Any, row: dict[str, Any]) -> Any:
    from protege.agents.models.base import ModelRequest
    from protege.agents.models.chat_format import student_messages

    return ModelRequest(
        messages=student_messages(spec.instructions, row["input"]),
        output_schema=spec.output_schema,
        task_name=spec.name,
        task_input=row["input"],
    )


def _plain_generate(base_dir: Any, adapter: str, spec: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """transformers generate with the student's weights: fp32, greedy, until EOS (256 new tokens at most)."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from protege.agents.models.chat_format import student_messages, to_chat_dicts
    from protege.agents.models.chat_render import render_chat

    if (Path(adapter) / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter)
    else:  # a fully fine-tuned student
        model = AutoModelForCausalLM.from_pretrained(adapter, dtype=torch.float32)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(
        adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base_dir
    )
    latencies, tokens = [], []
    with torch.inference_mode():
        for i, row in enumerate([rows[0], *rows]):  # the first is a warm-up
            ids = render_chat(
                tokenizer, to_chat_dicts(student_messages(spec.instructions, row["input"])), generation_prompt=True
            )
            start = time.perf_counter()
            out = model.generate(
                torch.tensor([ids]),
                max_new_tokens=256,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
            )
            if i:
                latencies.append(time.perf_counter() - start)
                tokens.append(out.shape[1] - len(ids))
    return _summary(latencies, tokens)


def _summary(latencies: list[float], tokens: list[int]) -> dict[str, Any]:
    s = latency_summary(latencies)
    return {**s, "tokens_per_s": sum(tokens) / sum(latencies), "tokens_per_answer": fmean(tokens)}


def plot(ax: Any, record: dict[str, Any]) -> None:
    d = record["data"]
    ax.bar(
        ["plain generate", "protege LocalModel"],
        [d["plain"]["p50_ms"] / 1e3, d["protege"]["p50_ms"] / 1e3],
        color=["#999999", "#3b75af"],
    )
    ax.axhline(TARGET_S, color="red", linestyle="--", linewidth=1, label=f"target {TARGET_S:g} s")
    ax.set_ylabel("seconds per answer (p50)")
    ax.set_title(f"Student inference, CPU ({d['workload']})")
    ax.legend(fontsize=8)
