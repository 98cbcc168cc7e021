"""A local transformers model — a base checkpoint plus an optional LoRA adapter — behind the `Model` protocol.

- Loaded once per process (a thread-safe cache keyed by paths, device and dtype); the LoRA is merged into the
  base weights, so inference costs what the base costs.
- Prompts are the request's messages in the base's chat template (tools rendered by `chat_format`).
- With an `output_schema` and no tools the answer is decoded under the schema's grammar (`decoding.py`): the
  JSON skeleton is written without asking the model, values are chosen greedily among the tokens the grammar
  allows, so every answer parses. `confidence` is the mean probability of the tokens the model chose.
- The key/value cache of the prompt prefix a call shares with the previous one (the task's instructions) is
  reused, so a call pays only for its own input.
- Values copied from the input (names, products, addresses) are drafted from the prompt and checked several
  tokens per forward pass (`prompt_lookup=True`, the default): the same answer in fewer passes.
- A trained student's `protege_answers.json` (`answer_profile.py`, learned from its training traces) bounds
  its answers: at most the learned number of tokens, list items and string characters (an answer that reaches
  one is reported as `stop_reason` "max_tokens" or "bound", and the cascade escalates it), no repeated item in
  a list the traces show unique, and copied fields only as substrings of the call's input
  (`copy_constraint=True`, the default; Policy.copy_constraint turns it off for a task).
- `fixed_output` fields (decided by a program) are written exactly as given; the model chooses the rest, and
  `field_confidences` gives each field it chose its least sure token's probability.
- Requests are decoded in batches (`local_batch.py`): `generate_batch` answers many at once, and calls that
  arrive together from several threads (the cascade's concurrent calls) share forward passes. `batch_size`
  (the most answers one batch decodes) defaults to 8 on a CPU and 32 on a GPU.
- Each answer's `usage.compute_s` is its share of the engine's busy time (`MachineShare`): answers decoded
  together split it, and loading the model is charged to none of them.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protege.agents.models.answer_profile import AnswerProfile, read_profile
from protege.agents.models.base import Message, ModelRequest, ModelResponse, Usage
from protege.agents.models.chat_format import parse_tool_calls, render_tools, to_chat_dicts
from protege.agents.models.copy_index import input_text
from protege.agents.models.decoding import Grammar, State
from protege.errors import LocalModelUnavailable, UserError

METADATA_FILE = "protege_student.json"
_ENGINES: dict[tuple, Any] = {}
_ENGINES_LOCK = threading.Lock()
# other engines subclass LocalModel, so they are named here by module, not imported: the graph stays one-way
_ENGINE_CLASSES = {"llama.cpp": ("protege.agents.models.llama_cpp", "LlamaCppModel")}


class LocalModel:
    """`local:<path>`: a checkpoint dir, a trained student dir (adapter + metadata), or a base + `adapter=`."""

    price_as: str | None = None
    writes_prose = False

    def __new__(cls, *args: Any, engine: str = "torch", **kwargs: Any):  # serving: engine="llama.cpp" selects
        if cls is LocalModel and engine in _ENGINE_CLASSES:  # the GGUF engine (llama_cpp.py)
            module, name = _ENGINE_CLASSES[engine]
            return super().__new__(getattr(importlib.import_module(module), name))
        return super().__new__(cls)

    def __init__(
        self,
        path: str | Path,
        *,
        adapter: str | Path | None = None,
        device: str | None = None,
        name: str | None = None,
        dtype: str = "auto",
        threads: int | None = None,
        prompt_lookup: bool = True,
        batch_size: int | None = None,
        engine: str = "torch",  # serving: "torch" (this class) or "llama.cpp" (see __new__)
        copy_constraint: bool = True,
        profile: AnswerProfile | None = None,
    ):
        if engine != "torch":
            raise UserError(f"engine {engine!r} is not 'torch' or 'llama.cpp'")
        self.base_path, self.adapter_path = _resolve_paths(Path(path), Path(adapter) if adapter else None)
        name = name or str(path)
        self.name = name if name.startswith("local:") else f"local:{name}"
        self.device = device
        self.dtype = dtype
        self.threads = threads
        self.prompt_lookup = prompt_lookup
        self.batch_size = batch_size
        self.copy_constraint = copy_constraint
        # what the training traces showed about answers (bounds, copied fields): given, or stored with the student
        # (in its adapter dir, or in the checkpoint of a fully fine-tuned one)
        student_dir = self.adapter_path or self.base_path
        self.profile: AnswerProfile | None = profile if profile is not None else read_profile(student_dir)

    @property
    def engine(self):
        """The loaded model (loaded on first use, then shared by every LocalModel with the same paths)."""
        key = (str(self.base_path), str(self.adapter_path or ""), self.device or "auto", self.dtype)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                from protege.agents.models.local_engine import Engine

                engine = _ENGINES[key] = Engine(
                    self.base_path, self.adapter_path, self.device, self.dtype, self.threads
                )
        return engine

    async def request(self, req: ModelRequest) -> ModelResponse:
        return await asyncio.to_thread(self.generate, req)

    def generate(self, req: ModelRequest) -> ModelResponse:
        """Answer one request (blocking; decoded together with other threads' concurrent calls)."""
        result = self.generate_batch([req], return_exceptions=True)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def generate_batch(
        self, requests: list[ModelRequest], *, return_exceptions: bool = False
    ) -> list[ModelResponse | Exception]:
        """Answer many requests, `batch_size` at a time in one forward pass per step. With `return_exceptions`,
        a request that fails gets its exception in its place; otherwise the first failure is raised."""
        engine = self.engine  # loaded first: loading the model is no answer's compute
        started = time.perf_counter()
        share = machine_share(engine)
        mark = share.start(len(requests))
        try:
            jobs = [self._job(engine, req) for req in requests]
            results = engine.run(jobs, batch_size=self.batch_size)
        finally:
            compute_s = share.stop(mark, len(requests))
        elapsed = time.perf_counter() - started
        out = [
            r if isinstance(r, Exception) else self._response(req, job, r, elapsed)
            for req, job, r in zip(requests, jobs, results)
        ]
        for result in out:
            if not isinstance(result, Exception):
                result.usage.compute_s = compute_s
        if not return_exceptions:
            for result in out:
                if isinstance(result, Exception):
                    raise result
        return out

    def _job(self, engine, req: ModelRequest):
        grammar = self._grammar(req, req.output_schema) if req.output_schema is not None else None
        max_tokens = req.max_tokens
        # the answers' learned length says nothing of a tool call's
        if self.profile is not None and self.profile.max_answer_tokens and grammar is not None and not req.tools:
            max_tokens = min(max_tokens, self.profile.max_answer_tokens)
        return engine.job(_chat_messages(req), grammar, max_tokens, draft=self.prompt_lookup)

    def _grammar(self, req: ModelRequest, schema: dict[str, Any]) -> Grammar:
        """The request's answer grammar: its schema, the student's learned bounds, the fields a program fixed,
        and (for copied fields) this call's input."""
        profile, copy = self.profile, self.copy_constraint
        bounds = profile.grammar_bounds(copy=copy) if profile is not None else None
        copies = bounds is not None and any(b.get("copy") for b in bounds.values())
        source = input_text(_task_input(req)) if copies else None
        tools: list[tuple[str, dict[str, Any] | None]] | None = [(t.name, t.parameters) for t in req.tools] or None
        return Grammar(schema, fixed=req.fixed_output, bounds=bounds, source=source, tools=tools)

    def _response(self, req: ModelRequest, job, result, elapsed: float) -> ModelResponse:
        calls = parse_tool_calls(result.text) if req.tools else []
        text = result.text.split("<tool_call>")[0].strip() if calls else result.text
        stop, hits = result.stop_reason, [result.runaway] if result.runaway else []
        if stop == "end_turn" and job.grammar is not None:
            hits = job.grammar.bound_hits(text)
            stop = "bound" if hits else stop
        fixed = req.fixed_output or {}
        fields = {k: v for k, v in (result.field_confidences or {}).items() if k not in fixed}
        return ModelResponse(
            text=text,
            tool_calls=calls,
            usage=Usage(
                input_tokens=result.prompt_tokens,
                output_tokens=result.output_tokens,
                cache_read_tokens=result.reused_tokens,
            ),
            raw={
                "forced_tokens": result.forced_tokens,
                "model_tokens": result.model_tokens,
                "drafted_tokens": result.drafted_tokens,
                "reconsidered": result.reconsidered,
                "min_prob": result.min_prob,
                "latency_s": round(elapsed, 4),
                "max_tokens": job.max_tokens,
                **({"bounds": hits} if hits else {}),
            },
            model=self.name,
            stop_reason="tool_use" if calls else stop,
            confidence=result.confidence,
            field_confidences=fields if job.grammar is not None else None,
        )


class MachineShare:
    """One machine's time, shared among the answers in flight on it: while n answers wait on it, each is charged
    1/n of the time. The engine batches concurrent callers' answers into the same passes (and a server answers
    its callers together), so charging each caller its own wall time charged the machine n times over: 8
    concurrent calls were billed 15.4 machine-seconds for 2.85 s of wall time. Shared, the answers together cost
    the time the machine was busy with them, whether they came one at a time or together."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._since = clock()
        self._each = 0.0  # seconds charged so far to an answer in flight from the start (a running total)

    def start(self, answers: int = 1) -> float:
        """Begin `answers` answers; the mark to hand to `stop`."""
        with self._lock:
            mark = self._advance()
            self._in_flight += answers
            return mark

    def stop(self, mark: float, answers: int = 1) -> float:
        """End the answers begun at `mark`: the machine-seconds each of them is charged."""
        with self._lock:
            each = self._advance() - mark
            self._in_flight -= answers
            return each

    def _advance(self) -> float:
        now = self._clock()
        if self._in_flight:
            self._each += (now - self._since) / self._in_flight
        self._since = now
        return self._each


# one share per machine: a loaded engine (held weakly: it goes with its model) or a server's URL
_ENGINE_SHARES: weakref.WeakKeyDictionary[Any, MachineShare] = weakref.WeakKeyDictionary()
_SERVER_SHARES: dict[str, MachineShare] = {}
_SHARES_LOCK = threading.Lock()


def machine_share(engine: Any) -> MachineShare:
    """The machine-time share of a loaded engine: every LocalModel on it charges through the same one."""
    return _share_in(_ENGINE_SHARES, engine)


def server_share(base_url: str) -> MachineShare:
    """The machine-time share of one server: every hosted student on it charges through the same one."""
    return _share_in(_SERVER_SHARES, base_url)


def _share_in(registry: Any, key: Any) -> MachineShare:
    with _SHARES_LOCK:
        share = registry.get(key)
        if share is None:
            share = registry[key] = MachineShare()
        return share


def _task_input(req: ModelRequest) -> Any:
    """The call's input: `task_input`, else the last user turn (as JSON when it is JSON)."""
    if req.task_input is not None:
        return req.task_input
    user = next((m.content for m in reversed(req.messages) if m.role == "user"), "")
    try:
        return json.loads(user)
    except ValueError:
        return user


def _chat_messages(req: ModelRequest) -> list[dict[str, str]]:
    """The request as chat-template dicts, with the tools text in the system turn when tools are offered."""
    messages = to_chat_dicts(req.messages)
    if req.tools:
        tools_text = render_tools(req.tools)
        if not any(tools_text in m["content"] for m in messages if m["role"] == "system"):
            if messages and messages[0]["role"] == "system":
                messages[0] = {"role": "system", "content": messages[0]["content"] + "\n\n" + tools_text}
            else:
                messages.insert(0, {"role": "system", "content": tools_text})
    return messages


def _resolve_paths(path: Path, adapter: Path | None) -> tuple[Path, Path | None]:
    """(base checkpoint, adapter) from what the caller gave: a student dir names its base in its metadata."""
    path = path.expanduser()
    if not path.exists():
        raise LocalModelUnavailable(
            f"local model path {str(path)!r} does not exist; train a student (`protege distill`) or "
            f"pass a checkpoint directory"
        )
    if adapter is None and (path / "adapter_config.json").is_file():
        adapter, path = path, _base_of_adapter(path)
    if adapter is not None and _full_weights(adapter):  # a fully fine-tuned student is a checkpoint of its own
        return adapter, None
    if not (path / "config.json").is_file():
        raise LocalModelUnavailable(f"{str(path)!r} is not a model checkpoint (no config.json)")
    if adapter is not None and not (adapter / "adapter_config.json").is_file():
        raise LocalModelUnavailable(
            f"adapter {str(adapter)!r} has no adapter_config.json; pass the dir train_student wrote"
        )
    return path, adapter


def _full_weights(folder: Path) -> bool:
    return (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file()


def _base_of_adapter(adapter: Path) -> Path:
    meta = adapter / METADATA_FILE
    if meta.is_file():
        base = json.loads(meta.read_text()).get("base")
        if base and Path(base).is_dir():
            return Path(base)
    config = json.loads((adapter / "adapter_config.json").read_text())
    base = config.get("base_model_name_or_path")
    if base and Path(base).is_dir():
        return Path(base)
    raise LocalModelUnavailable(
        f"cannot find the base model of adapter {str(adapter)!r} (looked for {base!r}); "
        f"pass it explicitly: LocalModel(base_path, adapter={str(adapter)!r})"
    )


__all__ = ["LocalModel", "LocalModelUnavailable", "Message", "State"]
