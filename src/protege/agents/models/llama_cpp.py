"""The llama.cpp engine: a student's exported GGUF run by llama.cpp, decoded by protege's own grammar automaton.

llama.cpp computes the forward passes (quantized weights, fast CPU kernels); everything else is the torch engine's
code, unchanged — the same prompt rendering and tokenizer, the same grammar (`decoding.py`), the same choice of
tokens (`Engine._constrained`: forced text fed without asking the model, the top-k token the grammar accepts,
prompt-lookup drafts verified in one pass), the same confidence from the chosen tokens' probabilities. So the
answers are the torch engine's, up to the rounding of the quantized weights. llama.cpp's own grammar sampling is
not used: it checks the whole vocabulary at every step, which can cost more than the forward pass.

Loads a GGUF written by `protege students export ID --format gguf` (the tokenizer files sit beside it). Needs the
`llama` extra (`pip install 'protege[llama]'`, which builds llama-cpp-python from source with cmake).
"""

from __future__ import annotations

import atexit
import math
import os
import statistics
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from protege.agents.models.answer_profile import AnswerProfile, read_profile
from protege.agents.models.local import _ENGINES, _ENGINES_LOCK, LocalModel, LocalModelUnavailable
from protege.agents.models.local_batch import PrefixCache, common_length, decode
from protege.agents.models.local_engine import (
    BATCH_CPU,
    Engine,
    _single_char_tokens,
    _stop_ids,
    _string_safe,
    _vocab_texts,
)
from protege.errors import UserError

DEFAULT_CONTEXT = 4096
PROMPT_PROBE = 32  # tokens a pass when prompt threads are measured
REMEASURE_EVERY_S = 600.0  # the thread counts are measured again at most this long after (load that went away)
REMEASURE_SLOWER = 2.0  # ... or once one-token passes are this much slower than the best since (load that came)
REMEASURE_GAP_S = 10.0  # ... but not sooner than this after the last measurement


class LlamaCppModel(LocalModel):
    """`LocalModel(path, engine="llama.cpp")`: a GGUF file, or an export folder holding one."""

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        threads: int | None = None,
        context: int = DEFAULT_CONTEXT,
        prompt_lookup: bool = True,
        batch_size: int | None = None,
        engine: str = "llama.cpp",
        copy_constraint: bool = True,
        profile: AnswerProfile | None = None,
        **ignored: Any,
    ):
        self.gguf = _find_gguf(Path(path).expanduser())
        self.base_path, self.adapter_path = self.gguf, None
        name = name or str(path)
        self.name = name if name.startswith("local:") else f"local:{name}"
        self.device, self.dtype = "cpu", "gguf"
        self.threads, self.context = threads, context
        self.prompt_lookup, self.batch_size = prompt_lookup, batch_size
        # the student's bounds and copy rules: given, or the profile an export writes beside the GGUF
        self.copy_constraint = copy_constraint
        self.profile = profile if profile is not None else read_profile(self.gguf.parent)

    @property
    def engine(self):
        key = ("llama.cpp", str(self.gguf), self.threads, self.context)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = _ENGINES[key] = LlamaCppEngine(self.gguf, self.threads, self.context)
        return engine

    def _response(self, req, job, result, elapsed: float):
        response = super()._response(req, job, result, elapsed)
        response.raw["engine"] = "llama.cpp"
        return response


def _find_gguf(path: Path) -> Path:
    if path.is_file() and path.suffix == ".gguf":
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise LocalModelUnavailable(
        f"engine='llama.cpp' needs a GGUF file or a folder with one; {str(path)!r} is neither. Export "
        f"the student first: `protege students export ID --format gguf --out DIR`"
    )


class LlamaCppEngine(Engine):
    """The torch engine's decoding over llama.cpp's forward passes (one answer at a time, prompt prefix reused)."""

    # llama.cpp runs a one-token pass with other kernels than a longer one: a token's logits move by up to ~0.7
    # with the pass it ran in (f16 or f32 keys/values alike), so feeding a key's head with the token before it
    # would save a pass per field but change answers that are near ties
    heads_ahead = False

    def __init__(self, gguf: Path, threads: int | None, context: int):
        try:
            import llama_cpp
        except ImportError:
            raise LocalModelUnavailable(
                "engine='llama.cpp' needs llama-cpp-python: pip install 'protege[llama]' (it builds "
                "from source with cmake and a C++ compiler)"
            ) from None
        import torch
        from transformers import AutoTokenizer

        self.torch = torch
        self.device = torch.device("cpu")
        self.batch_size = BATCH_CPU
        self.tokenizer = _tokenizer(AutoTokenizer, gguf)
        # How many threads make a pass fastest depends on the machine and its load, as llama.cpp's threads spin
        # while they wait for each other: a decoding pass (a token, or a few drafted ones) took 31 ms on 1 thread
        # against 41 on 2 on a loaded 2-core Xeon, 12 against 8 on a quiet 2-core AMD EPYC; with one of its cores
        # busy, a 193-token prompt took 1.8 s on 2 threads against 0.8 on 1. So both counts are measured when
        # the model loads (`_fastest_threads`, ~0.5 s), for prompts and for decoding, and again when the load
        # changes (`PassWatch`). `threads` sets both for good.
        cores = os.cpu_count() or 2
        self.fixed_threads = threads is not None
        self.thread_candidates = sorted({1, max(cores // 2, 1), cores})
        self.passes = PassWatch()
        self.llm = llama_cpp.Llama(
            str(gguf),
            n_ctx=context,
            n_batch=512,
            n_threads=threads or cores,
            n_threads_batch=threads or cores,  # drafts verified in one pass are batches too; prompts: `prefill`
            verbose=False,
            logits_all=False,
        )
        atexit.register(self.llm.close)  # freed while llama.cpp is loaded: at interpreter teardown its free fails
        self.prompt_threads = self.decode_threads = threads or 1
        if not self.fixed_threads:
            self._on_runner(self._measure_threads)
        self.model = SimpleNamespace(name_or_path=str(gguf), generation_config=SimpleNamespace(eos_token_id=None))
        self.lock = threading.Lock()
        self._queue, self._queue_lock = [], threading.Lock()
        self.texts = _vocab_texts(self.tokenizer)
        self.single_char = _single_char_tokens(self.texts)
        self.string_safe = torch.tensor([_string_safe(t) for t in self.texts])
        self.stop_ids = _stop_ids(self.tokenizer, self.model)
        self.prefix = PrefixCache()
        self.context_ids: list[int] = []  # what llama.cpp's key/value cache holds now

    def _measure_threads(self) -> None:
        """Both thread counts, measured now (on the runner thread; the key/value cache is cleared)."""
        candidates = self.thread_candidates
        self.prompt_threads = _fastest_threads(self.llm, candidates, width=PROMPT_PROBE, passes=1)
        self.decode_threads = _fastest_threads(self.llm, candidates)
        self.llm._ctx.set_n_threads(self.decode_threads, self.decode_threads)
        self.context_ids = []
        self.passes.reset()

    def _decode_batch(self, batch) -> None:
        for pending in batch:
            if not self.fixed_threads and self.passes.due():  # the machine's load changed since they were measured
                self._measure_threads()
            try:
                row = _LlamaRow(self)
                # a one-row Batch, duck-typed over llama.cpp's cache (local_batch types it as the torch Batch)
                result = decode(row, [self._decode(pending.job)])[0]  # type: ignore[arg-type]
                if not isinstance(result, Exception):
                    result.reused_tokens = row.reused[0]
            except Exception as exc:  # the caller gets it as its answer's failure
                self.context_ids = []
                result = exc
            pending.result = self._as_model_error(result)
            pending.done.set()


class PassWatch:
    """When the thread counts measured at load should be measured again: a server's load changes after it starts.
    Load that comes makes the counts chosen on a quiet machine spin (a 2-thread pass took 3-16 s beside a busy
    process here), which shows at once as one-token passes `REMEASURE_SLOWER` times slower than the best seen since
    the last measurement; load that goes away costs less (12 against 8 ms a pass) and waits for the periodic one."""

    def __init__(self, clock: Any = time.perf_counter, window: int = 16):
        self.clock, self.window = clock, window
        self.reset()

    def reset(self) -> None:
        self.since, self.best = self.clock(), math.inf
        self.recent: deque[float] = deque(maxlen=self.window)

    def record(self, seconds: float) -> None:
        self.best = min(self.best, seconds)
        self.recent.append(seconds)

    def due(self) -> bool:
        age = self.clock() - self.since
        if age >= REMEASURE_EVERY_S:
            return True
        if age < REMEASURE_GAP_S or len(self.recent) < self.window:
            return False
        return statistics.median(self.recent) > REMEASURE_SLOWER * self.best


def _fastest_threads(llm: Any, candidates: list[int], *, width: int = 1, passes: int = 4, rounds: int = 3) -> int:
    """Of `candidates` (ascending), the thread count whose passes of `width` tokens are fastest on this machine now:
    the one that wins most of `rounds` rounds of `passes` passes each (ties: fewer threads). Bounded where threads
    contend for busy cores and one pass can take seconds: the leader runs first, a count stops its round as soon
    as it is behind, and one that took over 4x the best is dropped."""
    ctx, batch = llm._ctx, llm._batch
    tokens = [max(llm.token_bos(), 0)] * width
    wins = dict.fromkeys(candidates, 0)
    alive = list(candidates)
    try:
        for _ in range(rounds):
            if len(alive) < 2:
                break
            alive.sort(key=lambda n: -wins[n])  # stable: ascending among equals
            timed: dict[int, float] = {}
            for n in alive:
                ctx.set_n_threads(n, n)
                ctx.kv_cache_seq_rm(-1, 0, -1)
                lead, elapsed = min(timed.values(), default=float("inf")), 0.0
                for position in range(0, passes * width, width):
                    batch.set_batch(batch=tokens, n_past=position, logits_all=False)
                    start = time.perf_counter()
                    ctx.decode(batch)
                    elapsed += time.perf_counter() - start
                    if elapsed > lead:
                        break
                timed[n] = elapsed
            winner = min(timed, key=timed.__getitem__)
            wins[winner] += 1
            alive = [n for n in alive if timed[n] <= 4 * timed[winner]]
    finally:
        ctx.kv_cache_seq_rm(-1, 0, -1)
    return max(candidates, key=lambda n: (wins[n], -n))


def _tokenizer(auto: Any, gguf: Path) -> Any:
    """The student's tokenizer: saved beside the GGUF by the export, else rebuilt from the GGUF's own metadata."""
    if (gguf.parent / "tokenizer.json").is_file():
        return auto.from_pretrained(gguf.parent)
    return auto.from_pretrained(gguf.parent, gguf_file=gguf.name)


class _LlamaRow:
    """`local_batch.decode`'s batch interface, for one row, over llama.cpp's context."""

    def __init__(self, engine: LlamaCppEngine):
        self.engine, self.llm = engine, engine.llm
        self.reused: list[int] = [0]

    def prefill(self, prompts: list[list[int]]):
        (ids,) = prompts
        if len(ids) >= self.llm.n_ctx():
            raise UserError(
                f"the prompt is {len(ids)} tokens, more than the llama.cpp context of {self.llm.n_ctx()}; "
                f"pass LlamaCppModel(..., context=...) larger"
            )
        shared = common_length([self.engine.context_ids, ids[:-1]]) if self.engine.context_ids else 0
        self.engine.context_ids = self.engine.context_ids[:shared]
        self.reused = [shared]
        engine, ctx = self.engine, self.llm._ctx
        ctx.set_n_threads(engine.decode_threads, engine.prompt_threads)
        try:
            return self.step([ids[shared:]])
        finally:
            ctx.set_n_threads(engine.decode_threads, engine.decode_threads)

    def step(self, feeds: list[list[int]], keep: int = 1):
        """Run the row's tokens; logits [1, keep, vocab] after its last `keep` tokens."""
        import numpy as np

        (tokens,) = feeds
        llm, ctx, batch = self.llm, self.llm._ctx, self.llm._batch
        past = len(self.engine.context_ids)
        ctx.kv_cache_seq_rm(-1, past, -1)
        rows = []
        for start in range(0, len(tokens), llm.n_batch):
            chunk = tokens[start : start + llm.n_batch]
            batch.set_batch(batch=chunk, n_past=past + start, logits_all=False)
            wanted = [i for i in range(len(chunk)) if start + i >= len(tokens) - keep]
            for i in wanted:
                batch.batch.logits[i] = True
            started = time.perf_counter()
            ctx.decode(batch)  # raises on failure: the answer fails as a ModelError, and the call escalates
            if len(tokens) == 1:
                self.engine.passes.record(time.perf_counter() - started)
            vocab = llm._n_vocab
            rows += [np.ctypeslib.as_array(ctx.get_logits_ith(i), shape=(vocab,)).copy() for i in wanted]
        self.engine.context_ids += tokens
        return self.engine.torch.from_numpy(np.stack(rows))[None]

    def forget(self, row: int, count: int) -> None:
        if count > 0:
            del self.engine.context_ids[-count:]

    def keep_rows(self, rows: list[int]) -> None:
        """Nothing to drop: this batch has one row."""
