"""Student engines on CPU: the torch engine vs the llama.cpp engine on the student's exported GGUF (q8_0), in
one process, on the same held-out prompts: p50/p99 per answer (one caller), answers/s as one batch and from 8
concurrent callers, the share of answers identical to the torch engine's, and the weights each holds in memory.

Both engines decode with protege's grammar, token choice and prompt-lookup drafts; only the forward passes
differ (fp32 torch vs llama.cpp's quantized kernels), so a differing answer is a near-tie the rounding flipped.
Every student this run trained is measured (one-field debian-sections, 8-field orders); run alone, one is
trained on the bundled workload.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.common import Context, Headline, NotRun, Result, Table
from bench.inference import _local_calls, _student, _throughput, student_spec

TITLE = "Student engines: torch vs llama.cpp"
TARGETS_S = {"one field": 0.15, "8 fields": 0.5}


def run(ctx: Context, n: int | None = None) -> Result:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise NotRun("llama-cpp-python is not installed (pip install 'protege[llama]')") from None
    prepared = [p for p in ctx.shared.get("prepared", {}).values() if p.report is not None] or [_student(ctx)]
    result = Result(data={"workloads": {}})
    for p in prepared:
        many_fields = len(p.app.handle(p.workload.task_name).spec.output_model.model_fields) > 1
        # a many-field answer takes the torch engine seconds on 2 cores: 40 of them give a p50 to ±10%
        data = _measure(ctx, p, n or ctx.pick(20, 40 if many_fields else 100))
        result.data["workloads"][p.workload.name] = data
        _report(result, p.workload.name, data)
    return result


def _measure(ctx: Context, p: Any, n: int) -> dict[str, Any]:
    from protege.agents.models.local import LocalModel

    app, w = p.app, p.workload
    row = app.store.student(p.report.student_id)
    spec = student_spec(app.handle(w.task_name).spec, row)
    rows = w.heldout[:n]
    folder = ctx.scratch / "engines" / f"{w.name}-{row.id[:12]}"
    if not folder.is_dir():
        app.export_student(row.id, folder, format="gguf", quant="q8_0")
    engines = {
        "torch": LocalModel(app.base_dir(row.base), adapter=row.adapter_path, name=f"local:{row.id}"),
        "llama.cpp q8_0": LocalModel(folder, engine="llama.cpp", name=f"local:{row.id}"),
    }
    out: dict[str, Any] = {"n": len(rows), "fields": len(spec.output_schema.get("properties", {}))}
    texts: dict[str, list[str]] = {}
    for label, model in engines.items():
        calls = asyncio.run(_local_calls(model, spec, rows))
        texts[label] = list(calls["texts"])
        out[label] = {
            **{k: v for k, v in calls.items() if k not in ("texts", "latencies")},
            "throughput": asyncio.run(_throughput(model, spec, rows, calls)),
            "weights_mb": _weights_mb(model),
        }
    same = sum(a == b for a, b in zip(texts["torch"], texts["llama.cpp q8_0"])) / len(rows)
    out["identical_to_torch"] = same
    out["differing"] = [
        {"input": r["input"], "torch": a, "llama.cpp": b}
        for r, a, b in zip(rows, texts["torch"], texts["llama.cpp q8_0"])
        if a != b
    ][:5]
    return out


def _weights_mb(model: Any) -> float:
    """Bytes of weights the engine holds: fp32 parameters for torch, the GGUF's size for llama.cpp."""
    gguf = getattr(model, "gguf", None)
    if gguf is not None:
        return gguf.stat().st_size / 1e6
    return sum(t.numel() * t.element_size() for t in model.engine.model.parameters()) / 1e6


def _report(result: Result, name: str, d: dict[str, Any]) -> None:
    kind = "one field" if d["fields"] == 1 else f"{d['fields']} fields"
    torch_, llama = d["torch"], d["llama.cpp q8_0"]
    target = TARGETS_S.get(kind)
    result.headlines.append(
        Headline(
            metric=f"llama.cpp student latency per answer, p50 ({name}, {kind})",
            value=llama["p50_ms"] / 1e3,
            unit="s",
            baseline=torch_["p50_ms"] / 1e3,
            baseline_label="torch engine, s",
            target=f"≤ {target:g} s" if target else "",
            met=llama["p50_ms"] / 1e3 <= target if target else None,
        )
    )
    result.headlines.append(
        Headline(
            metric=f"llama.cpp answers identical to torch's ({name})",
            value=d["identical_to_torch"],
            unit="share",
            target="≥ 0.98",
            met=d["identical_to_torch"] >= 0.98,
        )
    )
    result.tables.append(
        Table(
            f"{name} ({kind}), {d['n']} held-out prompts: torch vs llama.cpp",
            [
                "engine",
                "p50 s",
                "p99 s",
                "answers/s one at a time",
                "answers/s batch",
                "answers/s 8 callers",
                "weights MB",
            ],
            [
                [
                    label,
                    m["p50_ms"] / 1e3,
                    m["p99_ms"] / 1e3,
                    m["throughput"]["one at a time"]["answers_per_s"],
                    m["throughput"]["generate_batch"]["answers_per_s"],
                    m["throughput"]["8 concurrent callers"]["answers_per_s"],
                    m["weights_mb"],
                ]
                for label, m in (("torch (fp32)", torch_), ("llama.cpp (q8_0)", llama))
            ],
        )
    )


def plot(ax: Any, record: dict[str, Any]) -> None:
    names = list(record["data"]["workloads"])
    data = record["data"]["workloads"]
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs], [data[n]["torch"]["p50_ms"] / 1e3 for n in names], 0.4, label="torch", color="#999999"
    )
    ax.bar(
        [x + 0.2 for x in xs],
        [data[n]["llama.cpp q8_0"]["p50_ms"] / 1e3 for n in names],
        0.4,
        label="llama.cpp q8_0",
        color="#3b75af",
    )
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("seconds per answer (p50)")
    ax.set_title("Student engines, CPU")
    ax.legend(fontsize=8)
