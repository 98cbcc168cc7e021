"""A real model under the learned answer bounds: the loop defect reproduced and fixed end to end (a model steered
to repeat a list item, served through the real cascade and store), fixed fields, per-field confidence, and the
copy constraint on a model that would rather invent."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import BaseModel, Field
from test_cascade import Tiers

from protege.agents.cascade import Cascade, TaskRuntime
from protege.agents.models.answer_profile import AnswerProfile
from protege.agents.models.base import Message, ModelRequest, ModelResponse, Usage
from protege.agents.tools import ToolBox
from protege.store import Store
from protege.tasks import Policy, TaskSpec


class Note(BaseModel):
    text: str


class Readings(BaseModel):
    numbers: list[int]
    who: str | None
    changes: int


def read_note(note: Note) -> Readings:
    """List the meter readings in the note, who sent it, and how many readings changed."""


SCHEMA = Readings.model_json_schema()
NOTE = {"note": {"text": "Readings from Ana Lima: 932474, 931954, 933247. Two changed."}}
LEARNED = AnswerProfile(
    max_answer_tokens=90, bounds={"numbers": {"max_items": 6, "unique_items": True}, "who": {"copy": True}}
)


class Steered:
    """A real model whose logits get a fixed bias: it prefers to write "9" then "," forever — the held-out loop
    (`[932474, 931954, 932474, …, 900000, 900000, …]`) in its simplest form."""

    def __init__(self, model, bias):
        self.inner, self.bias = model, bias
        self.device, self.config, self.name_or_path = model.device, model.config, model.name_or_path
        self.generation_config = model.generation_config

    def __call__(self, **kwargs):
        out = self.inner(**kwargs)
        out.logits = out.logits + self.bias
        return out


def steer(monkeypatch, model, preferred: dict[str, float]):
    import torch

    engine = model.engine
    bias = torch.zeros(len(engine.texts))
    for text, boost in preferred.items():
        bias[engine.tokenizer.convert_tokens_to_ids(text)] = boost
    monkeypatch.setattr(engine, "model", Steered(engine.model, bias))
    # a fixed bias corners the model after every comma (it wants another); greedy steps keep the steer's loop plain
    monkeypatch.setattr(engine, "lookahead", False)
    monkeypatch.setattr(engine, "prefix", type(engine.prefix)())  # nothing cached from another test's calls


def student(tiny_base, **kw):
    from protege.agents.models.local import LocalModel

    return LocalModel(tiny_base, threads=2, prompt_lookup=False, **kw)


class Teacher:
    name, price_as, writes_prose = "t", None, False

    async def request(self, req: ModelRequest) -> ModelResponse:
        text = '{"numbers":[932474,931954,933247],"who":"Ana Lima","changes":2}'
        return ModelResponse(text=text, usage=Usage(input_tokens=10, output_tokens=10), model=self.name)


def serve(tmp_path, model):
    store = Store(f"sqlite:///{tmp_path}/loop.db")
    try:
        task = TaskRuntime(TaskSpec(read_note, policy=Policy(shadow_rate=0)), 1, ToolBox([]))
        inp = task.spec.parse_input((), NOTE)
        result = asyncio.run(Cascade(store, Tiers(Teacher(), student=model)).run(task, inp))
        return result, [store.trace(t) for t in result.trace_ids]
    finally:
        store.close()


NINES = {"9": 30.0, ",": 40.0}  # "9" where a digit must come, "," wherever it may


def test_a_looping_student_is_stopped_as_a_loop_and_the_cascade_escalates(tiny_base, tmp_path, monkeypatch):
    """Without bounds the steered student writes `[9,9,9,…`. Under its token limit the answer is left cut (the old
    decoder closed it into JSON that validated); past LOOP_TOKENS tokens of one repeated block the runaway guard
    stops it as a loop long before the default 2,048-token limit. Either way it is never served: the cascade
    escalates it with the reason."""
    from protege.agents.models.local_engine import LOOP_TOKENS

    model = student(tiny_base)
    steer(monkeypatch, model, NINES)
    request = ModelRequest(messages=[Message(role="user", content=json.dumps(NOTE))], output_schema=SCHEMA)
    cut = model.generate(request.model_copy(update={"max_tokens": 60}))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 60
    assert cut.text.startswith('{"numbers":[9,9,9,9,9,')
    looped = model.generate(request)
    assert looped.stop_reason == "bound" and looped.cut_short
    assert LOOP_TOKENS <= looped.usage.output_tokens <= LOOP_TOKENS + 4 and not looped.text.endswith("}")
    assert looped.raw["bounds"] == [f"the answer: a loop, one block of 2 tokens repeated over {LOOP_TOKENS} tokens"]
    result, traces = serve(tmp_path, model)
    assert [a.tier for a in result.attempts] == ["student", "teacher"] and result.tier == "teacher"
    assert not traces[0].valid and traces[0].output is None
    assert "runaway guard: the answer: a loop, one block of 2 tokens" in traces[0].errors[0]


def test_learned_bounds_make_the_loop_impossible_and_flag_the_answer(tiny_base, tmp_path, monkeypatch):
    """With the bounds learned from traces the same model cannot repeat an item (the list is unique), stops at
    the learned maxItems, and the answer — though it parses — is reported as having reached a bound; the cascade
    escalates it."""
    model = student(tiny_base, profile=LEARNED)
    steer(monkeypatch, model, NINES)
    response = model.generate(
        ModelRequest(messages=[Message(role="user", content=json.dumps(NOTE))], output_schema=SCHEMA, task_input=NOTE)
    )
    answer = Readings.model_validate_json(response.text)
    assert len(set(answer.numbers)) == len(answer.numbers) == 6
    assert response.stop_reason == "bound" and response.usage.output_tokens <= 90
    assert response.raw["bounds"][0] == "numbers: 6 items, the most the training traces allow"
    result, traces = serve(tmp_path, model)
    assert result.tier == "teacher" and not traces[0].valid
    assert "or a runaway guard: numbers: 6 items" in traces[0].errors[0]


def test_the_learned_token_bound_cuts_a_long_answer(tiny_base, monkeypatch):
    model = student(tiny_base, profile=AnswerProfile(max_answer_tokens=20))
    steer(monkeypatch, model, NINES)
    response = model.generate(ModelRequest(messages=[Message(role="user", content="x")], output_schema=SCHEMA))
    assert response.stop_reason == "max_tokens" and response.usage.output_tokens == 20
    assert response.raw["max_tokens"] == 20


def test_fixed_fields_are_never_written_otherwise_and_get_no_confidence(tiny_base, monkeypatch):
    """A program decided `changes` and `who`: the student writes those values even when steered to write 9s,
    chooses only `numbers`, and reports per-field confidence for what it chose."""
    model = student(tiny_base, profile=LEARNED)
    steer(monkeypatch, model, NINES)
    fixed = {"changes": 2, "who": "Ana Lima"}
    response = model.generate(
        ModelRequest(
            messages=[Message(role="user", content=json.dumps(NOTE))],
            output_schema=SCHEMA,
            task_input=NOTE,
            fixed_output=fixed,
        )
    )
    answer = json.loads(response.text)
    assert answer["changes"] == 2 and answer["who"] == "Ana Lima"
    assert set(response.field_confidences) == {"numbers"}
    assert 0.0 < response.field_confidences["numbers"] <= 1.0


def test_field_confidence_is_each_fields_least_sure_token(tiny_base):
    """On an unsteered random model: one confidence per top-level field it chose, each at least the answer's
    least sure token (which is the least of them), the same in a batch as alone."""
    model = student(tiny_base)
    requests = [
        ModelRequest(messages=[Message(role="user", content=f"note {i}")], output_schema=SCHEMA, max_tokens=300)
        for i in range(3)
    ]
    alone = [model.generate(r) for r in requests]
    together = model.generate_batch(requests)
    for one, batched in zip(alone, together):
        if one.stop_reason != "end_turn":
            continue  # a random model may run long: a cut answer still has confidences for the fields it finished
        assert set(one.field_confidences) == {"numbers", "who", "changes"}
        assert min(one.field_confidences.values()) == pytest.approx(one.raw["min_prob"])
        assert batched.field_confidences == pytest.approx(one.field_confidences, abs=1e-5)


def test_a_copied_field_never_says_what_the_input_does_not(tiny_base, monkeypatch):
    """Steered to write "Z" (in no input), the student's copied `who` is still a span of this call's input or
    null; with copy_constraint=False the same model writes the invented value."""
    preferred = {"Z": 40.0, '"': 35.0, "]": 20.0}  # an empty list, then a string of Zs
    profile = AnswerProfile(bounds={"who": {"copy": True, "max_length": 5}})
    for text in ["Readings from Ana Lima: 932474.", "Köln, 3 lamps — 张伟", "Hi"]:
        note = {"note": {"text": text}}
        req = ModelRequest(
            messages=[Message(role="user", content=json.dumps(note))],
            output_schema=SCHEMA,
            task_input=note,
            max_tokens=200,
        )
        model = student(tiny_base, profile=profile)
        steer(monkeypatch, model, preferred)
        who = json.loads(model.generate(req).text)["who"]
        assert who is None or (who and who in text)
        free = student(tiny_base, profile=profile, copy_constraint=False)
        assert json.loads(free.generate(req).text)["who"] == "ZZZZZ"


class Cornering:
    """A real model steered by what it just read: it prefers "1" then "0"; after a "1" it wants to close the
    string at once. So greedy decoding of a two-digit day writes "1", is cornered (a second digit is required)
    and must add one: "10", where "01" is the likelier two-digit answer."""

    def __init__(self, model, tokenizer):
        import torch

        self.inner = model
        self.device, self.config, self.name_or_path = model.device, model.config, model.name_or_path
        self.generation_config = model.generation_config
        ids = {text: tokenizer.convert_tokens_to_ids(text) for text in ("0", "1", '"', '"}')}
        self.one = ids["1"]
        self.before = torch.zeros(model.config.vocab_size)
        self.before[ids["1"]], self.before[ids["0"]] = 30.0, 28.0  # "1": ~0.88, "0": ~0.12
        self.after_one = torch.zeros(model.config.vocab_size)
        self.after_one[ids['"']] = self.after_one[ids['"}']] = 40.0  # close the string now
        self.after_one[ids["0"]] = 20.0

    def __call__(self, **kwargs):
        out = self.inner(**kwargs)
        read = kwargs["input_ids"][:, -out.logits.shape[1] :]  # the token each kept position follows
        after_one = (read == self.one)[..., None]
        out.logits = out.logits + self.before.where(~after_one, self.after_one)
        return out


class Day(BaseModel):
    day: str = Field(pattern=r"^[0-9]{2}$")


@pytest.mark.parametrize("draft", [False, True])
def test_a_cornered_choice_gives_way_to_the_likelier_pair(tiny_base, monkeypatch, draft):
    """Greedy would write "10"; the look-ahead sees the model cornered after "1" (its first choice, closing the
    string, refused) and keeps "01", whose pair of tokens is far likelier; its confidence is the runner-up's. Without
    the look-ahead: "10"."""
    from protege.agents.models.local import LocalModel

    model = LocalModel(tiny_base, threads=2, prompt_lookup=draft)
    engine = model.engine
    monkeypatch.setattr(engine, "model", Cornering(engine.model, engine.tokenizer))
    monkeypatch.setattr(engine, "prefix", type(engine.prefix)())
    ask = ModelRequest(messages=[Message(role="user", content="day 01 or 10")], output_schema=Day.model_json_schema())
    response = model.generate(ask)
    assert response.text == '{"day":"01"}' and response.raw["reconsidered"] == 1
    assert response.field_confidences["day"] < 0.2  # the runner-up's own probability: the gate still sees doubt
    longer = ask.model_copy(update={"messages": [Message(role="user", content="a longer note: day 01 or 10?")]})
    together = model.generate_batch([ask, longer])  # rows of different lengths: the batch masks what they forget
    assert [r.text for r in together] == ['{"day":"01"}'] * 2 and together[0].text == response.text
    monkeypatch.setattr(engine, "lookahead", False)
    plain = model.generate(ask)
    assert plain.text == '{"day":"10"}' and plain.raw["reconsidered"] == 0
