"""The skill author: a scripted teacher writes and revises SKILL.md; answer-only models get exemplar skills."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel, ModelRequest, ModelResponse, ToolCall, Usage
from protege.agents.models.anthropic import AnthropicModel
from protege.agents.models.openai import OpenAIModel
from protege.errors import UserError
from protege.skills import Skill, SkillAuthor, TaskContract
from protege.skills.author import TOOL_RESULT_CLIP
from protege.skills.exemplar import CASE_PREFIX
from protege.store.models import TraceRow
from protege.tasks import TaskSpec
from protege.testing import FakeProvider, Reply


class Ticket(BaseModel):
    subject: str
    body: str


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority (1 = urgent)."""


SPEC = TaskSpec(triage)
TICKETS = [
    ("Charged twice", "My card was charged twice for invoice 221.", "billing", 2),
    ("App crash", "The app crashes when I open settings.", "bug", 1),
    ("Refund", "Please refund the duplicate payment on my card.", "billing", 3),
    ("Login", "I cannot reset my password, the email never comes.", "account", 2),
    ("Invoice copy", "Send me a copy of my last invoice please.", "billing", 3),
    ("Hello", "Just saying your product is great.", "other", 3),
]

GOOD = """---
name: whatever-the-teacher-says
description: Route a support ticket to its queue and set a priority. Use for incoming support tickets.
metadata:
  task: something-else
  audience: support
---

# Triage

## Procedure
1. Money words (charged, refund, invoice) -> billing.
2. Crashes and errors -> bug.

## Pitfalls
- A refund request is billing, not account.
"""


@pytest.fixture
def traces(store):
    for i, (subject, body, queue, priority) in enumerate(TICKETS):
        store.insert_trace(
            TraceRow(
                id=f"tr{i}",
                task_name="triage",
                tier="teacher",
                valid=True,
                input={"ticket": {"subject": subject, "body": body}},
                output={"queue": queue, "priority": priority},
            )
        )
    store.insert_trace(
        TraceRow(
            id="bad",
            task_name="triage",
            tier="teacher",
            valid=False,
            input={"ticket": {"subject": "x", "body": "y"}},
            output={"queue": "nope"},
        )
    )
    return store.traces("triage", limit=None, oldest_first=True)


def teacher(*replies: str) -> FunctionModel:
    script = list(replies)
    return FunctionModel(lambda req: script.pop(0), name="anthropic:claude-opus-4-5", writes_prose=True)


async def test_teacher_writes_skill_from_validated_traces(traces):
    """The prompt carries the contract and the validated examples; the reply becomes a stamped, valid skill."""
    model = teacher(GOOD)
    skill = await SkillAuthor(model).write(SPEC, traces)
    assert len(model.requests) == 1
    req: ModelRequest = model.requests[0]
    prompt = req.messages[0].content
    assert req.task_name == "protege:write-skill" and req.task_input == {"task": "triage"}
    assert SPEC.instructions in prompt and '"billing"' in prompt and "priority" in prompt
    assert "My card was charged twice" in prompt and '"queue": "nope"' not in prompt  # invalid trace left out
    assert skill.name == "triage" and skill.body.startswith("# Triage\n")
    assert skill.metadata["task"] == "triage" and skill.metadata["kind"] == "authored"
    assert skill.metadata["model"] == "anthropic:claude-opus-4-5" and skill.metadata["audience"] == "support"
    assert set(skill.metadata["traces"].split(",")) <= {f"tr{i}" for i in range(6)}
    assert Skill.parse(skill.render()) == skill


async def test_fenced_reply_with_chatter_is_accepted(traces):
    """A reply wrapped in a markdown fence, or with a line before the frontmatter, still parses."""
    for reply in (f"```markdown\n{GOOD}```", f"Here is the skill:\n\n{GOOD}"):
        skill = await SkillAuthor(teacher(reply)).write(SPEC, traces)
        assert skill.kind == "authored" and "## Pitfalls" in skill.body


async def test_invalid_reply_is_sent_back_once_with_the_error(traces):
    """A reply that breaks the spec is returned with the error; the corrected reply is used."""
    bad = GOOD.replace("metadata:", "version: 2\nmetadata:")
    model = teacher(bad, GOOD)
    skill = await SkillAuthor(model).write(SPEC, traces)
    assert len(model.requests) == 2
    retry = model.requests[1].messages
    assert [m.role for m in retry] == ["user", "assistant", "user"]
    assert "'version' is not allowed" in retry[2].content
    assert skill.kind == "authored"


async def test_two_invalid_replies_fall_back_to_an_exemplar(traces):
    """After a second invalid reply the author builds an exemplar skill instead of failing."""
    model = teacher("no frontmatter at all", "still none")
    author = SkillAuthor(model)
    skill = await author.write(SPEC, traces)
    assert len(model.requests) == 2 and len(author.last_responses) == 2
    assert skill.kind == "exemplar" and skill.name == "triage"


async def test_prior_art_reaches_the_prompt(traces, make_skill):
    """Related skills of other tasks are shown to the teacher."""
    model = teacher(GOOD)
    prior = make_skill("classify-email", body="# Classify\n\nLook for money words first.\n")
    await SkillAuthor(model).write(SPEC, traces, prior_art=[prior, "raw skill text here"])
    prompt = model.requests[0].messages[0].content
    assert "Look for money words first." in prompt and "raw skill text here" in prompt


async def test_answer_only_model_gets_an_exemplar_without_being_asked(traces):
    """A model that cannot write prose is never asked; the exemplar has examples in its body, and the instructions
    and allowed values in references/task.md (the replay prompt carries them already)."""
    model = FunctionModel(lambda req: {"queue": "other", "priority": 3}, name="reference:opus")
    skill = await SkillAuthor(model, max_examples=4).write(SPEC, traces)
    assert model.requests == []
    assert skill.kind == "exemplar" and skill.metadata["model"] == "reference:opus"
    reference = skill.files["references/task.md"]
    assert SPEC.instructions in reference and "references/task.md" in skill.body
    assert '- `queue`: "billing", "bug", "account", "other"' in reference
    shown = [json.loads(line) for line in skill.body.splitlines() if line.startswith('{"queue"')]
    assert len(shown) == 4 and {o["queue"] for o in shown} == {"billing", "bug", "account", "other"}
    assert len(skill.metadata["traces"].split(",")) == 4
    assert skill.description.startswith("Route a support ticket") and "`triage`" in skill.description


async def test_exemplar_keeps_to_the_body_budget():
    """Huge examples are left out rather than breaking the spec's token budget."""
    contract = TaskContract(name="summarize", instructions="Summarize the text.", output_schema={})
    traces = [({"text": "word " * 6000}, {"summary": "long"}), ({"text": "short one"}, {"summary": "s"})]
    skill = await SkillAuthor(FunctionModel(lambda r: "")).write(contract, traces)
    assert "short one" in skill.body and "word word" not in skill.body
    skill.validate()


@pytest.mark.parametrize(
    "doc",
    ["Rules of the order emails, mind them. " * 400, "\n".join(f"- rule {i}" for i in range(600))],
    ids=["long", "many-lines"],
)
async def test_a_long_docstring_still_gets_an_exemplar_skill(doc):
    """The exemplar body copied the instructions and the output schema (which the replay prompt carries anyway, so
    each replay call had them twice), and a long docstring broke the body budget: the task never got a skill. The
    body refers to them; the copy is an extra file, outside the budget."""
    contract = TaskContract(
        name="extract_order", instructions=doc, output_schema={"type": "object", "title": "Order", "properties": {}}
    )
    skill = await SkillAuthor(FunctionModel(lambda r: "")).write(contract, [({"email": "#A1"}, {"order_id": "A1"})])
    assert doc.strip() not in skill.body and '"title": "Order"' not in skill.body and '"A1"' in skill.body
    assert doc.strip() in skill.files["references/task.md"]
    skill.validate()


def test_contract_needs_a_name_and_instructions():
    """Anything without a name and instructions is refused with a clear message."""
    with pytest.raises(UserError, match="not a task contract"):
        TaskContract.of(object())
    assert TaskContract.of({"name": "t", "instructions": "Do it."}).output_schema == {}


FAILED = TraceRow(
    id="f1",
    task_name="triage",
    tier="replay",
    valid=True,
    input={"ticket": {"subject": "Card", "body": "Refund the double charge"}},
    output={"queue": "account", "priority": 2},
)
RESCUE = TraceRow(
    id="r1",
    task_name="triage",
    tier="teacher",
    valid=True,
    input=FAILED.input,
    output={"queue": "billing", "priority": 2},
)


async def test_teacher_revises_with_the_failed_case(traces):
    """The revise prompt shows the skill, the wrong and the right answer; the result is a new revision."""
    first = await SkillAuthor(teacher(GOOD)).write(SPEC, traces)
    first = first.model_copy(
        update={"metadata": {**first.metadata, "protege-version": "3", "protege-status": "approved"}}
    )
    revised_text = GOOD.replace("## Pitfalls", "## Pitfalls\n- A double charge is billing.\n\n## More")
    model = teacher(revised_text)
    revised = await SkillAuthor(model).revise(first, FAILED, RESCUE)
    prompt = model.requests[0].messages[0].content
    assert model.requests[0].task_name == "protege:revise-skill"
    assert first.body in prompt and '"account"' in prompt and '"billing"' in prompt
    assert revised.kind == "revised" and revised.metadata["revises"] == "3"
    assert "version" not in revised.metadata and "status" not in revised.metadata
    assert revised.metadata["traces"].endswith("f1,r1")
    assert "A double charge is billing." in revised.body


async def test_mechanical_revision_appends_the_case_and_drops_the_oldest_to_fit(traces):
    """Without prose, revisions add corrected cases; when the budget runs out the oldest cases go first."""
    author = SkillAuthor(FunctionModel(lambda r: ""))
    skill = await author.write(SPEC, traces)
    first = await author.revise(skill, FAILED, RESCUE)
    assert first.kind == "exemplar" and first.body.count(CASE_PREFIX) == 1
    assert '"queue": "account"' in first.body.split(CASE_PREFIX)[1]
    for i in range(12):
        big = {"ticket": {"subject": f"case {i}", "body": f"marker{i} " + "long text " * 300}}
        failed = FAILED.model_copy(update={"id": f"f{i}", "input": big})
        first = await author.revise(first, failed, RESCUE.model_copy(update={"input": big}))
        first.validate()
    assert "marker11" in first.body and "marker0 " not in first.body
    assert 1 <= first.body.count(CASE_PREFIX) < 12
    assert "## Worked examples" in first.body  # the examples survive; only old cases were dropped


async def test_revision_needs_a_right_answer():
    """A rescue trace without an answer cannot teach anything."""
    skill = Skill(name="triage", description="d", body="b")
    empty = RESCUE.model_copy(update={"output": None})
    with pytest.raises(UserError, match="no answer"):
        await SkillAuthor(FunctionModel(lambda r: "")).revise(skill, FAILED, empty)


async def test_a_reply_cut_at_its_token_limit_is_sent_back_not_stored(traces):
    """A SKILL.md cut off at max_tokens still parsed (frontmatter first, a body that just stops) and was stored as
    an authored skill. A reply that did not finish is invalid: it goes back once, and the finished one is used."""
    cut = GOOD.split("## Pitfalls")[0]
    with FakeProvider() as fake:
        fake.add_reply(Reply("text", text=cut, stop_reason="max_tokens"))
        fake.add_text(GOOD)
        model = AnthropicModel("claude-opus-4-5", api_key="k", base_url=fake.anthropic_base_url, max_retries=0)
        author = SkillAuthor(model)
        skill = await author.write(SPEC, traces)
    assert len(fake.requests) == 2 and len(author.last_responses) == 2
    assert "cut off at the 8192-token limit" in fake.requests[1].body["messages"][-1]["content"][-1]["text"]
    assert skill.kind == "authored" and "## Pitfalls" in skill.body


@pytest.mark.parametrize("stop", ["length", "content_filter"])
async def test_replies_that_do_not_finish_fall_back_to_an_exemplar(traces, stop):
    """Two unfinished replies (OpenAI's length was not even seen as cut short) leave the exemplar skill."""
    with FakeProvider() as fake:
        for _ in range(2):
            fake.add_reply(Reply("text", text=GOOD, stop_reason=stop))
        model = OpenAIModel("gpt-4o", api_key="k", base_url=fake.openai_base_url, max_retries=0)
        skill = await SkillAuthor(model).write(SPEC, traces)
    assert len(fake.requests) == 2 and skill.kind == "exemplar"


async def test_an_invalid_wrong_answer_is_shown_as_json_not_as_an_escaped_string(traces):
    """An invalid replay answer keeps only its text: the corrected case showed it as one JSON string,
    "{\\"queue\\": ...}", every quote escaped; it is decoded as the right answer is."""
    author = SkillAuthor(FunctionModel(lambda r: ""))
    skill = await author.write(SPEC, traces)
    unparsed = FAILED.model_copy(update={"output": None, "valid": False, "output_text": '{"queue": "acct"}'})
    case = (await author.revise(skill, unparsed, RESCUE)).body.split(CASE_PREFIX)[1]
    assert '"queue": "acct"' in case and '\\"queue\\"' not in case


# -- tasks with tools: the author sees the tools the replay model is offered and what each call returned ------

LOOKUP = {
    "name": "lookup_customer",
    "description": "The customer's plan and open incident count, by email.",
    "parameters": {"properties": {"email": {"type": "string"}}, "required": ["email"], "type": "object"},
}


def tool_trace(n: int, email: str, result: str, output: dict) -> TraceRow:
    call = {"id": f"c{n}", "name": "lookup_customer", "arguments": {"email": email}}
    return TraceRow(
        id=f"t{n}",
        task_name="triage",
        tier="teacher",
        valid=True,
        input={"ticket": {"subject": f"Help {n}", "body": email}},
        output=output,
        tools=[LOOKUP],
        messages=[
            {"role": "user", "content": "{}"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "content": result, "tool_call_id": f"c{n}", "name": "lookup_customer"},
            {"role": "assistant", "content": json.dumps(output)},
        ],
    )


async def test_the_author_sees_the_tools_and_what_each_call_returned():
    """Only `lookup_customer({...})` and the answer reached the author: it could not tell `plan` comes from the
    tool's result. Now the tool's spec is shown once and each call with its (clipped) result, and the prompt says the
    cheaper model can call these tools instead of "it sees nothing else"."""
    traces = [
        tool_trace(1, "ana@acme.example", '{"plan": "enterprise", "open_incidents": 2}', {"queue": "billing"}),
        tool_trace(2, "bo@mail.example", "x" * 5000, {"queue": "bug"}),
    ]
    model = teacher(GOOD)
    await SkillAuthor(model).write(SPEC, traces)
    prompt = model.requests[0].messages[0].content
    assert prompt.count("open incident count, by email") == 1 and '"email": {"type": "string"}' in prompt
    assert 'lookup_customer({"email": "ana@acme.example"})\n-> {"plan": "enterprise", "open_incidents": 2}' in prompt
    assert "x" * TOOL_RESULT_CLIP + " …(clipped)" in prompt and "x" * (TOOL_RESULT_CLIP + 1) not in prompt
    assert "is offered the task's tools" in prompt and "not their tool results" in prompt
    assert "It sees nothing else: not the examples below, not your reasoning." not in prompt
    assert "which fields come from its results" in prompt


async def test_a_task_without_tools_keeps_its_prompt(traces):
    """No tool section, no tool wording: the reader still answers with one JSON object and sees nothing else."""
    model = teacher(GOOD)
    await SkillAuthor(model).write(SPEC, traces)
    prompt = model.requests[0].messages[0].content
    assert "It sees nothing else: not the examples below, not your reasoning." in prompt
    assert "tool" not in prompt.lower()


async def test_the_revision_shows_both_sides_tool_calls_and_results():
    """The replay looked up the wrong customer: the revise prompt shows its call and result next to the teacher's,
    with the tools, so the author can fix the rule about which call to make."""
    failed = tool_trace(1, "someone@else.example", '{"plan": "free"}', {"queue": "other"}).model_copy(
        update={"id": "f1", "tier": "replay"}
    )
    rescue = tool_trace(2, "ana@acme.example", '{"plan": "enterprise"}', {"queue": "billing"})
    skill = Skill(name="triage", description="Route tickets. Use for triage.", body="# Triage\n1. Route.\n")
    model = teacher(GOOD)
    await SkillAuthor(model).revise(skill, failed, rescue)
    prompt = model.requests[0].messages[0].content
    assert "It called these tools" in prompt and 'lookup_customer({"email": "someone@else.example"})' in prompt
    assert "You called these tools" in prompt and '-> {"plan": "enterprise"}' in prompt
    assert "open incident count, by email" in prompt and "Compare its tool calls with yours" in prompt


def test_tool_results_copied_into_a_skill_are_redacted_as_its_examples_are(tmp_path):
    """The author copies what the tool returned into the skill's worked examples; the skill is redacted when it is
    written (lifecycle.redacted_skill), so a key in a tool's result never reaches SKILL.md while the plan does."""
    secret = "sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_xyz"

    def lookup_customer(email: str) -> dict:
        """The customer's plan, by email."""
        return {"plan": "gold", "token": secret}

    def fn(req: ModelRequest) -> ModelResponse:
        if req.task_name == "protege:write-skill":  # copy each tool result line into the skill
            results = [line for line in req.messages[0].content.splitlines() if line.startswith("-> ")]
            body = "# Pay\n\n" + "\n".join(f"- {line}" for line in results) + "\n"
            return ModelResponse(text=f"---\nname: plan\ndescription: Looks up the plan.\n---\n{body}")
        done = [m for m in req.messages if m.role == "tool"]
        if done:
            return ModelResponse(text=json.dumps({"plan": json.loads(done[-1].content)["plan"]}), usage=Usage())
        call = ToolCall(id="c1", name="lookup_customer", arguments={"email": "a@b.example"})
        return ModelResponse(tool_calls=[call], stop_reason="tool_use")

    app = Protege(
        db=f"sqlite:///{tmp_path}/p.db",
        project_dir=tmp_path / ".p",
        teacher=FunctionModel(fn, price_as="anthropic:claude-opus-4-5", writes_prose=True),
    )
    try:

        @app.task(tools=[lookup_customer], policy=Policy(program=False, shadow_rate=0))
        def plan(email: str) -> Plan:
            """The customer's plan."""

        app.run("plan", {"email": "a@b.example"})
        app.wait()
        text = app.skill("plan").text
        assert '"plan": "gold"' in text and secret not in text
    finally:
        app.close()


class Plan(BaseModel):
    plan: str
