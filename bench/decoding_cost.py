"""What the learned answer bounds and the copy constraint cost per answer on the bundled base (SmolLM2-135M).

    python -m bench.decoding_cost [N_EMAILS] [ROUNDS]

The order workload's profile is learned from 300 pool traces (field kinds, bounds, the token bound); N held-out
emails are answered by the base with and without it, rounds alternating. Reported: the index build per call, the
grammar's share of each decoding step (choosing a token the grammar accepts: the allowed-token work) against
the forward pass, and the latency per answer. The base is untrained on this task, so its answers are poor; the
point is the decoder's cost, not quality. Both decoders get the same token limit (the learned one), so an
untrained base's long answers cost the same number of steps either way.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path


def main(n: int = 8, rounds: int = 2) -> None:
    import inspect

    import torch
    from transformers import AutoTokenizer

    from protege.agents.models import local_batch, local_engine
    from protege.agents.models.base import ModelRequest
    from protege.agents.models.chat_format import render_answer, student_messages, to_chat_dicts
    from protege.agents.models.copy_index import SubstringIndex, input_text
    from protege.agents.models.local import LocalModel
    from protege.demo.workload import Order, extract_order, load_examples
    from protege.distill.answer_kinds import learn_answer_profile
    from protege.distill.base_models import resolve_base

    torch.set_num_threads(2)
    base = resolve_base("smollm2-135m", Path("/tmp/protege-bench-cache"))
    instructions = inspect.getdoc(extract_order) or ""
    pool = load_examples("pool")[:300]
    rows = [
        {
            "input": e["input"],
            "output": e["output"],
            "messages": to_chat_dicts(student_messages(instructions, e["input"]))
            + [{"role": "assistant", "content": render_answer(e["output"])}],
        }
        for e in pool
    ]
    profile = learn_answer_profile(rows, Order.model_json_schema(), tokenizer=AutoTokenizer.from_pretrained(base))
    print(
        f"profile: kinds {profile.kinds()}; max answer tokens {profile.max_answer_tokens} "
        f"(longest {profile.longest_answer_tokens})"
    )
    emails = load_examples("heldout")[:n]
    requests = [
        ModelRequest(
            messages=student_messages(instructions, e["input"]),
            output_schema=Order.model_json_schema(),
            task_input=e["input"],
            max_tokens=profile.max_answer_tokens,
        )
        for e in emails
    ]
    builds = []
    for e in emails:
        t0 = time.perf_counter()
        SubstringIndex(input_text(e["input"]))
        builds.append(time.perf_counter() - t0)
    print(
        f"index build per call: {statistics.median(builds) * 1e3:.2f} ms p50 "
        f"({statistics.mean(len(input_text(e['input'])) for e in emails):.0f} input characters)"
    )

    timers = {"choose": 0.0, "forward": 0.0, "steps": 0}
    choose, step = local_engine.Engine._choose, local_batch.Batch.step

    def timed_choose(self, logits, state):
        t0 = time.perf_counter()
        try:
            return choose(self, logits, state)
        finally:
            timers["choose"] += time.perf_counter() - t0
            timers["steps"] += 1

    def timed_step(self, feeds, keep=1):
        t0 = time.perf_counter()
        try:
            return step(self, feeds, keep)
        finally:
            timers["forward"] += time.perf_counter() - t0

    local_engine.Engine._choose, local_batch.Batch.step = timed_choose, timed_step
    models = {
        "schema only": LocalModel(base, threads=2, prompt_lookup=False),
        "learned bounds + copy": LocalModel(base, threads=2, prompt_lookup=False, profile=profile),
    }
    latency: dict[str, list[float]] = {name: [] for name in models}
    per_step: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for req in requests:
                timers.update(choose=0.0, forward=0.0, steps=0)
                t0 = time.perf_counter()
                response = model.generate(req)
                latency[name].append(time.perf_counter() - t0)
                per_step[name].append(
                    (timers["choose"] / max(timers["steps"], 1), timers["forward"] / max(timers["steps"], 1))
                )
                print(
                    f"  {name}: answer {response.text[:120]} ({response.stop_reason}, "
                    f"{response.usage.output_tokens} tokens, {latency[name][-1]:.1f} s; grammar "
                    f"{per_step[name][-1][0] * 1e3:.2f} ms per chosen token, forward "
                    f"{per_step[name][-1][1] * 1e3:.0f} ms per step)",
                    flush=True,
                )
    print("| decoder | p50 s per answer | grammar ms per chosen token | forward ms per step | grammar share |")
    print("|---|---|---|---|---|")
    for name in models:
        g = statistics.median(c for c, _ in per_step[name]) * 1e3
        f = statistics.median(f for _, f in per_step[name]) * 1e3
        print(f"| {name} | {statistics.median(latency[name]):.2f} | {g:.2f} | {f:.1f} | {g / f:.2%} |")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
