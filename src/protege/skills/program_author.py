"""The program author: the teacher writes `solve(**inputs) -> output` for a recurring task, and protege keeps a
program only as far as it verifies.

From the task contract, its skill and a diverse sample of validated traces, the author model is asked for several
candidate programs at once (EVAPORATE's lesson: some candidates generalise, some don't). Each candidate runs in the
sandbox on validated traces the author was not shown and is scored with the task's `score`, overall and per output
field. The author then revises the best candidate from a few of its failing cases, a bounded number of rounds;
cases shown to it leave the held-out set, so the final scores are on traces no author call ever saw.

Every author call is a model call the caller records as a paid trace (`last_responses`, like SkillAuthor).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from string import Template
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from protege.agents.models.base import Message, ModelRequest, ModelResponse
from protege.errors import UserError
from protege.skills.author import TaskContract
from protege.skills.examples import Example, examples_from, pretty, select_examples
from protege.skills.program_check import ENTRY, FailingCase, Scorer, Verification, output_fields, verify
from protege.skills.skill import Skill

PROGRAM_FILE = "scripts/solve.py"
WRITE_ACTION = "protege:write-program"
REVISE_ACTION = "protege:revise-program"
PROMPT_CLIP = 3000
SKILL_CLIP = 8000
CODE_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


class ProgramResult(BaseModel):
    """What authoring produced: the kept program (or none, with `note` saying why) and its held-out scores."""

    task: str
    source: str | None = None
    agreement: float = 0.0
    field_agreement: dict[str, float] = Field(default_factory=dict)
    promote_at: float = 0.95
    fields_verified: list[str] = Field(default_factory=list)
    fields_left_out: list[str] = Field(default_factory=list)
    promoted: bool = False
    failures: list[FailingCase] = Field(default_factory=list)
    held_out: int = 0
    shown_trace_ids: list[str] = Field(default_factory=list)
    held_out_trace_ids: list[str] = Field(default_factory=list)
    candidates: int = 0
    author_calls: int = 0
    author_model: str = ""
    written_by: Literal["model", "function"] = "model"
    note: str = ""

    def files(self) -> dict[str, str]:
        """The skill files to store beside SKILL.md (empty when no program was kept)."""
        return {PROGRAM_FILE: self.source} if self.source else {}

    def metadata(self) -> dict[str, str]:
        """String metadata for the skill's frontmatter (the Agent Skills spec allows only strings there)."""
        if not self.source:
            return {}
        return {
            "program-agreement": f"{self.agreement:.3f}",
            "program-fields": ",".join(self.fields_verified),
            "program-held-out": str(self.held_out),
            "program-author": self.author_model,
            "program-written-by": self.written_by,
        }

    def report(self) -> str:
        """A reviewer's summary: who wrote it, held-out agreement overall and per field, the first failures."""
        kind = "a function returning code, not a model" if self.written_by == "function" else "model"
        by = f"{self.author_model} ({kind})"
        if not self.source:
            return f"No program for task {self.task!r} (author {by}): {self.note}"
        verdict = "promoted" if self.promoted else "not promoted"
        lines = [
            f"Program for task {self.task!r}, written by {by}",
            f"Held-out agreement {self.agreement:.1%} on {self.held_out} traces it was not shown "
            f"(promote_at {self.promote_at:.0%}): {verdict}; {self.candidates} candidates, "
            f"{self.author_calls} author calls",
            "",
            f"{'field':<24} {'agreement':>9}  verified",
        ]
        for name, value in self.field_agreement.items():
            verdict = "yes" if name in self.fields_verified else "left out" if name in self.fields_left_out else "no"
            lines.append(f"{name:<24} {value:>9.1%}  {verdict}")
        if self.failures:
            lines += ["", f"Failing cases: {len(self.failures)}"]
            for case in self.failures[:3]:
                lines.append(f"- trace {case.trace_id or '?'}: " + (case.error or f"wrong {', '.join(case.fields)}"))
        return "\n".join(lines)


class ProgramAuthor:
    """Writes and verifies a task's program with `model` in `sandbox` (a protege.sandbox.Sandbox)."""

    def __init__(
        self,
        model: Any,
        sandbox: Any,
        *,
        candidates: int = 3,
        rounds: int = 2,
        shown: int = 8,
        min_held_out: int = 5,
        max_held_out: int = 200,
        failures_shown: int = 4,
        timeout_s: float = 1.0,
    ):
        for name, value, floor in (
            ("candidates", candidates, 1),
            ("rounds", rounds, 0),
            ("shown", shown, 1),
            ("min_held_out", min_held_out, 1),
            ("failures_shown", failures_shown, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < floor:
                raise UserError(f"ProgramAuthor({name}={value!r}) needs an int >= {floor}")
        self.model, self.sandbox = model, sandbox
        self.candidates, self.rounds, self.shown = candidates, rounds, shown
        self.min_held_out, self.max_held_out = min_held_out, max(max_held_out, min_held_out)
        self.failures_shown, self.timeout_s = failures_shown, timeout_s
        self.last_responses: list[ModelResponse] = []

    @property
    def model_name(self) -> str:
        return str(getattr(self.model, "name", "") or "")

    async def write(
        self, task: Any, traces: Iterable[Any], *, skill: Skill | str | None = None, promote_at: float | None = None
    ) -> ProgramResult:
        """Author, verify and revise; the best candidate on the final held-out traces is the result's source."""
        contract = TaskContract.of(task)
        if promote_at is None:
            promote_at = float(getattr(getattr(task, "policy", None), "promote_at", 0.95))
        scorer = Scorer(task, output_fields(contract.output_schema))
        shown, held = self._split(contract, _usable(examples_from(traces), scorer))
        self.last_responses = []
        result = ProgramResult(
            task=contract.name,
            promote_at=promote_at,
            author_model=self.model_name,
            written_by=_written_by(self.model),
            shown_trace_ids=[e.trace_id for e in shown if e.trace_id],
        )
        if not getattr(self.model, "writes_prose", False):
            result.note = f"author model {self.model_name!r} answers tasks but cannot write code (writes_prose=False)"
            return result
        sources, held, scored = await self._rounds(contract, skill, shown, held, scorer)
        return self._result(result, sources, held, scorer, promote_at, scored)

    def _split(self, contract: TaskContract, examples: list[Example]) -> tuple[list[Example], list[Example]]:
        """A diverse sample to show the author; the rest (capped) is held out for verification."""
        if len(examples) < self.min_held_out + 1:
            raise UserError(
                f"authoring a program for task {contract.name!r} needs at least {self.min_held_out + 1} validated "
                f"traces whose output fits the schema, got {len(examples)}; collect more teacher traces first"
            )
        k = min(self.shown, len(examples) - self.min_held_out)
        shown = select_examples(examples, contract.output_schema, k)
        chosen = {id(e) for e in shown}
        return shown, [e for e in examples if id(e) not in chosen][: self.max_held_out]

    async def _rounds(
        self, contract: TaskContract, skill: Any, shown: list[Example], held: list[Example], scorer: Scorer
    ) -> tuple[list[str], list[Example], dict[str, Verification]]:
        """Ask, verify, revise from the best candidate's failures; returns every candidate, the final held-out and
        the last round's verifications (made on that same held-out set)."""
        sources = _programs(await self._ask(self._write_prompt(contract, skill, shown), WRITE_ACTION, contract))
        tried = list(dict.fromkeys(sources[: self.candidates]))
        best: Verification | None = None
        for round_no in range(self.rounds + 1):
            scored: dict[str, Verification] = {}
            for source in sources[: self.candidates]:
                v = scored[source] = verify(
                    self.sandbox, source, held, scorer, timeout_s=self.timeout_s, round_no=round_no
                )
                best = v if best is None or v.rank > best.rank else best
            if best is None or best.agreement >= 1.0 or round_no == self.rounds:
                break
            shown_cases = best.failures[: self.failures_shown]
            reveal = set(best.failed_at[: self.failures_shown])
            if not reveal or len(held) - len(reveal) < self.min_held_out:
                break
            held = [e for i, e in enumerate(held) if i not in reveal]  # shown to the author: no longer held out
            prompt = self._revise_prompt(contract, best, shown_cases)
            sources = _programs(await self._ask(prompt, REVISE_ACTION, contract))
            tried += [s for s in sources[: self.candidates] if s not in tried]
            best = None  # scored again on the smaller held-out set next round
        return tried, held, scored

    def _result(
        self,
        result: ProgramResult,
        sources: list[str],
        held: list[Example],
        scorer: Scorer,
        promote_at: float,
        scored: dict[str, Verification],
    ) -> ProgramResult:
        """Score every candidate on the final held-out set (no author call saw it; `scored` already are) and keep
        the best."""
        result.candidates, result.author_calls = len(sources), len(self.last_responses)
        result.held_out, result.held_out_trace_ids = len(held), [e.trace_id for e in held if e.trace_id]
        if not sources:
            result.note = "the author's replies held no ```python program"
            return result
        final = [scored.get(s) or verify(self.sandbox, s, held, scorer, timeout_s=self.timeout_s) for s in sources]
        best = max(final, key=lambda v: v.rank)
        result.source, result.agreement = best.source, best.agreement
        result.field_agreement, result.failures = best.field_agreement, best.failures
        result.fields_left_out = best.left_out
        result.fields_verified = [f for f, v in best.field_agreement.items() if v >= promote_at]
        result.promoted = best.agreement >= promote_at
        return result

    async def _ask(self, prompt: str, action: str, contract: TaskContract) -> str:
        request = ModelRequest(
            messages=[Message(role="user", content=prompt)],
            task_name=action,
            task_input={"task": contract.name},
            max_tokens=8192,
        )
        response = await self.model.request(request)
        self.last_responses.append(response)
        return response.text

    def _write_prompt(self, contract: TaskContract, skill: Any, shown: list[Example]) -> str:
        skill_text = (skill.render() if isinstance(skill, Skill) else str(skill or "")).strip()
        return _prompt(
            "write-program.md",
            **self._common(contract),
            instructions=contract.instructions.strip(),
            input_schema=json.dumps(contract.input_schema, indent=1),
            output_schema=json.dumps(contract.output_schema, indent=1),
            skill=f"\n## The task's skill\n\n````markdown\n{skill_text[:SKILL_CLIP]}\n````\n" if skill_text else "",
            examples=_examples_text(shown),
        )

    def _revise_prompt(self, contract: TaskContract, best: Verification, cases: list[FailingCase]) -> str:
        fields = ", ".join(f"{k} {v:.0%}" for k, v in best.field_agreement.items())
        return _prompt(
            "revise-program.md",
            **self._common(contract),
            source=best.source.strip(),
            agreement=f"{best.agreement:.0%}",
            field_agreement=fields or "n/a",
            failures=_failures_text(cases),
        )

    def _common(self, contract: TaskContract) -> dict[str, str]:
        allowed = getattr(self.sandbox, "allowed_imports", ()) or ()
        params = ", ".join(f"{p}" for p in (contract.input_schema.get("properties") or {}))
        return {
            "task_name": contract.name,
            "parameters": params,
            "candidates": str(self.candidates),
            "allowed_imports": ", ".join(sorted(allowed)) or "none",
        }


def with_program(skill: Skill, result: ProgramResult) -> Skill:
    """A copy of `skill` carrying the program as scripts/solve.py and its verification in the metadata."""
    if not result.source:
        raise UserError(f"no program to attach for task {result.task!r}: {result.note or 'none was kept'}")
    return skill.model_copy(
        update={"files": {**skill.files, **result.files()}, "metadata": {**skill.metadata, **result.metadata()}}
    )


def code_author(*candidates: str, revisions: Sequence[str] = (), name: str = "function:code-author") -> Any:
    """An offline author: a FunctionModel that answers a write request with `candidates` and a revision request
    with `revisions` (or the candidates again). Its name says it is a function, so reports never pass it off as
    a model's authoring; it measures verification, the sandbox and routing."""
    from protege.agents.models.function import FunctionModel

    if not candidates or not all(isinstance(c, str) and c.strip() for c in candidates):
        raise UserError(f"code_author needs at least one program source (str), got {candidates!r:.80}")

    def reply(request: ModelRequest) -> str:
        sources = revisions if request.task_name == REVISE_ACTION and revisions else candidates
        return "\n\n".join(f"```python\n{s.strip()}\n```" for s in sources)

    return FunctionModel(reply, name=name, writes_prose=True)


def _usable(examples: list[Example], scorer: Scorer) -> list[Example]:
    """Traces a program can be checked on: the input binds as keyword arguments and the output fits the schema."""
    usable = []
    for e in examples:
        if not isinstance(e.input, dict) or not all(isinstance(k, str) and k.isidentifier() for k in e.input):
            continue
        try:
            scorer.parse(e.output)
        except ValidationError:
            continue
        usable.append(e)
    return usable


def _programs(reply: str) -> list[str]:
    """The ```python blocks of a reply that define the entry function; a bare reply defining it counts as one."""
    blocks = [b.strip() + "\n" for b in CODE_BLOCK.findall(reply)]
    if not blocks and f"def {ENTRY}(" in reply:
        blocks = [reply.strip() + "\n"]
    return [b for b in dict.fromkeys(blocks) if f"def {ENTRY}(" in b]


def _written_by(model: Any) -> Literal["model", "function"]:
    from protege.agents.models.function import FunctionModel, ScriptedModel

    return "function" if isinstance(model, FunctionModel | ScriptedModel) else "model"


def _prompt(name: str, **values: str) -> str:
    template = resources.files("protege.skills").joinpath("prompts", name).read_text(encoding="utf-8")
    return Template(template).substitute(**values)


def _examples_text(examples: list[Example]) -> str:
    blocks = []
    for n, e in enumerate(examples, 1):
        blocks.append(
            f"### Solved input {n}\n\nKeyword arguments:\n\n```json\n{pretty(e.input, PROMPT_CLIP)}\n```"
            f"\n\nAnswer:\n\n```json\n{pretty(e.output, PROMPT_CLIP)}\n```"
        )
    return "\n\n".join(blocks) + "\n"


def _failures_text(cases: list[FailingCase]) -> str:
    blocks = []
    for n, c in enumerate(cases, 1):
        got = (
            f"It failed: {c.error}"
            if c.actual is None
            else f"It answered:\n\n```json\n{pretty(c.actual, PROMPT_CLIP)}\n```"
        )
        wrong = f"\n\nWrong fields: {', '.join(c.fields)}" if c.fields else ""
        blocks.append(
            f"### Case {n}\n\nKeyword arguments:\n\n```json\n{pretty(c.input, PROMPT_CLIP)}\n```\n\n"
            f"Expected:\n\n```json\n{pretty(c.expected, PROMPT_CLIP)}\n```\n\n{got}{wrong}"
        )
    return "\n\n".join(blocks) + "\n"


__all__ = ["PROGRAM_FILE", "ProgramAuthor", "ProgramResult", "code_author", "with_program"]
