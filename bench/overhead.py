"""Framework overhead per call: protege's `app.run` vs calling the same model directly, in the same run.

Two paths, each a ratio against its own baseline:
- FunctionModel (zero latency): `app.run` through the cascade, with its traces written to a real SQLite store,
  vs a bare asyncio loop that builds the same request, awaits the model and parses the answer;
- the Anthropic SDK against the local fake server (`protege.testing.FakeProvider`): protege's AnthropicModel
  via `app.run` vs the raw `anthropic.AsyncAnthropic().messages.create` call with the same prompt and tool.
Then OpenTelemetry's share (`overhead_otel`): tracing off vs an SDK provider vs the OTLP exporter, ratios to off.
Blocks of the two alternate, so background noise on a shared machine lands on both. When the overhead is over
the 1 ms target, `overhead_profile` breaks one call down by component and profiles the event-loop thread.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from bench.common import Context, Headline, Result, Table, latency_summary, ticket

TITLE = "Framework overhead per call"
TARGET_MS = 1.0
ANSWER = {"queue": "bug", "priority": 2}
FAKE_KEY = "bench-not-a-real-key"


class Ticket(BaseModel):
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""
    raise NotImplementedError  # the body never runs: protege answers through its tiers


def run(ctx: Context, n: int | None = None, rounds: int | None = None, profile: bool = True) -> Result:
    from protege.agents import FunctionModel

    n, rounds = n or ctx.pick(300, 3000), rounds or ctx.pick(3, 6)
    model = FunctionModel(lambda req: json.dumps(ANSWER), name="function:zero_latency")
    fn = compare(ctx, model, n, rounds)
    sdk = sdk_paths(ctx, max(rounds, n // 2 if ctx.quick else n // 3), rounds)
    from bench.overhead_otel import NOTE, run_tracing, table

    tracing = run_tracing(ctx, make_app, model, n, rounds * 5, protege_block, ticket)  # short blocks: less drift
    result = Result(data={"function": fn, "sdk": sdk, "tracing": tracing, "n": n, "rounds": rounds})
    for label, m in (("FunctionModel", fn), ("Anthropic SDK → fake server", sdk)):
        over = m["protege"]["p50_ms"] - m["bare"]["p50_ms"]
        result.headlines.append(
            Headline(
                metric=f"overhead per call, p50 ({label})",
                value=over,
                unit="ms",
                baseline=m["bare"]["p50_ms"],
                baseline_label="bare call p50 (ms)",
                target=f"≤ {TARGET_MS:g} ms",
                met=over <= TARGET_MS,
            )
        )
    result.tables.append(
        Table(
            "Per-call latency (ms); overhead = protege − bare",
            ["path", "calls", "bare p50", "protege p50", "overhead p50", "bare p99", "protege p99", "overhead p99"],
            [
                [
                    label,
                    m["protege"]["n"],
                    m["bare"]["p50_ms"],
                    m["protege"]["p50_ms"],
                    m["protege"]["p50_ms"] - m["bare"]["p50_ms"],
                    m["bare"]["p99_ms"],
                    m["protege"]["p99_ms"],
                    m["protege"]["p99_ms"] - m["bare"]["p99_ms"],
                ]
                for label, m in (("FunctionModel (zero latency)", fn), ("Anthropic SDK → FakeProvider", sdk))
            ],
        )
    )
    result.notes.append(
        "protege path: `app.run` (sync API → portal event loop → the cascade's tier graph → one attempt), with the "
        "run row, the trace and the run's result committed to SQLite (WAL) before it returns, and the default "
        "lifecycle hooks on (skill upkeep after each teacher success, in the background). Bare path: an asyncio "
        "loop that builds the same request, awaits the model and parses the answer with pydantic."
    )
    if "off" in tracing:
        off = tracing["off"]["p50_ms"]
        for mode in ("provider + no-op exporter", "OTLP/HTTP exporter, batching"):
            result.headlines.append(
                Headline(
                    metric=f"tracing overhead per call, p50 ({mode})",
                    value=tracing[mode]["p50_ms"] - off,
                    unit="ms",
                    baseline=off,
                    baseline_label="tracing off p50 (ms)",
                    target="≤ 0.3 ms",
                    met=tracing[mode]["p50_ms"] - off <= 0.3,
                )
            )
        result.tables.append(table(tracing))
        result.notes.append(NOTE)
    if profile and fn["protege"]["p50_ms"] - fn["bare"]["p50_ms"] > TARGET_MS:
        from bench.overhead_profile import profile_calls

        ctx.log("[bench] overhead: over target, profiling where the time goes")
        prof = profile_calls(ctx, make_app, model, ctx.pick(300, 1000))
        result.tables.extend(prof["tables"])
        result.notes.extend(prof["notes"])
        result.data["profile"] = prof["data"]
    return result


# -- apps and paths --------------------------------------------------------------------------------------------------


def make_app(ctx: Context, teacher: Any, otel: Any = None) -> Any:
    """A fresh app on its own SQLite file, with the triage task registered (`otel`: where its spans go).
    Programs are off: after ~50 calls induced field programs would answer most calls without the model, and the
    figure would be the program tier's, not the overhead around a model call."""
    from protege import Policy, Protege

    folder = ctx.folder("overhead", uuid.uuid4().hex[:8])
    app = Protege(
        db=f"sqlite:///{folder / 'protege.db'}", teacher=teacher, replay=teacher, project_dir=folder, otel=otel
    )
    app.task(policy=Policy(program=False))(triage)
    return app


def compare(ctx: Context, model: Any, n: int, rounds: int) -> dict[str, Any]:
    """Alternating blocks of protege calls and bare calls to the same model."""
    app = make_app(ctx, model)
    try:
        return alternate(
            lambda inputs: protege_block(app, inputs),
            lambda inputs: asyncio.run(bare_block(model, inputs)),
            n,
            rounds,
        )
    finally:
        app.close()


def alternate(
    protege: Callable[[list], list[float]], bare: Callable[[list], list[float]], n: int, rounds: int
) -> dict[str, Any]:
    """Warm both up, then run `rounds` pairs of blocks (order flipped each round); latency summaries of each."""
    warm = [ticket(-i) for i in range(1, 31)]
    protege(warm), bare(warm)
    size = max(1, n // rounds)
    lat: dict[str, list[float]] = {"protege": [], "bare": []}
    for r in range(rounds):
        inputs = [ticket(r * size + i) for i in range(size)]
        order = (("protege", protege), ("bare", bare)) if r % 2 == 0 else (("bare", bare), ("protege", protege))
        for key, block in order:
            lat[key] += block(inputs)
    return {key: latency_summary(values) for key, values in lat.items()}


def protege_block(app: Any, inputs: list[dict]) -> list[float]:
    out = []
    for t in inputs:
        start = time.perf_counter()
        app.run("triage", {"ticket": t})
        out.append(time.perf_counter() - start)
    app.wait()  # background skill upkeep finishes between blocks, not during the baseline's
    return out


async def bare_block(model: Any, inputs: list[dict]) -> list[float]:
    """What a caller does without protege: build the request, await the model, parse the answer."""
    from protege.agents.models.base import ModelRequest
    from protege.agents.prompts import teacher_messages

    schema = Triage.model_json_schema()
    instructions = triage.__doc__ or ""
    out = []
    for t in inputs:
        start = time.perf_counter()
        data = {"ticket": t}
        req = ModelRequest(
            messages=teacher_messages("triage", instructions, schema, data),
            output_schema=schema,
            task_name="triage",
            task_input=data,
        )
        resp = await model.request(req)
        Triage.model_validate_json(resp.text)
        out.append(time.perf_counter() - start)
    return out


# -- the SDK path ----------------------------------------------------------------------------------------------------


def sdk_paths(ctx: Context, n: int, rounds: int) -> dict[str, Any]:
    """AnthropicModel via `app.run` vs the raw SDK call, both to the same FakeProvider on 127.0.0.1."""
    from protege.agents.models.anthropic import AnthropicModel
    from protege.testing import FakeProvider

    with FakeProvider(handler=lambda provider, body: ANSWER) as fake:
        model = AnthropicModel("claude-opus-4-5", api_key=FAKE_KEY, base_url=fake.anthropic_base_url)
        app = make_app(ctx, model)
        try:
            return alternate(
                lambda inputs: protege_block(app, inputs),
                lambda inputs: asyncio.run(raw_sdk_block(fake.anthropic_base_url, inputs)),
                n,
                rounds,
            )
        finally:
            app.close()


async def raw_sdk_block(base_url: str, inputs: list[dict]) -> list[float]:
    """The raw SDK: the same system prompt, the input as JSON, a forced answer tool; parse its input."""
    import anthropic

    from protege.agents.models.base import FINAL_TOOL
    from protege.agents.prompts import teacher_messages

    schema = Triage.model_json_schema()
    tool = {"name": FINAL_TOOL, "description": "Give your final answer.", "input_schema": schema}
    out = []
    async with anthropic.AsyncAnthropic(api_key=FAKE_KEY, base_url=base_url, max_retries=2) as client:
        for t in inputs:
            start = time.perf_counter()
            system, user = teacher_messages("triage", triage.__doc__ or "", schema, {"ticket": t})
            msg = await client.messages.create(
                model="claude-opus-4-5",
                max_tokens=1024,
                system=[{"type": "text", "text": system.content}],
                messages=[{"role": "user", "content": user.content}],
                tools=[tool],
                tool_choice={"type": "tool", "name": FINAL_TOOL},
            )
            block = next(b for b in msg.content if b.type == "tool_use")
            Triage.model_validate(block.input)
            out.append(time.perf_counter() - start)
    return out


def plot(ax: Any, record: dict[str, Any]) -> None:
    """Bars: p50 per call of the bare call and of protege, for each path (p99 as a tick above)."""
    data = record["data"]
    paths = [("FunctionModel", data["function"]), ("Anthropic SDK\n→ fake server", data["sdk"])]
    x = range(len(paths))
    for offset, key, color in ((-0.2, "bare", "#999999"), (0.2, "protege", "#3b75af")):
        p50 = [m[key]["p50_ms"] for _, m in paths]
        p99 = [m[key]["p99_ms"] for _, m in paths]
        ax.bar([i + offset for i in x], p50, width=0.4, color=color, label=f"{key} p50")
        ax.scatter([i + offset for i in x], p99, marker="_", s=300, color="black", zorder=3)
    ax.set_xticks(list(x), [label for label, _ in paths])
    ax.set_ylabel("ms per call (tick: p99)")
    ax.set_title("Overhead per call: protege vs bare call")
    ax.legend(fontsize=8)
