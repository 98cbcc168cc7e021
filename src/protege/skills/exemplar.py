"""Skills built without a prose-writing model: how to answer, plus validated worked examples.

The body does not repeat the task's instructions and output schema: the replay prompt carries them on every call
(copied in, they were sent twice, and a long docstring alone broke the spec's body budget, so such a task never got
a skill). They go in the extra file `references/task.md` instead, which keeps an exported skill self-contained.

Used when the teacher only answers tasks (ReferenceModel, FunctionModel), and as the fallback when a teacher's
SKILL.md stays invalid. `add_case` is the matching mechanical revision: it appends a corrected case (the cheaper
model's wrong answer and the teacher's right one) and drops the oldest cases when the body would outgrow the spec.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from protege.errors import UserError
from protege.skills.examples import Example, choice_fields, pretty
from protege.skills.skill import STATUS_KEY, VERSION_KEY, Skill, check_body, skill_name

OWNED_KEYS = ("task", "kind", "model", "traces", "revises")
"""Metadata keys protege writes itself; its version and status belong to the library's row and are added on read
under namespaced keys (ROW_KEYS), so a skill's own `version` or `status` is kept as it is."""
ROW_KEYS = (VERSION_KEY, STATUS_KEY)
MAX_TRACE_IDS = 16
CASES_HEADING = "## Corrected cases"
CASE_PREFIX = "### Corrected case"
TASK_FILE = "references/task.md"


@dataclass(frozen=True)
class Case:
    """A replay the teacher had to rescue: the input, the cheaper model's wrong answer, the right answer."""

    input: Any
    wrong: Any
    right: Any
    errors: tuple[str, ...] = ()
    trace_ids: tuple[str, ...] = ()

    @classmethod
    def of(cls, failed_trace: Any, rescue_trace: Any) -> Case:
        failed, rescue = _getter(failed_trace), _getter(rescue_trace)
        wrong, right = _answer(failed), _answer(rescue)
        if right is None:
            raise UserError(
                f"rescue trace {rescue('id')!r} has no answer to learn from; pass the teacher's valid trace"
            )
        return cls(
            input=failed("input") if failed("input") is not None else rescue("input"),
            wrong=wrong if wrong is not None else "(no answer)",
            right=right,
            errors=tuple(str(e) for e in failed("errors") or ()),
            trace_ids=tuple(i for i in (failed("id"), rescue("id")) if i),
        )


def stamp(
    skill: Skill, *, task: str, kind: str, model: str = "", traces: Any = (), revises: int | None = None
) -> Skill:
    """Set protege's own fields (name from the task; task, kind, model, traces, revises in metadata) and validate."""
    owned = {"task": task, "kind": kind}
    if model:
        owned["model"] = model
    ids = [str(t) for t in traces if t][-MAX_TRACE_IDS:]
    if ids:
        owned["traces"] = ",".join(ids)
    if revises is not None:
        owned["revises"] = str(revises)
    extra = {k: v for k, v in skill.metadata.items() if k not in OWNED_KEYS + ROW_KEYS}
    data = skill.model_dump()
    data.update(name=skill_name(task), metadata={**owned, **extra})
    return Skill(**data).validate()


def describe(instructions: str, task: str) -> str:
    """A spec description: the instructions' first sentence, then when to use the skill."""
    first = re.split(r"(?<=[.!?])\s|\n", instructions.strip(), maxsplit=1)[0].strip()[:600]
    text = f"{first} Use for the `{task}` task." if first else f"Solves the `{task}` task."
    return text[:1024]


def exemplar_skill(contract: Any, examples: list[Example], *, model: str = "") -> Skill:
    """How to answer and as many of `examples` as fit the spec's body budget; the instructions and output format
    in `references/task.md`."""
    head = _head(contract)
    blocks: list[str] = []
    used: list[str | None] = []
    for example in examples:
        block = _example_block(len(blocks) + 1, example)
        if _fits(_join(head, blocks + [block])):
            blocks.append(block)
            used.append(example.trace_id)
    skill = Skill(
        name=skill_name(contract.name),
        description=describe(contract.instructions, contract.name),
        body=_join(head, blocks),
        files={TASK_FILE: task_reference(contract)},
    )
    return stamp(skill, task=contract.name, kind="exemplar", model=model, traces=used)


def add_case(skill: Skill, case: Case) -> Skill:
    """The skill with `case` appended under 'Corrected cases' (clipped, older cases dropped to stay in budget)."""
    head, cases, tail = _split_cases(skill.body)
    for clip in (4000, 1000, 200):
        kept = cases + [_case_block(case, clip)]
        while True:
            body = _with_cases(head, kept, tail)
            if _fits(body):
                return Skill(**{**skill.model_dump(), "body": body})
            if len(kept) == 1:
                break
            kept.pop(0)
    raise UserError(
        f"skill {skill.name!r} is too close to the spec's body budget to add a corrected case; "
        f"move detail into extra files and revise again"
    )


# -- body parts -----------------------------------------------------------------------------------------------


def _head(contract: Any) -> list[str]:
    title = contract.name.replace("_", " ").strip().capitalize()
    return [
        f"# {title}",
        f"## When to use\n\nUse this skill for the `{contract.name}` task: inputs that match the task's input schema.",
        "## How to answer\n\n"
        "Follow the task's instructions and answer with one JSON object that matches its output schema, and nothing "
        f"else. Both come with every call of the task (a copy is in `{TASK_FILE}`). The worked examples below are "
        "validated answers to earlier inputs: answer new inputs the same way.",
    ]


def task_reference(contract: Any) -> str:
    """The task's instructions and output format, for `references/task.md`."""
    title = contract.name.replace("_", " ").strip().capitalize()
    parts = [f"# {title}: the task", f"## Instructions\n\n{contract.instructions.strip()}"]
    return "\n\n".join([*parts, _output_format(contract.output_schema or {})]) + "\n"


def _output_format(schema: dict[str, Any]) -> str:
    lines = [
        "## Output format",
        "",
        "One JSON object matching this schema:",
        "",
        "```json",
        json.dumps(schema, ensure_ascii=False),
        "```",
    ]
    choices = choice_fields(schema)
    if choices:
        lines += ["", "Allowed values:"]
        lines += [
            f"- `{name}`: {', '.join(json.dumps(v, ensure_ascii=False) for v in vals)}"
            for name, vals in choices.items()
        ]
    return "\n".join(lines)


def _example_block(n: int, example: Example) -> str:
    lines = [f"### Example {n}", "", "Input:", "", "```json", pretty(example.input), "```"]
    if example.tool_calls:
        lines += ["", "Tools called: " + "; ".join(example.tool_calls)]
    lines += ["", "Answer:", "", "```json", pretty(example.output), "```"]
    return "\n".join(lines)


def _join(head: list[str], blocks: list[str]) -> str:
    parts = list(head)
    if blocks:
        parts.append("## Worked examples\n\n" + "\n\n".join(blocks))
    return "\n\n".join(parts) + "\n"


def _case_block(case: Case, clip: int) -> str:
    lines = [
        f"{CASE_PREFIX}",
        "",
        "Input:",
        "",
        "```json",
        pretty(case.input, clip),
        "```",
        "",
        "Wrong answer (do not answer like this):",
        "",
        "```json",
        pretty(case.wrong, clip),
        "```",
    ]
    if case.errors:
        lines += ["", "Why it failed: " + "; ".join(case.errors)[:clip]]
    lines += ["", "Right answer:", "", "```json", pretty(case.right, clip), "```"]
    return "\n".join(lines)


def _split_cases(body: str) -> tuple[str, list[str], str]:
    """(text before the section, its case blocks, text after it); no section -> (body, [], '')."""
    start = body.find(f"\n{CASES_HEADING}\n")
    if start == -1:
        return body.rstrip("\n"), [], ""
    head, rest = body[:start], body[start + len(CASES_HEADING) + 2 :]
    nxt = re.search(r"^## ", rest, flags=re.MULTILINE)
    section, tail = (rest[: nxt.start()], rest[nxt.start() :]) if nxt else (rest, "")
    blocks = [CASE_PREFIX + b for b in section.split(CASE_PREFIX)[1:]]
    return head.rstrip("\n"), [b.strip("\n") for b in blocks], tail


def _with_cases(head: str, cases: list[str], tail: str) -> str:
    intro = "Inputs a cheaper model got wrong with an earlier version of this skill, and the right answers."
    section = "\n\n".join([CASES_HEADING, intro, *cases])
    return "\n\n".join(p for p in (head, section, tail.strip("\n")) if p) + "\n"


def _fits(body: str) -> bool:
    try:
        check_body(body)
    except UserError:
        return False
    return True


def _getter(trace: Any) -> Any:
    if isinstance(trace, dict):
        return trace.get
    return lambda key, default=None: getattr(trace, key, default)


def _answer(trace: Any) -> Any:
    """A trace's answer: its parsed output, else its raw text, decoded where it is JSON (an invalid answer keeps
    only the text; shown as a JSON string, every quote in it came out escaped)."""
    if trace("output") is not None:
        return trace("output")
    return _maybe_json(trace("output_text")) if trace("output_text") else None


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


__all__ = [
    "Case",
    "OWNED_KEYS",
    "ROW_KEYS",
    "TASK_FILE",
    "add_case",
    "describe",
    "exemplar_skill",
    "stamp",
    "task_reference",
]
