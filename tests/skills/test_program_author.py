"""The program author: candidates from an author model, verified in the real sandbox on held-out traces with the
task's score (overall and per field), revised from failing cases, recorded as author calls.

The author here is `code_author`, a FunctionModel returning fixed code: these tests measure verification,
selection, revision and the sandbox, not a model's authoring.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Literal

import pytest
from pydantic import BaseModel

from protege.agents.models.function import FunctionModel
from protege.errors import UserError
from protege.sandbox import Sandbox
from protege.skills import Skill
from protege.skills.program_author import PROGRAM_FILE, ProgramAuthor, code_author, with_program
from protege.tasks import Policy, TaskSpec


class Invoice(BaseModel):
    text: str


class Summary(BaseModel):
    customer: str
    items: int
    total: float
    priority: Literal["low", "high"]


def summarize(invoice: Invoice) -> Summary:
    """Summarize an invoice: customer name, number of line items, total amount, and priority (high if urgent)."""


CORRECT = """
import re

def solve(invoice):
    text = invoice["text"]
    lines = re.findall(r"^(\\d+) x .+ @ ([\\d.]+)$", text, flags=re.M)
    return {
        "customer": re.search(r"^Customer: (.+)$", text, flags=re.M).group(1).strip(),
        "items": len(lines),
        "total": round(sum(int(q) * float(p) for q, p in lines), 2),
        "priority": "high" if "urgent" in text.lower() else "low",
    }
"""
# counts units instead of lines: right only when every quantity is 1
WRONG_ITEMS = CORRECT.replace('"items": len(lines)', '"items": sum(int(q) for q, _ in lines)')
# leaves out a field it cannot decide, as the prompt asks
NO_PRIORITY = CORRECT.replace("""        "priority": "high" if "urgent" in text.lower() else "low",\n""", "")
LOOPS = "def solve(invoice):\n    while True:\n        pass\n"


def invoice_traces(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    names = ["Ada Park", "Bo Chen", "Cy Diaz", "Di Evans", "Ed Fox", "Flo Gray", "Gus Hill", "Ida Jones"]
    goods = ["Widget", "Gear", "Bolt pack", "Cable 2m", "Lamp"]
    traces = []
    for i in range(n):
        lines = [
            (rng.choice([1, 1, 2, 3]), rng.choice(goods), rng.choice([1.5, 3.25, 10.0, 99.99]))
            for _ in range(rng.randint(1, 4))
        ]
        urgent = rng.random() < 0.3
        text = "\n".join(
            [
                f"Invoice {1000 + i}",
                f"Customer: {rng.choice(names)}",
                *[f"{q} x {g} @ {p}" for q, g, p in lines],
                "URGENT please" if urgent else "Thanks",
            ]
        )
        output = {
            "customer": text.split("Customer: ")[1].split("\n")[0],
            "items": len(lines),
            "total": round(sum(q * p for q, _, p in lines), 2),
            "priority": "high" if urgent else "low",
        }
        traces.append({"id": f"t{i:03d}", "input": {"invoice": {"text": text}}, "output": output, "valid": True})
    return traces


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as box:
        yield box.start()


@pytest.fixture
def spec() -> TaskSpec:
    return TaskSpec(summarize, policy=Policy(promote_at=0.95))


async def test_a_correct_program_is_verified_on_traces_it_was_not_shown(sandbox, spec) -> None:
    author = ProgramAuthor(code_author(CORRECT), sandbox, shown=6)
    result = await author.write(spec, invoice_traces(30))
    assert result.promoted and result.agreement == 1.0 and result.source.strip() == CORRECT.strip()
    assert result.fields_verified == ["customer", "items", "total", "priority"]
    assert result.held_out == 24 and len(result.shown_trace_ids) == 6
    assert not set(result.shown_trace_ids) & set(result.held_out_trace_ids)
    assert result.failures == [] and result.author_calls == 1 == len(author.last_responses)
    assert result.written_by == "function" and "function:code-author" in result.report()
    prompt = author.model.requests[0].messages[0].content
    shown_text = [t for t in invoice_traces(30) if t["id"] in result.shown_trace_ids][0]["input"]["invoice"]["text"]
    held_text = [t for t in invoice_traces(30) if t["id"] in result.held_out_trace_ids][0]["input"]["invoice"]["text"]
    assert shown_text.splitlines()[0] in prompt and held_text.splitlines()[0] not in prompt


async def test_a_program_wrong_on_some_inputs_is_not_promoted_but_its_right_fields_are(sandbox, spec) -> None:
    author = ProgramAuthor(code_author(WRONG_ITEMS), sandbox, shown=6, rounds=2, failures_shown=3)
    result = await author.write(spec, invoice_traces(40))
    assert not result.promoted and result.agreement < 0.95
    assert result.fields_verified == ["customer", "total", "priority"]
    assert result.field_agreement["items"] == pytest.approx(result.agreement)
    assert result.failures and all(case.fields == ["items"] for case in result.failures)
    # two revision rounds, each shown 3 failing cases that then left the held-out set
    assert result.author_calls == 3 and result.held_out == 40 - 6 - 2 * 3
    revision = author.model.requests[1].messages[0].content
    assert "Wrong fields: items" in revision and "Expected:" in revision
    assert "not promoted" in result.report() and "items" in result.report()


async def test_a_revision_that_fixes_the_failures_is_kept(sandbox, spec) -> None:
    author = ProgramAuthor(code_author(WRONG_ITEMS, revisions=[CORRECT]), sandbox, shown=6, rounds=2)
    result = await author.write(spec, invoice_traces(40))
    assert result.promoted and result.source.strip() == CORRECT.strip()
    assert result.author_calls == 2 and result.candidates == 2


async def test_the_best_of_several_candidates_is_kept_and_a_hung_one_costs_little(sandbox, spec) -> None:
    author = ProgramAuthor(code_author(LOOPS, WRONG_ITEMS, CORRECT), sandbox, shown=6, rounds=0, timeout_s=0.2)
    result = await author.write(spec, invoice_traces(30))
    assert result.promoted and result.source.strip() == CORRECT.strip() and result.candidates == 3
    assert sandbox.run(CORRECT, "solve", {"invoice": {"text": "Customer: A\n1 x B @ 2"}}).ok  # still serving


async def test_a_field_the_program_leaves_out_is_not_verified_the_others_are(sandbox, spec) -> None:
    result = await ProgramAuthor(code_author(NO_PRIORITY), sandbox, shown=6, rounds=0).write(spec, invoice_traces(30))
    assert not result.promoted and result.agreement == 0.0  # the whole answer is invalid without `priority`
    assert result.fields_verified == ["customer", "items", "total"] and result.field_agreement["priority"] == 0.0
    assert result.fields_left_out == ["priority"] and result.failures == []  # leaving a field out is no failure
    assert "left out" in result.report()


async def test_per_field_agreement_uses_the_tasks_score(sandbox) -> None:
    def lenient(expected: Summary, actual: Summary) -> float:  # customer names compared case-blind
        return float(
            expected.model_copy(update={"customer": expected.customer.lower()})
            == actual.model_copy(update={"customer": actual.customer.lower()})
        )

    shouting = CORRECT.replace(".group(1).strip()", ".group(1).strip().upper()")
    strict = await ProgramAuthor(code_author(shouting), sandbox, rounds=0).write(
        TaskSpec(summarize), invoice_traces(20)
    )
    tolerant = await ProgramAuthor(code_author(shouting), sandbox, rounds=0).write(
        TaskSpec(summarize, score=lenient), invoice_traces(20)
    )
    assert strict.field_agreement["customer"] == 0.0 and "customer" not in strict.fields_verified
    assert tolerant.promoted and tolerant.fields_verified == ["customer", "items", "total", "priority"]


async def test_too_few_traces_is_a_user_error_before_any_author_call(sandbox, spec) -> None:
    model = code_author(CORRECT)
    with pytest.raises(UserError, match=r"at least 6 validated traces.*got 4"):
        await ProgramAuthor(model, sandbox).write(spec, invoice_traces(4))
    assert model.requests == []


async def test_an_author_that_cannot_write_code_gives_no_program(sandbox, spec) -> None:
    answers_only = FunctionModel(lambda req: {"customer": "x", "items": 1, "total": 1.0, "priority": "low"})
    result = await ProgramAuthor(answers_only, sandbox).write(spec, invoice_traces(20))
    assert result.source is None and not result.promoted and "cannot write code" in result.note
    assert answers_only.requests == [] and result.files() == {}


async def test_a_reply_without_code_gives_no_program(sandbox, spec) -> None:
    chatty = FunctionModel(lambda req: "I would use regular expressions.", name="function:chatty", writes_prose=True)
    result = await ProgramAuthor(chatty, sandbox, rounds=1).write(spec, invoice_traces(20))
    assert result.source is None and "no ```python program" in result.note and result.author_calls == 1


def test_the_program_travels_in_the_skill_as_scripts_solve_py() -> None:
    from protege.skills.program_author import ProgramResult

    result = ProgramResult(
        task="summarize",
        source=CORRECT,
        agreement=0.975,
        fields_verified=["items", "total"],
        held_out=40,
        author_model="anthropic:claude-opus-4-5",
        promoted=True,
    )
    skill = Skill(name="summarize", description="Summarize invoices.", body="# Steps\n", metadata={"task": "summarize"})
    carried = with_program(skill, result)
    again = Skill.parse(carried.render(), files=carried.files)
    assert again.files[PROGRAM_FILE] == CORRECT
    assert again.metadata["program-agreement"] == "0.975" and again.metadata["program-fields"] == "items,total"
    with pytest.raises(UserError, match="no program to attach"):
        with_program(skill, ProgramResult(task="summarize", note="none verified"))


def test_bad_author_settings_are_user_errors(sandbox) -> None:
    with pytest.raises(UserError, match=r"candidates=0"):
        ProgramAuthor(code_author(CORRECT), sandbox, candidates=0)
    with pytest.raises(UserError, match=r"code_author needs"):
        code_author()


def test_a_served_call_keeps_only_verified_fields(sandbox) -> None:
    from protege.skills.program_run import run_program

    text = {"invoice": {"text": "Customer: Ada Park\n2 x Gear @ 3.25\nurgent"}}
    fields = ["customer", "items", "total", "priority"]
    whole = run_program(sandbox, CORRECT, text, fields, fields)
    assert whole.ok and whole.complete
    assert whole.fields == {"customer": "Ada Park", "items": 1, "total": 6.5, "priority": "high"}
    partial = run_program(sandbox, WRONG_ITEMS, text, ["customer", "total", "priority"], fields)
    assert partial.ok and not partial.complete and "items" not in partial.fields  # the student fills `items`
    failed = run_program(sandbox, LOOPS, text, fields, fields, timeout_s=0.2)
    assert (failed.ok, failed.kind, failed.fields) == (False, "timeout", {})
    listed = run_program(sandbox, "def solve(invoice):\n    return [1]\n", text, fields, fields)
    assert (listed.ok, listed.kind) == (False, "invalid_answer")


async def test_a_real_sdk_author_writes_the_program_and_its_usage_is_kept(sandbox, spec) -> None:
    """The Anthropic SDK against the fake server: the prompt goes out as text, the code comes back in a reply
    with chatter around it, and the call's token usage is there for the caller to record as a paid trace."""
    from protege.agents.models.anthropic import AnthropicModel
    from protege.testing import FakeProvider

    with FakeProvider() as fake:
        fake.add_text(
            f"Here are two approaches.\n\n```python\n{WRONG_ITEMS}```\n\nAnd:\n\n```py\n{CORRECT}```\n",
            usage={"input_tokens": 2400, "output_tokens": 600},
        )
        model = AnthropicModel("claude-opus-4-5", api_key="test-key", base_url=fake.anthropic_base_url)
        author = ProgramAuthor(model, sandbox, rounds=1)
        result = await author.write(spec, invoice_traces(30))
        sent = fake.requests[0].body
    assert result.promoted and result.source.strip() == CORRECT.strip() and result.candidates == 2
    assert result.written_by == "model" and result.author_model == model.name
    assert [r.usage.output_tokens for r in author.last_responses] == [600]
    assert "solve(invoice)" in json.dumps(sent)


async def test_a_program_that_memorised_the_shown_examples_is_not_promoted(sandbox, spec) -> None:
    """The author answers with a lookup table of the examples in its prompt: perfect on what it was shown,
    and the held-out verification finds it out."""
    import re

    def memoriser(request):
        prompt = request.messages[0].content
        block = r"Keyword arguments:\n\n```json\n(.*?)\n```\n\nAnswer:\n\n```json\n(.*?)\n```"
        pairs = re.findall(block, prompt, re.S)
        table = {json.loads(k)["invoice"]["text"]: json.loads(v) for k, v in pairs}
        fallback = {"customer": "?", "items": 1, "total": 0.0, "priority": "low"}
        program = f"TABLE = {table!r}\n\ndef solve(invoice):\n    return TABLE.get(invoice['text'], {fallback!r})\n"
        return f"```python\n{program}```"

    author = ProgramAuthor(
        FunctionModel(memoriser, name="function:memoriser", writes_prose=True), sandbox, shown=6, rounds=0
    )
    traces = invoice_traces(30)
    result = await author.write(spec, traces)
    assert not result.promoted and result.agreement < 0.5
    shown = [t for t in traces if t["id"] in result.shown_trace_ids]
    on_shown = [sandbox.run(result.source, "solve", t["input"]).value == t["output"] for t in shown]
    assert len(on_shown) == 6 and all(on_shown)  # it really was perfect on the examples it saw
