"""`local:` models: schema-constrained decoding (the grammar alone, then a real tiny model), confidence, the
prompt-prefix cache, the process-wide engine cache, and clear errors for bad paths."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from student_support import chat_row, tiny_dims

from protege.agents.models.base import Message, ModelRequest, resolve_model
from protege.agents.models.decoding import Grammar
from protege.errors import ModelError, UserError


class Line(BaseModel):
    sku: str = Field(min_length=1, max_length=12)
    qty: int = Field(ge=1)
    price: float


class Invoice(BaseModel):
    kind: Literal["order", "refund", "quote"]
    customer: str | None
    lines: list[Line]
    tags: list[str] = Field(max_length=3)
    priority: int
    paid: bool
    note: str | None = None
    meta: dict = Field(default_factory=dict)


SCHEMA = Invoice.model_json_schema()


def compact(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def accepts(text: str, schema=SCHEMA) -> bool:
    state = Grammar(schema).start().feed(text)
    return state is not None and state.done


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
lines = st.builds(
    Line,
    sku=texts.filter(lambda s: len(s) >= 1),
    qty=st.integers(1, 10**6),
    price=st.floats(-1e6, 1e6, allow_nan=False),
)
invoices = st.builds(
    Invoice,
    kind=st.sampled_from(["order", "refund", "quote"]),
    customer=st.none() | texts,
    lines=st.lists(lines, max_size=3),
    tags=st.lists(texts, max_size=3),
    priority=st.integers(-5, 5),
    paid=st.booleans(),
    note=st.none() | texts,
    meta=st.dictionaries(
        texts, st.none() | st.integers(-(10**17), 10**18 - 1) | texts | st.lists(st.booleans(), max_size=2), max_size=2
    ),
)


# -- the grammar on its own ----------------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(invoices)
def test_grammar_accepts_every_valid_answer_in_compact_form(invoice):
    """Whatever a valid answer holds (unicode, escapes, negative floats, nested lists, free dicts; integers of up
    to 18 digits), its compact JSON — the form students are trained on — is a complete sentence of the grammar."""
    assert accepts(compact(invoice.model_dump(mode="json")))


@pytest.mark.parametrize(
    "answer",
    [
        {"kind": "invoice"},  # not one of the enum's values
        {"kind": "order", "customer": 3},  # a number where a string or null goes
        {"kind": "order", "customer": None, "lines": [{"sku": "", "qty": 1, "price": 1}]},  # minLength
        {"kind": "order", "customer": None, "lines": [{"sku": "a", "qty": 0, "price": 1}]},  # minimum 1
        {"kind": "order", "customer": None, "lines": [{"sku": "a", "qty": 1.5, "price": 1}]},  # not an integer
        {"kind": "order", "customer": None, "lines": [], "tags": ["a", "b", "c", "d"]},  # maxItems
    ],
)
def test_grammar_rejects_what_the_schema_rules_out(answer):
    """Enum values, types, string length, integer minimum and list length are all enforced character by
    character: the first offending character is refused."""
    assert Grammar(SCHEMA).start().feed(compact(answer)) is None


def test_grammar_forces_keys_and_punctuation():
    """Keys and punctuation the schema fixes are written without asking the model (they cost no choice)."""
    state = Grammar(SCHEMA).start()
    assert state.forced() == '{"kind":"'
    state = state.feed('{"kind":"re')
    assert state.forced() == 'fund","customer":'
    assert state.feed(state.forced()).allowed() == frozenset('"n')  # a string or null: the model's choice


# -- a real (tiny, random) model under the grammar ----------------------------------------------------------------


def request(text: str, schema=SCHEMA, max_tokens: int = 2048, system: str = "Write the invoice.") -> ModelRequest:
    return ModelRequest(
        messages=[Message(role="system", content=system), Message(role="user", content=text)],
        output_schema=schema,
        max_tokens=max_tokens,
    )


@pytest.fixture(scope="module")
def tiny(tiny_base):
    from protege.agents.models.local import LocalModel

    return LocalModel(tiny_base, threads=2)


def test_an_untrained_model_still_answers_valid_json(tiny):
    """A random model — the worst case for constrained decoding — always produces an answer that validates:
    enums, nullable fields, ints, floats, nested lists of objects and free-form dicts included."""
    for text in ["invoice 1", "refund for ACME", "ünïcode ✓"]:
        response = tiny.generate(request(text, max_tokens=250))  # an unsure model's strings run long: cap them
        Invoice.model_validate_json(response.text)
        assert 0.0 <= response.confidence <= 1.0
        assert response.usage.output_tokens > 0 and response.raw["forced_tokens"] > 0


def test_a_cut_answer_is_left_cut_and_says_so(tiny):
    """When max_tokens runs out mid-answer the answer is not closed into valid JSON (a runaway answer closed at
    the limit once passed validation with confidence 0.99): it stays unparseable and says `max_tokens`."""
    response = tiny.generate(request("invoice", max_tokens=40))
    assert response.stop_reason == "max_tokens" and response.usage.output_tokens == 40
    with pytest.raises(ValueError):
        json.loads(response.text)


async def test_the_model_protocol_and_spec_strings(tiny_base):
    """`local:<path>` resolves through the provider registry; `request` is the async Model protocol."""
    model = resolve_model(f"local:{tiny_base}")

    class Flag(BaseModel):
        ok: bool

    response = await model.request(request("x", Flag.model_json_schema()))
    assert Flag.model_validate_json(response.text) in (Flag(ok=True), Flag(ok=False))
    assert response.model == f"local:{tiny_base}"


def test_the_shared_prompt_prefix_is_reused_and_changes_nothing(tiny):
    """A call that shares the system turn with the previous one reuses its cached keys/values (reported as
    cache-read tokens) and answers exactly what a cold call answers."""
    tiny.generate(request("first input"))
    warm = tiny.generate(request("second input"))
    assert warm.usage.cache_read_tokens > 5
    tiny.engine.prefix.ids = []  # forget the cache: a cold call
    cold = tiny.generate(request("second input"))
    assert cold.usage.cache_read_tokens == 0
    assert cold.text == warm.text and cold.confidence == pytest.approx(warm.confidence, abs=1e-5)


def test_free_text_without_a_schema(tiny):
    """Without an output schema the model writes free text until end of turn or the token limit."""
    response = tiny.generate(ModelRequest(messages=[Message(role="user", content="hi")], max_tokens=5))
    assert response.usage.output_tokens == 5 and response.stop_reason == "max_tokens"
    assert response.confidence is None


def test_one_engine_per_process_and_paths(tiny_base):
    """Two LocalModels of the same checkpoint share one loaded engine; the cache is keyed by what is loaded."""
    from protege.agents.models.local import LocalModel

    a, b = LocalModel(tiny_base), LocalModel(str(tiny_base), name="other")
    assert a.engine is b.engine
    assert LocalModel(tiny_base, dtype="bfloat16").engine is not a.engine


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_student_dir_finds_its_base_from_metadata(tiny_base, tmp_path, method):
    """A trained student dir is enough: an adapter's metadata names the base, merged in on load; a fully
    fine-tuned student is a checkpoint of its own, given alone or as the adapter of its base."""
    from protege.agents.models.local import LocalModel
    from protege.distill.train import TrainConfig, train_student

    row = chat_row("Say the word.", {"w": "yes"}, {"word": "yes"})
    config = TrainConfig(method=method, max_steps=1, torch_threads=2)
    result = train_student([row], tiny_base, tmp_path / "s", config)
    model = LocalModel(result.adapter_path)
    if method == "lora":
        assert model.base_path == tiny_base and model.adapter_path == result.adapter_path
    else:
        given_as_adapter = LocalModel(tiny_base, adapter=result.adapter_path)
        assert model.base_path == given_as_adapter.base_path == result.adapter_path
        assert model.adapter_path is None and given_as_adapter.adapter_path is None

    class Word(BaseModel):
        word: str

    Word.model_validate_json(model.generate(request("x", Word.model_json_schema())).text)


def test_bad_paths_are_user_errors(tiny_base, tmp_path):
    """A missing path, a dir that is no checkpoint, a wrong adapter dir, an adapter whose base is gone."""
    from protege.agents.models.local import LocalModel

    with pytest.raises(UserError, match="does not exist"):
        LocalModel(tmp_path / "nope")
    with pytest.raises(UserError, match="no config.json"):
        LocalModel(tmp_path)
    with pytest.raises(UserError, match="has no adapter_config.json"):
        LocalModel(tiny_base, adapter=tmp_path)
    orphan = tmp_path / "orphan"
    orphan.mkdir()
    (orphan / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/gone/base"}))
    with pytest.raises(UserError, match="cannot find the base model"):
        LocalModel(orphan)


def test_int8_weights_still_answer_under_the_schema(tiny_base):
    """dtype='int8' (dynamic int8 quantization of the linear layers, for CPU serving) loads and answers validly."""
    from protege.agents.models.local import LocalModel

    model = LocalModel(tiny_base, dtype="int8", threads=2)
    response = model.generate(request("invoice", max_tokens=150))
    Invoice.model_validate_json(response.text)
    assert (
        "Quantized" in type(model.engine.model.lm_head).__name__
        or "quantized" in type(model.engine.model.lm_head).__module__
    )


# -- drafting from the prompt ----------------------------------------------------------------------------------------


def test_prompt_lookup_drafts_what_followed_the_longest_match():
    """The draft is what followed the latest occurrence of the answer's longest suffix (up to 3 tokens) in the
    prompt; nothing when no suffix occurs, and nothing past the prompt's end."""
    from protege.agents.models.local_engine import PromptLookup

    prompt = [1, 2, 3, 4, 5, 9, 3, 7, 8, 2, 3, 6]
    lookup = PromptLookup(prompt, ngram=3, length=3, min_ngram=1)
    assert lookup.draft([2, 3]) == [6]  # the later "2 3" wins, and the prompt ends after one token
    assert lookup.draft([1, 2, 3]) == [4, 5, 9]  # a 3-token match beats the later 2-token one
    assert lookup.draft([9, 3]) == [7, 8, 2]
    assert lookup.draft([42, 3]) == [6]  # falls back to the last token alone
    assert lookup.draft([42]) == [] and lookup.draft([]) == [] and lookup.draft([6]) == []
    pairs_only = PromptLookup(prompt, ngram=3, length=3, min_ngram=2)  # the default: no one-token matches
    assert pairs_only.draft([42, 3]) == [] and pairs_only.draft([9, 3]) == [7, 8, 2]


def test_the_draft_grows_while_taken_whole_and_shrinks_when_refused():
    """A model that copies gets longer drafts (up to DRAFT_MAX); one that does not is soon offered single tokens."""
    from protege.agents.models.local_engine import DRAFT_MAX, PromptLookup

    lookup = PromptLookup(list(range(100)), length=4)
    lookup.taken(4, 4)
    assert len(lookup.draft([9, 10])) == 6
    for _ in range(20):
        lookup.taken(lookup.length, lookup.length)
    assert lookup.length == DRAFT_MAX
    for _ in range(30):
        lookup.taken(0, lookup.length)
    assert lookup.draft([9, 10]) == [11]


def test_drafting_changes_no_answer_of_a_random_model(tiny):
    """Drafts a random model would not have written are refused: answers, confidences and stop reasons are the
    same with and without prompt lookup (inputs that repeat themselves, so drafts are proposed)."""
    from protege.agents.models.local import LocalModel

    plain = LocalModel(tiny.base_path, threads=2, prompt_lookup=False)
    for text in ["sku A1 A1 A1 qty 2 qty 2", "refund refund refund ACME ACME", "ünïcode ✓ ünïcode ✓"]:
        with_draft, without = (
            tiny.generate(request(text, max_tokens=200)),
            plain.generate(request(text, max_tokens=200)),
        )
        assert (with_draft.text, with_draft.stop_reason) == (without.text, without.stop_reason)
        assert with_draft.confidence == pytest.approx(without.confidence, abs=1e-4)


@pytest.fixture(scope="module")
def tiny_sliding(tiny_base, tmp_path_factory):
    """A random 4-layer Gemma 3 whose sliding-window layers see 8 tokens: every prompt here is longer."""
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    from protege.agents.models.local import LocalModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    config = Gemma3TextConfig(
        **tiny_dims(tokenizer),
        num_hidden_layers=4,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gemma3")
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return LocalModel(folder, threads=2), LocalModel(folder, threads=2, prompt_lookup=False)


def test_a_sliding_window_model_drafts_and_batches_as_it_answers_alone(tiny_sliding):
    """Gemma 3's sliding-window layers, past their window: a refused draft is rolled back and rows decoded
    together answer as each does alone (a cache built from the config kept only the window: drafts crashed and
    batched rows read each other's positions)."""
    drafting, plain = tiny_sliding
    texts = ["sku A1 A1 A1 qty 2 qty 2", "refund refund refund ACME ACME", "invoice 7 for ACME, due today"]
    alone = [plain.generate(request(text, max_tokens=120)) for text in texts]
    for model in (drafting, plain):
        together = model.generate_batch([request(text, max_tokens=120) for text in texts])
        assert [(r.text, r.stop_reason) for r in together] == [(r.text, r.stop_reason) for r in alone]
    assert [drafting.generate(request(text, max_tokens=120)).text for text in texts] == [r.text for r in alone]


def test_a_forced_key_rides_in_the_pass_of_the_token_before_it(tiny, monkeypatch):
    """The head of each forced key is fed with the prompt or the token before it, whose logits it would leave
    unused: the answers (and the tokens counted as forced) are those of a decoder that feeds each head in a pass
    of its own, in fewer passes."""
    from protege.agents.models.local_batch import Batch

    passes, step = [], Batch.step
    monkeypatch.setattr(Batch, "step", lambda self, *a, **k: (passes.append(1), step(self, *a, **k))[1])
    engine = tiny.engine
    for text in ["invoice 1", "refund for ACME"]:
        passes.clear()
        ahead = tiny.generate(request(text, max_tokens=150))
        ahead_passes = len(passes)
        passes.clear()
        with monkeypatch.context() as alone:  # the decoder before: a forced head waits for its own pass
            alone.setattr(engine, "heads_ahead", False)
            separate = tiny.generate(request(text, max_tokens=150))
        assert (ahead.text, ahead.stop_reason, ahead.raw["forced_tokens"]) == (
            separate.text,
            separate.stop_reason,
            separate.raw["forced_tokens"],
        )
        assert ahead.confidence == pytest.approx(separate.confidence, abs=1e-5)
        assert ahead_passes < len(passes)


class Section(BaseModel):
    section: Literal["electronics", "editors", "games", "mail"]


def test_no_pass_runs_for_an_ending_the_grammar_writes(tiny, monkeypatch):
    """Once the grammar writes all that is left (an enum value's tail, the closing brackets) or the budget is
    spent, no pass runs for logits nothing would read: the same answers, one pass fewer (of ~3 in a one-field
    classification)."""
    from protege.agents.models.local_batch import Batch
    from protege.agents.models.local_engine import Engine

    passes, step = [], Batch.step
    monkeypatch.setattr(Batch, "step", lambda self, *a, **k: (passes.append(1), step(self, *a, **k))[1])
    cases = [("a mail reader", Section.model_json_schema(), 50), ("invoice 1", SCHEMA, 150), ("invoice 2", SCHEMA, 9)]
    for text, schema, max_tokens in cases:
        passes.clear()
        now = tiny.generate(request(text, schema, max_tokens=max_tokens))
        now_passes = len(passes)
        passes.clear()
        with monkeypatch.context() as before:  # the decoder before: a pass after every chosen token
            before.setattr(Engine, "_ends_next", lambda self, answer, budget: False)
            old = tiny.generate(request(text, schema, max_tokens=max_tokens))
        assert (now.text, now.stop_reason, now.raw["forced_tokens"]) == (
            old.text,
            old.stop_reason,
            old.raw["forced_tokens"],
        )
        assert now.confidence == pytest.approx(old.confidence, abs=1e-5)
        assert now_passes == len(passes) - 1, (text, now.stop_reason)


def test_a_real_model_copies_from_the_prompt_in_fewer_passes(smollm2_base):
    """The bundled base copying a sentence into a JSON field takes most of it from drafts, and writes exactly
    what it writes token by token (under LOOP_TOKENS: it copies the sentence again and again, and the runaway
    guard, checked between passes, would stop a drafted answer a few tokens after a plain one — cut both ways)."""
    from protege.agents.models.local import LocalModel

    class Copy(BaseModel):
        text: str

    sentence = "Please deliver 12 Glass Whiteboards to Isabel Zhang, 44 Riverside Avenue, Springfield."
    req = request(
        sentence,
        Copy.model_json_schema(),
        max_tokens=90,
        system='Copy the user\'s message, word for word, into {"text": ...}.',
    )
    drafted = LocalModel(smollm2_base, threads=2).generate(req)
    plain = LocalModel(smollm2_base, threads=2, prompt_lookup=False).generate(req)
    assert drafted.text == plain.text and plain.raw["drafted_tokens"] == 0
    assert drafted.raw["drafted_tokens"] >= 5, drafted.raw


# -- batched decoding --------------------------------------------------------------------------------------------

BATCH_INPUTS = [
    "sku A1 A1 A1 qty 2 qty 2",
    "refund",
    "ünïcode ✓ ünïcode ✓ and a much longer input than the rest",
    "quote for ACME ACME",
    "x",
]


def test_a_batch_answers_what_each_call_answers_alone(tiny):
    """Prompts of different lengths (left-padded), rows finishing at different steps (dropped), a free-text row
    among schema rows: each answer is the one a lone call gives."""
    from protege.agents.models.local import LocalModel

    free = ModelRequest(messages=[Message(role="user", content="hi there")], max_tokens=7)
    requests = [request(text, max_tokens=150 + 20 * i) for i, text in enumerate(BATCH_INPUTS)] + [free]
    alone = [tiny.generate(req) for req in requests]
    together = LocalModel(tiny.base_path, batch_size=4).generate_batch(requests)
    for one, batched in zip(alone, together):
        assert (batched.text, batched.stop_reason) == (one.text, one.stop_reason)
        assert batched.usage.output_tokens == one.usage.output_tokens
        if one.confidence is not None:  # the free-text row has none
            assert batched.confidence == pytest.approx(one.confidence, abs=1e-4)


def test_concurrent_calls_are_decoded_together(tiny):
    """Calls from several threads that wait for the model are decoded in one batch, each getting its own
    answer (the cascade's concurrent calls share forward passes)."""
    import threading

    engine = tiny.engine
    requests = [request(text, max_tokens=120) for text in BATCH_INPUTS[:4]]
    alone = [tiny.generate(req).text for req in requests]
    sizes, decode_batch = [], engine._decode_batch
    engine._decode_batch = lambda batch: (sizes.append(len(batch)), decode_batch(batch))
    answers: dict[int, str] = {}
    try:
        with engine.lock:  # the model is busy: the calls queue up
            threads = [
                threading.Thread(target=lambda i=i: answers.update({i: tiny.generate(requests[i]).text}))
                for i in range(4)
            ]
            for thread in threads:
                thread.start()
            while len(engine._queue) < 4:
                threading.Event().wait(0.01)
        for thread in threads:
            thread.join()
    finally:
        del engine._decode_batch
    assert sizes == [4]
    assert [answers[i] for i in range(4)] == alone


def test_every_pass_runs_on_the_engines_one_runner_thread(tiny, monkeypatch):
    """OpenMP keeps a thread team per calling thread: calls from a pool of threads (`asyncio.to_thread`) must
    not each wake their own (order answers: 4.1-4.3 s from worker threads against 3.3-3.7 s from one)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from protege.agents.models import local_batch

    callers, step = set(), local_batch.Batch.step
    monkeypatch.setattr(
        local_batch.Batch,
        "step",
        lambda self, *a, **k: (callers.add(threading.current_thread().name), step(self, *a, **k))[1],
    )
    requests = [request(text, max_tokens=60) for text in BATCH_INPUTS[:3]]
    alone = [tiny.generate(req).text for req in requests]
    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(lambda r: tiny.generate(r).text, requests)) == alone
    assert len(callers) == 1 and callers.pop().startswith("protege-local-model")


def test_without_a_runner_the_call_fails_instead_of_hanging(tiny, monkeypatch):
    """At interpreter exit no new work can be scheduled: each waiting caller gets a ModelError (and escalates)."""
    from concurrent.futures import ThreadPoolExecutor

    from protege.agents.models import local_engine
    from protege.errors import ModelError

    stopped = ThreadPoolExecutor(max_workers=1)
    stopped.shutdown()
    monkeypatch.setattr(local_engine, "runner_thread", lambda: stopped)
    with pytest.raises(ModelError, match="local model failed"):
        tiny.generate(request("an invoice", max_tokens=20))


def test_one_failing_answer_leaves_the_rest_of_its_batch(tiny):
    """An answer that raises mid-batch gets its error; the other rows finish and match their lone answers."""
    from protege.agents.models.local_batch import Batch, Feed, PrefixCache, decode

    engine = tiny.engine
    jobs = [engine.job([{"role": "user", "content": text}], Grammar(SCHEMA), 150) for text in BATCH_INPUTS[:3]]

    def failing():
        yield Feed(jobs[0].ids)
        yield Feed([1, 2])
        raise ValueError("this answer broke")

    import torch

    with torch.inference_mode():
        results = decode(
            Batch(engine.model, PrefixCache()), [engine._decode(jobs[0]), failing(), engine._decode(jobs[2])]
        )
    alone = engine.run([jobs[0], jobs[2]])
    assert isinstance(results[1], ValueError)
    assert isinstance(engine._as_model_error(results[1]), ModelError)  # what its caller gets: the cascade escalates
    assert [results[0].text, results[2].text] == [alone[0].text, alone[1].text]


def test_a_real_model_drafts_in_a_batch_as_it_does_alone(smollm2_base, monkeypatch):
    """The bundled base copying three sentences in one batch: drafts are taken and refused row by row (refused
    ones masked out of the row's context) and every answer is the one it writes alone, token by token."""
    from protege.agents.models.local import LocalModel
    from protege.agents.models.local_batch import Batch

    class Copy(BaseModel):
        text: str

    masked, forget = [], Batch.forget
    monkeypatch.setattr(
        Batch, "forget", lambda self, row, n: (masked.append(len(self.positions) > 1), forget(self, row, n))
    )
    sentences = [
        "Please deliver 12 Glass Whiteboards to Isabel Zhang, 44 Riverside Avenue, Springfield.",
        "Refund order A-7731 for Marek Nowak; the blender arrived cracked.",
        "Quote 3 standing desks, oak, for ACME GmbH in Köln by Friday.",
    ]
    requests = [
        request(
            s,
            Copy.model_json_schema(),
            max_tokens=46,  # cut mid-draft: a refused tail
            system='Copy the user\'s message, word for word, into {"text": ...}.',
        )
        for s in sentences
    ]
    plain = LocalModel(smollm2_base, threads=2, prompt_lookup=False)
    alone = [plain.generate(req).text for req in requests]
    together = LocalModel(smollm2_base, threads=2).generate_batch(requests)
    assert [r.text for r in together] == alone
    assert all(r.raw["drafted_tokens"] >= 5 for r in together) and any(masked)


def test_a_tool_task_student_answers_or_calls_a_tool_it_has_with_arguments_of_its_shape(tiny):
    """A random model under a tool task's grammar: every turn is a valid answer (with per-field confidences) or
    one call of an offered tool whose arguments validate — never free text, never a tool it was not given."""
    from protege.agents.models.base import ToolSpec

    class Lookup(BaseModel):
        sku: str = Field(max_length=12)
        limit: int = Field(ge=1, le=9)

    lookup, ping = ToolSpec(name="lookup_stock", parameters=Lookup.model_json_schema()), ToolSpec(name="ping")
    kinds = set()
    for text, tools in [("invoice 1", [lookup, ping]), ("stock of A-1?", [lookup]), ("ünïcode ✓", [lookup])]:
        req = request(text, max_tokens=250).model_copy(update={"tools": tools})
        response = tiny.generate(req)
        if response.tool_calls:
            (called,) = response.tool_calls
            assert called.name in [t.name for t in tools] and response.stop_reason == "tool_use"
            if called.name == "lookup_stock":
                Lookup.model_validate(called.arguments)
            kinds.add("call")
        else:
            Invoice.model_validate_json(response.text)
            assert response.field_confidences
            kinds.add("answer")
    assert "call" in kinds  # this random model opens a call every time; the answer side: tests/agents/test_decoding
