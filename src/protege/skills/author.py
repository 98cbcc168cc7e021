"""The skill author: the teacher writes a task's SKILL.md from validated traces, and revises it after a rescue.

The author is handed a model object (it never imports a provider). A model that can write prose
(`writes_prose = True`) gets the prompts in skills/prompts/; its reply is parsed and validated against the spec, an
invalid reply is sent back once with the error, and a second invalid reply falls back to an exemplar skill. A model
that only answers tasks (ReferenceModel, FunctionModel) gets an exemplar skill straight away: the instructions plus a
small, diverse set of validated examples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from importlib import resources
from string import Template
from typing import Any

from pydantic import BaseModel, Field

from protege.agents.models.base import TOKEN_LIMIT, Message, ModelRequest, ModelResponse
from protege.errors import UserError
from protege.skills.examples import (
    Example,
    ToolUse,
    clip,
    examples_from,
    pretty,
    select_examples,
    tool_specs,
    tool_uses,
)
from protege.skills.exemplar import Case, add_case, exemplar_skill, stamp
from protege.skills.skill import MAX_BODY_LINES, MAX_BODY_TOKENS, Skill, skill_name

PROMPT_CLIP = 3000  # characters of one example's JSON shown to the teacher
TOOL_RESULT_CLIP = 1500  # characters of one tool result shown to the teacher (a tool may return megabytes)
AUTHOR_MAX_TOKENS = 8192  # output tokens of one author reply (the teacher budget reserves them for each)
PRIOR_ART_CLIP = 4000  # characters of one related skill shown as prior art
RETRY = (
    "That SKILL.md is not valid: {error}\n\n"
    "Reply with the corrected complete SKILL.md only (frontmatter between `---` lines, then the body)."
)


class TaskContract(BaseModel):
    """What the author needs to know about a task: its name, instructions and JSON schemas."""

    name: str
    instructions: str
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, spec: Any) -> TaskContract:
        """From a TaskContract, a dict, or any object with .name/.instructions/.input_schema/.output_schema."""
        if isinstance(spec, cls):
            return spec
        data = spec if isinstance(spec, dict) else {k: getattr(spec, k, None) for k in cls.model_fields}
        if not data.get("name") or not isinstance(data.get("instructions"), str):
            raise UserError(f"{spec!r} is not a task contract: it needs a name and instructions (e.g. a TaskSpec)")
        return cls(**{k: v for k, v in data.items() if v is not None and k in cls.model_fields})


class SkillAuthor:
    """Writes and revises skills with `model`. `last_responses` keeps the model's replies of the latest call
    (their usage is what the author spent), so the caller can record them."""

    def __init__(self, model: Any, *, max_examples: int = 6):
        self.model = model
        self.max_examples = max_examples
        self.last_responses: list[ModelResponse] = []

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "name", "") or "")

    @property
    def writes_prose(self) -> bool:
        return bool(getattr(self.model, "writes_prose", False))

    async def write(self, spec_info: Any, traces: Iterable[Any], *, prior_art: Iterable[Any] = ()) -> Skill:
        """A new skill for the task from its validated traces; `prior_art` are related skills (Skill, row or text)."""
        contract = TaskContract.of(spec_info)
        traces = list(traces)
        examples = select_examples(examples_from(traces), contract.output_schema, self.max_examples)
        self.last_responses = []
        if not self.writes_prose:
            return exemplar_skill(contract, examples, model=self.model_name)
        prompt = _prompt(
            "write-skill.md",
            task_name=contract.name,
            skill_name=skill_name(contract.name),
            instructions=contract.instructions.strip(),
            input_schema=json.dumps(contract.input_schema, indent=1),
            output_schema=json.dumps(contract.output_schema, indent=1),
            examples=_examples_text(examples),
            prior_art=_prior_art_text(prior_art),
            **_write_tool_parts(tool_specs(traces)),
        )
        ids = [e.trace_id for e in examples]
        skill = await self._ask(
            prompt,
            "protege:write-skill",
            contract.name,
            lambda s: stamp(s, task=contract.name, kind="authored", model=self.model_name, traces=ids),
        )
        return skill or exemplar_skill(contract, examples, model=self.model_name)

    async def revise(self, skill: Skill, failed_trace: Any, rescue_trace: Any) -> Skill:
        """A new version of `skill` that covers the case the replay got wrong and the teacher rescued."""
        case = Case.of(failed_trace, rescue_trace)
        traces = [*(skill.metadata.get("traces") or "").split(","), *case.trace_ids]
        self.last_responses = []
        if self.writes_prose:
            prompt = _prompt(
                "revise-skill.md",
                task_name=skill.task,
                skill_name=skill.name,
                skill_text=skill.render(),
                input=pretty(case.input, PROMPT_CLIP),
                wrong=pretty(case.wrong, PROMPT_CLIP),
                right=pretty(case.right, PROMPT_CLIP),
                errors=("\nWhy it failed validation: " + "; ".join(case.errors) + "\n") if case.errors else "",
                **_revise_tool_parts(failed_trace, rescue_trace),
            )
            revised = await self._ask(
                prompt,
                "protege:revise-skill",
                skill.task,
                lambda s: stamp(
                    s, task=skill.task, kind="revised", model=self.model_name, traces=traces, revises=skill.version
                ),
            )
            if revised is not None:
                return revised
        kind = "exemplar" if skill.kind == "exemplar" and not self.writes_prose else "revised"
        return stamp(
            add_case(skill, case),
            task=skill.task,
            kind=kind,
            model=self.model_name,
            traces=traces,
            revises=skill.version,
        )

    async def _ask(self, prompt: str, action: str, task: str, finish: Callable[[Skill], Skill]) -> Skill | None:
        """Ask for a SKILL.md; send an invalid reply back once with the error; None if it stays invalid."""
        messages = [Message(role="user", content=prompt)]
        for _attempt in range(2):
            request = ModelRequest(
                messages=messages, task_name=action, task_input={"task": task}, max_tokens=AUTHOR_MAX_TOKENS
            )
            response = await self.model.request(request)
            self.last_responses.append(response)
            try:
                return finish(Skill.parse(_skill_text(_finished_text(response))))
            except UserError as exc:
                messages = [
                    *messages,
                    Message(role="assistant", content=response.text),
                    Message(role="user", content=RETRY.format(error=exc)),
                ]
        return None


def _finished_text(response: ModelResponse) -> str:
    """The reply's text; a reply that did not finish is invalid however well it parses (a SKILL.md cut at its
    token limit can still have valid frontmatter and a body that just stops)."""
    if response.stop_reason in TOKEN_LIMIT:
        raise UserError(
            f"it was cut off at the {AUTHOR_MAX_TOKENS}-token limit; write a shorter one "
            f"(the body at most {MAX_BODY_LINES} lines)"
        )
    if response.cut_short:
        raise UserError(f"the reply did not finish (the model stopped with {response.stop_reason!r})")
    return response.text


def _prompt(name: str, **values: str) -> str:
    template = resources.files("protege.skills").joinpath("prompts", name).read_text(encoding="utf-8")
    return Template(template).substitute(max_lines=str(MAX_BODY_LINES), max_tokens=str(MAX_BODY_TOKENS), **values)


def _examples_text(examples: list[Example]) -> str:
    if not examples:
        return "(none yet: write the skill from the instructions and schemas)\n"
    blocks = []
    for n, e in enumerate(examples, 1):
        lines = [f"### Solved input {n}", "", "```json", pretty(e.input, PROMPT_CLIP), "```"]
        if e.tools:
            lines += ["", "Tools called, with what each returned:", "", _tool_uses_text(e.tools)]
        lines += ["", "Answer:", "", "```json", pretty(e.output, PROMPT_CLIP), "```"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


# -- tasks with tools: the author sees what the replay model is offered, and what the tools returned -------------

READER = (
    "The cheaper model will read this skill next to the task's instructions, then answer new inputs of the task "
    "with one\n"
    "JSON object that matches the output schema. It sees nothing else: not the examples below, not your reasoning."
)
TOOL_READER = (
    "The cheaper model will read this skill next to the task's instructions and is offered the task's tools "
    "(below): it\n"
    "can call them and read their results before it answers new inputs of the task with one JSON object that matches\n"
    "the output schema. It sees nothing else: not the examples below, not their tool results, not your reasoning."
)
TOOL_STEPS = (
    "\n   Say which tool to call when, with which arguments, and which fields come from its results (results differ\n"
    "   per input: a rule reads them, it never copies an example's result)."
)
TOOL_EXAMPLES = " Where tools were called: the calls, and the part of each result the answer used."
TOOL_RULE = (
    "\n- Compare its tool calls with yours: a call it left out, other arguments, or a result it misread is the rule "
    "to fix."
)


def _write_tool_parts(specs: list[dict[str, Any]]) -> dict[str, str]:
    """The write prompt's tool-dependent parts; a task without tools gets the prompt it always had."""
    if not specs:
        return {"reader": READER, "tools": "", "tool_steps": "", "tool_examples": ""}
    return {
        "reader": TOOL_READER,
        "tools": _tools_text(specs),
        "tool_steps": TOOL_STEPS,
        "tool_examples": TOOL_EXAMPLES,
    }


def _revise_tool_parts(failed_trace: Any, rescue_trace: Any) -> dict[str, str]:
    """The revise prompt's tool-dependent parts: the tools, and the calls each side made with their results."""
    specs = tool_specs([rescue_trace, failed_trace])
    if not specs:
        return {"tools": "", "wrong_tools": "", "right_tools": "", "tool_rule": ""}
    return {
        "tools": _tools_text(specs),
        "wrong_tools": _calls_made("It", _messages(failed_trace)),
        "right_tools": _calls_made("You", _messages(rescue_trace)),
        "tool_rule": TOOL_RULE,
    }


def _tools_text(specs: list[dict[str, Any]]) -> str:
    blocks = [
        "\n".join(
            [f"### `{s.get('name')}`", "", (s.get("description") or "(no description)").strip(), "", "Parameters:"]
            + ["", "```json", pretty(s.get("parameters") or {}, PROMPT_CLIP), "```"]
        )
        for s in specs
    ]
    return "\n## Tools (the cheaper model is offered these too)\n\n" + "\n\n".join(blocks) + "\n"


def _calls_made(who: str, messages: Any) -> str:
    uses = tool_uses(messages)
    if not uses:
        return f"\n{who} called no tools.\n"
    return f"\n{who} called these tools; what each returned:\n\n{_tool_uses_text(uses)}\n"


def _tool_uses_text(uses: tuple[ToolUse, ...]) -> str:
    lines = []
    for use in uses:
        result = "(no result recorded)" if use.result is None else clip(use.result, TOOL_RESULT_CLIP)
        lines += [use.call, f"-> {result}"]
    return _fenced("\n".join(lines))


def _fenced(text: str) -> str:
    """`text` in a code fence longer than any backtick run inside it (a tool result may hold markdown)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _messages(trace: Any) -> Any:
    return trace.get("messages") if isinstance(trace, dict) else getattr(trace, "messages", None)


def _prior_art_text(prior_art: Iterable[Any]) -> str:
    texts = [_text_of(p)[:PRIOR_ART_CLIP] for p in prior_art]
    if not texts:
        return ""
    head = "\n## Related skills (approved for other tasks: reuse what carries over, ignore the rest)\n\n"
    return head + "\n\n".join(f"````markdown\n{t}\n````" for t in texts if t) + "\n"


def _text_of(item: Any) -> str:
    if isinstance(item, Skill):
        return item.render()
    if isinstance(item, tuple) and item:  # (row, rank) pairs from a search
        item = item[0]
    return item if isinstance(item, str) else str(getattr(item, "text", "") or "")


def _skill_text(reply: str) -> str:
    """The SKILL.md inside a reply: unwrap one outer code fence and drop chatter before the frontmatter."""
    text = reply.strip()
    fenced = re.fullmatch(r"(`{3,})[\w-]*\n(.*)\n\1", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(2).strip()
    if not text.startswith("---"):
        start = re.search(r"^---\s*$", text, flags=re.MULTILINE)
        text = text[start.start() :] if start else text
    return text


__all__ = ["SkillAuthor", "TaskContract"]
