"""The loaded local model and its decoding loop (used by `LocalModel`; heavy imports live here).

Grammar-constrained decoding, cheaply: at each step the model's top-k tokens are tried in order and the first
one the grammar accepts is taken (a trained student's first choice almost always is). Text the grammar fixes
(keys, punctuation) is tokenized and fed without a forward pass of its own — except its last token, which the
model picks among the tokens that start with it, so a key's closing quote can still merge with the value's first
characters the way the tokenizer merged them in training ("token healing"). Values copied from the input are
drafted from the prompt and verified several tokens per forward pass (`PromptLookup`): the answer is the one
token-by-token decoding gives, in fewer passes. An answer that runs out of tokens is left cut (`max_tokens`):
closing it would hand the cascade a runaway answer that validates.

Greedy choice under a grammar can corner the model: it writes the day `1` of "March 1st" as it would have, and
then must add a second digit it never wanted (`10`). Where the step after a choice finds the model's own first
choice refused (and it was sure of it), the runner-up is tried too, and the pair of tokens more likely as a whole
is kept (`_reconsider`: a two-token look-ahead, paid only where the grammar corners the model).
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from protege.agents.models.chat_render import render_chat
from protege.agents.models.decoding import Grammar, State
from protege.agents.models.local_batch import Answer, Batch, Feed, Forget, PrefixCache, decode
from protege.errors import ModelError, ProtegeError, UserError

if TYPE_CHECKING:
    from torch import Tensor

TOP_K = 48
DRAFT_START, DRAFT_MAX = 4, 16  # tokens a prompt lookup proposes (adaptive); one forward pass scores them all
DRAFT_NGRAM = 3  # the longest answer suffix looked up in the prompt
DRAFT_MIN_NGRAM = 2  # the shortest: a one-token match proposes more drafts than it lands (docs/student.md)
CORNERED = 0.5  # a refused first choice at least this likely means the previous choice cornered the model
BATCH_CPU, BATCH_GPU = 8, 32  # answers decoded together: on 2 CPU cores a step of 8 costs ~2x a step of 1
# Runaway guards for answers no trace bounds (the replay tier's base model, a recursive or free-form schema): an
# answer whose last LOOP_TOKENS tokens repeat one block of at most LOOP_PERIOD tokens (8+ times), or that opens more
# than MAX_NESTING objects and lists, stops there as cut short ("bound"), instead of running to its token limit
# (2,048 tokens: ~5 minutes for a 135M model on 2 cores). Long enough for answers that repeat themselves on
# purpose: 96 tokens stopped a list of 48 "O" tags and ten equal rows of a table.
LOOP_TOKENS, LOOP_PERIOD = 256, 32
MAX_NESTING = 16


@dataclass
class Generation:
    """What one decode produced."""

    text: str
    prompt_tokens: int
    output_tokens: int
    reused_tokens: int  # prompt tokens not run for this answer: from the prefix cache, or shared with its batch
    forced_tokens: int
    model_tokens: int
    confidence: float | None
    stop_reason: str
    drafted_tokens: int  # tokens taken from prompt-lookup drafts (each saved a forward pass of its own)
    min_prob: float | None  # the probability of the model's least sure choice
    field_confidences: dict[str, float] | None = None  # top-level field -> its least sure token's probability
    reconsidered: int = 0  # choices the look-ahead replaced by their runner-up (`Engine._reconsider`)
    runaway: str | None = None  # why a runaway guard stopped it (stop_reason "bound")


def runaway_guard(out: list[int], state: State) -> str | None:
    """Why the answer so far is a runaway (a loop, or nesting no answer needs), else None."""
    if state.depth > MAX_NESTING:
        return f"the answer: nested deeper than {MAX_NESTING} objects and lists"
    if len(out) >= LOOP_TOKENS:
        tail = out[-LOOP_TOKENS:]
        for period in range(1, LOOP_PERIOD + 1):
            if tail[period:] == tail[:-period]:
                return f"the answer: a loop, one block of {period} tokens repeated over {LOOP_TOKENS} tokens"
    return None


@dataclass
class _Choice:
    """A token the model chose freely: the state it was chosen in, the logits it was chosen from, its probability."""

    state: State
    logits: Tensor
    token: int
    prob: float


class _Answer:
    """A constrained answer being decoded: grammar state, tokens and texts so far, the model's probability of
    each token it chose (forced tokens have none)."""

    def __init__(self, state: State):
        self.state = state
        self.pieces: list[str] = []
        self.out: list[int] = []
        self.probs: list[float] = []
        self.forced = 0
        self.drafted = 0
        self.chosen: list[tuple[int, int, float]] = []  # (start, end) in the text and probability of each choice
        self.reconsidered = 0

    def take(self, token: int, text: str, prob: float | None) -> None:
        start = len(self.state.text)
        self.state = _advance(self.state, text)
        self.pieces.append(text)
        self.out.append(token)
        if prob is None:
            self.forced += 1
        else:
            self.probs.append(prob)
            self.chosen.append((start, start + len(text), prob))

    def retake(self, before: State, token: int, text: str, prob: float) -> None:
        """Replace the latest choice (taken in state `before`) by `token`."""
        self.pieces.pop()
        self.out.pop()
        self.probs.pop()
        self.chosen.pop()
        self.state = before
        self.take(token, text, prob)
        self.reconsidered += 1

    def field_confidences(self) -> dict[str, float]:
        """Each top-level field's least sure chosen token (1.0 for a field the grammar wrote alone)."""
        spans = top_level_spans("".join(self.pieces))
        return {
            key: min((p for s, e, p in self.chosen if s < end and e > start), default=1.0)
            for key, (start, end) in spans.items()
        }

    def take_forced(self, text: str, tokens: list[int]) -> None:
        self.state = _advance(self.state, text)
        self.pieces.append(text)
        self.out += tokens
        self.forced += len(tokens)


def _advance(state: State, text: str) -> State:
    """The grammar's state after `text`, which it allowed when the text was chosen or forced."""
    after = state.feed(text)
    if after is None:
        raise ModelError(f"the answer grammar refused {text!r} after {state.text[-60:]!r}, text it had allowed")
    return after


class PromptLookup:
    """Drafts copied from the prompt ("prompt lookup decoding"): extraction answers mostly repeat the input, so
    the tokens that followed the latest occurrence in the prompt of the answer's last 2-3 tokens are a good guess
    at what comes next. The draft length adapts: it grows while drafts are taken whole and shrinks when they are
    not, so a model that does not copy pays little for the guesses."""

    def __init__(
        self, prompt: list[int], ngram: int = DRAFT_NGRAM, length: int = DRAFT_START, min_ngram: int = DRAFT_MIN_NGRAM
    ):
        self.prompt, self.ngram, self.length, self.min_ngram = prompt, ngram, length, min_ngram
        self.after: dict[tuple[int, ...], int] = {}
        for n in range(1, ngram + 1):
            for i in range(len(prompt) - n):
                self.after[tuple(prompt[i : i + n])] = i + n  # later occurrences win: the input comes last

    def draft(self, out: list[int]) -> list[int]:
        """Up to `length` tokens that followed the longest suffix of `out` (at least `min_ngram` tokens) found in
        the prompt; [] when none."""
        for n in range(min(self.ngram, len(out)), self.min_ngram - 1, -1):
            start = self.after.get(tuple(out[-n:]))
            if start is not None:
                return self.prompt[start : start + self.length]
        return []

    def taken(self, taken: int, proposed: int) -> None:
        """Feedback: how much of the last draft the model took."""
        if taken == proposed:
            self.length = min(self.length + 2, DRAFT_MAX)
        else:
            self.length = max(self.length - 1, 1)


@dataclass
class Job:
    """One answer to decode: the prompt's token ids, the output grammar (None: free text), the token budget."""

    ids: list[int]
    grammar: Grammar | None
    max_tokens: int
    draft: bool = True


class _Pending:
    """A job waiting in the engine's queue, and where its result goes."""

    def __init__(self, job: Job):
        self.job, self.done = job, threading.Event()
        self.result: Generation | Exception = ModelError("the engine stopped before decoding this request")


class Engine:
    """One model in memory: weights (LoRA merged), tokenizer, vocabulary texts, the prompt-prefix cache.

    Calls from several threads are decoded together: a caller queues its jobs and, once it holds the model,
    decodes up to `batch_size` queued jobs — its own and whoever else's are waiting — in one batch."""

    heads_ahead = True  # a forced key's head rides in the pass of the token before it (`_head_ahead`)
    one_row = False  # decode one job at a time (a sliding-window model; set in __init__)
    lookahead = True  # a choice that cornered the model may give way to its runner-up (`_reconsider`)

    def __init__(self, base: Path, adapter: Path | None, device: str | None, dtype: str, threads: int | None):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer, self.model = _load(base, adapter, self.device, dtype)
        # a sliding-window layer (Gemma 3) attends to the last N cache columns, padding and refused drafts
        # included: rows decoded together would each see less than alone, so such a model decodes one row at a time
        self.one_row = _slides(self.model.config)
        self.batch_size = BATCH_GPU if self.device.type == "cuda" else BATCH_CPU
        self.lock = threading.Lock()  # held while the model runs
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self.texts = _vocab_texts(self.tokenizer)
        self.single_char = _single_char_tokens(self.texts)
        self.string_safe = torch.tensor([_string_safe(t) for t in self.texts], device=self.device)
        self.stop_ids = _stop_ids(self.tokenizer, self.model)
        self.prefix = PrefixCache()

    # -- public ----------------------------------------------------------------------------------------------------

    def job(self, messages: list[dict[str, str]], grammar: Grammar | None, max_tokens: int, draft: bool = True) -> Job:
        return Job(render_chat(self.tokenizer, messages, generation_prompt=True), grammar, max_tokens, draft)

    def run(self, jobs: list[Job], batch_size: int | None = None) -> list[Generation | Exception]:
        """Decode `jobs` (batched with any other thread's waiting jobs, up to `batch_size` rows, default the
        engine's); a result or the error, per job, in order. Jobs are queued shortest prompt first, so the rows
        of a batch are alike in length."""
        size = 1 if self.one_row else batch_size or self.batch_size
        pending = [_Pending(job) for job in jobs]
        with self._queue_lock:
            self._queue += sorted(pending, key=lambda p: len(p.job.ids))
        while not all(p.done.is_set() for p in pending):
            with self.lock:
                if all(p.done.is_set() for p in pending):
                    break  # decoded by the previous holder: leave newer arrivals to their own callers, together
                with self._queue_lock:
                    batch, self._queue = self._queue[:size], self._queue[size:]
                if batch:
                    self._decode_on_runner(batch)
        return [p.result for p in pending]

    def _decode_on_runner(self, batch: list[_Pending]) -> None:
        """Every pass runs on the process's one runner thread (`runner_thread`): OpenMP (under torch's and
        llama.cpp's kernels) keeps a team of threads per calling thread, and calls from a pool of threads (the
        cascade's `asyncio.to_thread`) each woke their own — order answers from worker threads took 4.06-4.34 s
        against 3.32-3.70 s from one (torch engine; llama.cpp: 1.35-1.37 against 0.93-1.10 s; quiet 2-core EPYC)."""
        try:
            self._on_runner(self._decode_batch, batch)
        except Exception as exc:  # no runner at interpreter exit: every waiting caller still gets an answer
            for p in batch:
                if not p.done.is_set():
                    p.result = self._as_model_error(exc)
                    p.done.set()

    def _on_runner(self, fn, *args, **kwargs):
        """`fn` on the process's one thread for forward passes, waited for."""
        return runner_thread().submit(fn, *args, **kwargs).result()

    # -- decoding ----------------------------------------------------------------------------------------------------

    def _decode_batch(self, batch: list[_Pending]) -> None:
        """Decode `batch` and hand each job its result; every job gets one, whatever happens (its caller waits)."""
        results: list = [ModelError("local model: decoding was interrupted")] * len(batch)
        try:
            with self.torch.inference_mode():
                rows = Batch(self.model, self.prefix)
                results = decode(rows, [self._decode(p.job) for p in batch])
            for result, reused in zip(results, rows.reused):
                if isinstance(result, Generation):
                    result.reused_tokens = reused
        except Exception as exc:  # out of memory, a bad checkpoint: every answer of the batch failed
            self.prefix = PrefixCache()  # it may hold a half-written prefix
            results = [exc] * len(batch)
        finally:
            for p, result in zip(batch, results):
                p.result = self._as_model_error(result)
                p.done.set()

    def _as_model_error(self, result):
        """Failures as ModelError (the cascade escalates on it); user errors and results as they are."""
        if not isinstance(result, Exception) or isinstance(result, ProtegeError):
            return result
        error = ModelError(f"local model failed: {result!r}", model=str(self.model.name_or_path))
        error.__cause__ = result
        return error

    def _decode(self, job: Job) -> Answer:
        if job.grammar is None:
            return self._free(job.ids, job.max_tokens)
        return self._constrained(job.ids, job.grammar, job.max_tokens, job.draft)

    def _free(self, ids, max_tokens) -> Answer:
        logits = yield Feed(ids)
        out: list[int] = []
        stop = "max_tokens"
        while len(out) < max_tokens:
            token = int(logits.argmax())
            if token in self.stop_ids:
                stop = "end_turn"
                break
            out.append(token)
            logits = yield Feed([token])
        text = self.tokenizer.decode(out, skip_special_tokens=True)
        return Generation(text, len(ids), len(out), 0, 0, len(out), None, stop, 0, None)

    def _constrained(self, ids, grammar: Grammar, max_tokens: int, draft: bool) -> Answer:
        answer = _Answer(grammar.start())
        budget = max_tokens
        # forced text whose head was fed with the tokens before it (the prompt, the previous token): one pass for both
        forced_ahead, head = self._head_ahead(answer, budget)
        logits = yield Feed([*ids, *head])
        self._take_head(answer, head)
        lookup = PromptLookup(ids) if draft else None
        stop, runaway = "end_turn", None
        while not answer.state.done:
            runaway = runaway_guard(answer.out, answer.state)
            if runaway is not None:  # left unclosed, like a cut answer: never served
                stop = "bound"
                break
            forced = forced_ahead
            if not forced:
                what, forced, head = self._forced_next(answer, budget)
                if what == "max_tokens":  # left unclosed: a cut answer never parses, so it is never served
                    stop = "max_tokens"
                    break
                if what == "close":  # the grammar fixes everything that is left
                    answer.take_forced(forced, self.tokenizer(forced, add_special_tokens=False)["input_ids"])
                    break
                if head:
                    self._take_head(answer, head)
                    logits = yield Feed(head)
                    if answer.state.done:
                        break
            token = self._choose(logits, answer.state)
            prob = None if forced else self._prob(logits, token)
            choice = None if prob is None else _Choice(answer.state, logits, token, prob)
            answer.take(token, self.texts[token], prob)
            forced_ahead = ""
            if answer.state.done or self._ends_next(answer, budget):
                continue  # no pass for logits nothing would read: the loop's top closes or stops the answer
            logits, forced_ahead = yield from self._next_logits(token, answer, lookup, budget, choice)
        confidence = sum(answer.probs) / len(answer.probs) if answer.probs else 1.0
        out = answer.out
        return Generation(
            "".join(answer.pieces),
            len(ids),
            len(out),
            0,
            answer.forced,
            len(out) - answer.forced,
            confidence,
            stop,
            answer.drafted,
            min(answer.probs, default=1.0),
            answer.field_confidences(),
            answer.reconsidered,
            runaway,
        )

    def _next_logits(self, token: int, answer: _Answer, lookup: PromptLookup | None, budget: int, choice=None):
        """Logits for the next choice after `token`, and the forced text whose head they follow ("" if none).

        With a draft from the prompt, one pass also scores the draft; the draft tokens the model would have chosen
        itself (greedy, under the grammar) are taken, so the answer is the same as without drafting, in fewer
        passes. The context keeps only what was taken. Without a draft, the head of the text the grammar forces
        next (a key) is fed in the same pass as `token`: its logits would go unused. Where `token` was the model's
        free `choice` and cornered it, the runner-up may replace it (`_reconsider`)."""
        draft = self._grammatical(lookup.draft(answer.out), answer.state) if lookup is not None else []
        if lookup is None or not draft:
            forced, head = self._head_ahead(answer, budget)
            logits = yield Feed([token, *head])
            if choice is not None and not head:  # with a head, these logits follow the forced text, not `token`
                reconsidered = yield from self._reconsider(answer, choice, logits, fed=1)
                logits = logits if reconsidered is None else reconsidered
            self._take_head(answer, head)
            return logits, forced
        scored = yield Feed([token, *draft], keep=len(draft) + 1)
        if choice is not None:  # before any draft token is taken, so drafting changes no answer
            reconsidered = yield from self._reconsider(answer, choice, scored[0], fed=len(draft) + 1)
            if reconsidered is not None:
                lookup.taken(0, len(draft))
                return reconsidered, ""
        taken = 0
        for proposed, logits in zip(draft, scored):  # the draft already ends where the grammar forces or closes
            if len(answer.out) >= budget or self._choose(logits, answer.state) != proposed:
                break
            answer.take(proposed, self.texts[proposed], self._prob(logits, proposed))
            taken += 1
        if taken < len(draft):
            yield Forget(len(draft) - taken)
        answer.drafted += taken
        lookup.taken(taken, len(draft))
        return scored[taken], ""

    def _reconsider(self, answer: _Answer, choice: _Choice, logits, fed: int):
        """A two-token look-ahead where `choice` cornered the model. `logits` follow the chosen token (the last
        `fed` tokens of the context: the token and a refused draft). If the model's first choice there is refused
        and was at least `CORNERED` likely, the runner-up of `choice` is run too, and the one whose pair (itself
        and the best token the grammar allows after it) is more likely stays in the answer and the context.

        Returns the logits after the kept token, or None, having run and changed nothing (the usual case).
        Never where the grammar writes what follows, or where a learned bound was just reached: that flags the
        answer, and stepping around it would serve a runaway answer as a sure one."""
        follow = self._cornered(logits, answer.state) if self.lookahead else None
        if follow is None or answer.state.forced() or answer.state.at_soft_bound:
            return None  # the cheap test first: it is made after every free choice
        kept = choice.prob * follow
        runner_up = self._runner_up(choice)
        prob = 0.0 if runner_up is None else self._prob(choice.logits, runner_up)
        if runner_up is None or prob <= kept:
            return None  # even a sure next token could not make the runner-up's pair the likelier
        yield Forget(fed)
        other = yield Feed([runner_up])
        after = choice.state.feed(self.texts[runner_up])
        if after is not None and prob * self._best_allowed_prob(other, after) > kept:
            answer.retake(choice.state, runner_up, self.texts[runner_up], prob)
            return other
        yield Forget(1)
        return (yield Feed([choice.token]))

    def _cornered(self, logits, state: State) -> float | None:
        """When the model's first choice is refused and at least `CORNERED` likely, the probability of the best
        token the grammar allows instead (0.0 if none can continue); None otherwise."""
        top = int(logits.argmax())
        if self.texts[top] and state.feed(self.texts[top]) is not None:
            return None
        if self._prob(logits, top) < CORNERED:
            return None
        return self._best_allowed_prob(logits, state)

    def _best_allowed_prob(self, logits, state: State) -> float:
        try:
            return self._prob(logits, self._choose(logits, state))
        except ModelError:  # nothing can follow: a dead end
            return 0.0

    def _runner_up(self, choice: _Choice) -> int | None:
        """The model's best token, other than `choice.token`, that the grammar allows in its place and that does not
        end the answer."""
        for token in self.torch.topk(choice.logits, TOP_K).indices.tolist():
            text = self.texts[token]
            after = choice.state.feed(text) if text and token != choice.token else None
            if after is not None and not after.done:
                return token
        return None

    def _forced_next(self, answer: _Answer, budget: int) -> tuple[str, str, list[int]]:
        """What comes before the model's next choice, as (what, forced text, head): "max_tokens" when the budget
        is spent; "close" when the forced text ends the answer; "head" when the forced text has a head to feed
        (all but its last token); "" otherwise (the forced text, if any, is left to the model to spell)."""
        if len(answer.out) >= budget:
            return "max_tokens", "", []
        forced = answer.state.forced()
        if not forced:
            return "", "", []
        rest = answer.state.feed(forced)
        if rest is not None and rest.done:
            return "close", forced, []
        head = self._forced_head(forced)
        return ("head" if head else ""), forced, head

    def _ends_next(self, answer: _Answer, budget: int) -> bool:
        """Whether the answer ends before the model's next choice: the grammar writes all that is left (an enum
        value's tail and the closing brackets), or the token budget is spent. Saves the last pass of most answers
        (one of ~3 in a one-field classification); the look-ahead never steps back where the grammar forces."""
        return self._forced_next(answer, budget)[0] in ("close", "max_tokens")

    def _head_ahead(self, answer: _Answer, budget: int) -> tuple[str, list[int]]:
        """The forced text and head the next step would feed, to ride in this pass, or ("", [])."""
        if not self.heads_ahead:
            return "", []
        what, forced, head = self._forced_next(answer, budget)
        return (forced, head) if what == "head" else ("", [])

    def _take_head(self, answer: _Answer, head: list[int]) -> None:
        if head:
            answer.take_forced("".join(self.texts[t] for t in head), head)

    def _grammatical(self, draft: list[int], state: State) -> list[int]:
        """The part of a draft the grammar allows, up to where the grammar would force text (not worth scoring)."""
        kept = []
        for token in draft:
            following = state.feed(self.texts[token]) if self.texts[token] and not state.forced() else None
            if following is None:
                break
            kept.append(token)
            if following.done:
                break
            state = following
        return kept

    def _prob(self, logits, token: int) -> float:
        return float(self.torch.softmax(logits, -1)[token])

    def _forced_head(self, forced: str) -> list[int]:
        """All but the last token of the forced text (the last is left to the model: it may merge onward)."""
        tokens = self.tokenizer(forced, add_special_tokens=False)["input_ids"]
        if "".join(self.texts[t] for t in tokens) != forced:
            return []  # the tokenizer normalizes this text: let the model spell it, constrained
        return tokens[:-1]

    def _choose(self, logits, state: State) -> int:
        """The highest-scoring token the grammar accepts."""
        for token in self.torch.topk(logits, TOP_K).indices.tolist():
            text = self.texts[token]
            if text and state.feed(text) is not None:
                return token
        return self._choose_fallback(logits, state)

    def _choose_fallback(self, logits, state: State) -> int:
        """When none of the top-k fit (an unsure or untrained model): search the tokens that can fit, best first."""
        allowed = state.allowed()
        candidates = self.torch.zeros_like(self.string_safe)
        if allowed is None:
            candidates |= self.string_safe
            allowed = frozenset('"\\')
        for char in allowed:
            token = self.single_char.get(char)
            if token is not None:
                candidates[token] = True
        ranked = self.torch.where(candidates, logits, self.torch.full_like(logits, float("-inf")))
        for token in self.torch.argsort(ranked, descending=True).tolist():
            if not bool(candidates[token]):
                break
            if state.feed(self.texts[token]) is not None:
                return token
        raise ModelError(
            f"no token of the vocabulary can continue the answer under its schema after "
            f"{state.text[-60:]!r} (a copied field with nothing in this input to copy, or a pattern no token "
            f"can go on with)"
        )


_RUNNER: ThreadPoolExecutor | None = None
_RUNNER_LOCK = threading.Lock()


def runner_thread() -> ThreadPoolExecutor:
    """The process's one thread for local forward passes, shared by every engine: OpenMP keeps a thread team per
    calling thread, and two teams on two cores slow each other (llama.cpp after a torch engine had run in the same
    process, 2 threads: 1.31 s an order answer on its own runner against 0.95-1.10 s on the shared one)."""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="protege-local-model")
        return _RUNNER


def top_level_spans(text: str) -> dict[str, tuple[int, int]]:
    """Where each top-level field's value sits in a compact JSON object (as far as the text goes)."""
    decoder, spans = json.JSONDecoder(), dict[str, tuple[int, int]]()
    if not text.startswith("{"):
        return spans
    pos = 1
    try:
        while pos < len(text) and text[pos] != "}":
            key, pos = decoder.raw_decode(text, pos)
            _, end = decoder.raw_decode(text, pos + 1)
            spans[key] = (pos + 1, end)
            pos = end + (text[end : end + 1] == ",")
    except (ValueError, IndexError):
        pass  # a cut answer: the fields it completed
    return spans


def _slides(config: object) -> bool:
    """Whether any attention layer of the model sees only a window of the latest positions."""
    return bool(getattr(config, "sliding_window", None)) and "sliding_attention" in (
        getattr(config, "layer_types", None) or ["sliding_attention"]
    )


def _load(base: Path, adapter: Path | None, device, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter or base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    if dtype == "int8":  # weights in int8, activations quantized on the fly: decoding is memory-bound on a CPU
        if device.type != "cpu":
            raise UserError(f"dtype='int8' runs on the CPU only; device is {device.type!r}: use 'auto' or 'bfloat16'")
        model = torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)
        return tokenizer, model
    # transformers types PreTrainedModel.to through a decorator that hides its signature
    model = model.to(device=device, dtype=_inference_dtype(dtype, device)).eval()  # type: ignore[call-arg]
    return tokenizer, model


def _inference_dtype(dtype: str, device):
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _vocab_texts(tokenizer) -> list[str]:
    """Each token's text; tokens that are not whole characters (byte pieces) or are special get ''."""
    special = set(tokenizer.all_special_ids)
    size = len(tokenizer)
    texts = []
    for token in range(size):
        text = "" if token in special else tokenizer.decode([token])
        texts.append("" if "\ufffd" in text else text)
    return texts


def _single_char_tokens(texts: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for token, text in enumerate(texts):
        if len(text) == 1 and text not in found:
            found[text] = token
    return found


def _string_safe(text: str) -> bool:
    """Text that can sit anywhere inside a JSON string (no quote, backslash or control character)."""
    return bool(text) and '"' not in text and "\\" not in text and all(ord(c) >= 0x20 for c in text)


def _stop_ids(tokenizer, model) -> set[int]:
    ids = {tokenizer.eos_token_id}
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids |= set(eos) if isinstance(eos, list) else {eos}
    for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        token = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ids.add(token)
    return {i for i in ids if i is not None}
