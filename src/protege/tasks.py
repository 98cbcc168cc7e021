"""A task is a typed function: parameters -> input model, return annotation -> output model, docstring ->
instructions. `TaskSpec` holds that contract plus the optional check, score, tools and policy.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from protege.errors import UserError

CheckFn = Callable[[Any, Any], bool]
ScoreFn = Callable[[Any, Any], float]


class Policy(BaseModel):
    """How a task moves work to cheaper tiers, and the guards on the way."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_traces: int = Field(
        default=200,
        ge=1,
        description="teacher or imported traces (what a distill trains on) needed before distilling a student",
    )
    promote_at: float = Field(default=0.95, ge=0, le=1, description="retention (or skill agreement) needed to promote")
    demote_below: float = Field(default=0.90, ge=0, le=1, description="rolling shadow agreement that demotes")
    shadow_rate: float = Field(
        default=0.05, ge=0, le=1, description="share of cheaper-tier calls also run on the teacher"
    )
    shadow_window: int = Field(default=50, ge=1, description="shadow comparisons in the rolling agreement")
    skill_approval: Literal["review", "evidence"] = Field(
        default="review",
        description="'review': a reviewer approves skills; 'evidence': approve when agreement passes",
    )
    evidence_k: int = Field(default=20, ge=1, description="solved inputs the replay model answers as skill evidence")
    allow_unapproved_skills: bool = Field(default=False, description="let replay use draft skills (untrusted text!)")
    min_confidence: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="student answers below this confidence escalate: the least-sure output field's confidence "
        "(its least-sure token's probability), or the answer's mean token probability for a model "
        "that gives none per field (None: the floor app.distill calibrated for the student, if it "
        "needed one)",
    )
    min_eval: int = Field(
        default=20,
        ge=1,
        description="eval answers a student must be judged on before app.distill promotes it (fewer: it stays "
        "a candidate, to promote by hand)",
    )
    min_coverage: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a student that needs a confidence floor to pass promote_at is promoted only if it keeps at "
        "least this share of calls",
    )
    copy_constraint: bool = Field(
        default=True,
        description="a student writes fields the traces show copied from the input only as substrings of the "
        "call's input (False: as free text)",
    )
    redact: Literal["secrets", "pii"] = Field(default="secrets", description="what distillation redacts from traces")
    teacher_budget_usd: float | None = Field(default=None, ge=0, description="cap on this task's teacher spend per day")
    max_steps: int = Field(default=8, ge=1, description="model turns per attempt (tool calls included)")
    max_tokens: int = Field(
        default=2048,
        ge=1,
        description="output tokens a model may write per turn: an answer cut off at this limit is not served (it "
        "escalates), and the teacher budget reserves this much output for every teacher request",
    )
    repair_turns: int = Field(
        default=1, ge=0, description="times a teacher answer that fails validation is sent back with its errors"
    )
    tool_timeout_s: float = Field(default=30.0, gt=0, description="seconds a tool call may take")
    # 20,000 characters (~5k tokens) hold a full record or a page of search results; past that a result mostly
    # costs: every later turn of the loop sends it again, and the trace and training rows keep it
    max_tool_result_chars: int = Field(
        default=20_000,
        ge=1,
        description="characters of a tool's result the model is sent (and the trace keeps); the rest is cut, "
        "with a marker saying how much",
    )
    prior_art: bool = Field(
        default=True,
        description="until the task has a skill of its own, offer the teacher up to two approved skills of other "
        "tasks that match its instructions (False: its prompt holds this task's instructions only — where other "
        "tasks' skills carry examples this task must not see)",
    )
    program: bool = Field(
        default=True,
        description="induce field programs from the teacher's traces and serve "
        "the fields they are verified for (no model, no cost)",
    )
    program_min_traces: int = Field(default=50, ge=4, description="valid teacher traces before programs are induced")
    program_review: bool = Field(
        default=False,
        description="serve a teacher-written program only once a reviewer approves the skill version that wrote it "
        "(by default it serves once verified on the traces; induced field programs are not held)",
    )
    drift_shadow_rate: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="shadow rate while a promoted student's inputs or confidence have moved from their "
        "distribution at promotion (0: no early signal)",
    )
    drift_shadow_calls: int = Field(
        default=50, ge=1, description="calls the raised shadow rate lasts after a drift signal"
    )
    auto_distill: bool = Field(
        default=False,
        description="distill again by itself (a separate process) once a task without a promoted student has "
        "auto_distill_traces new validated traces",
    )
    auto_distill_traces: int = Field(
        default=100,
        ge=1,
        description="new validated traces (since the last student) that start an automatic distill",
    )


def _default_score(expected: Any, actual: Any) -> float:
    return 1.0 if expected == actual else 0.0


class TaskSpec:
    """The contract of one task, derived from a typed function."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        instructions: str | None = None,
        check: CheckFn | None = None,
        score: ScoreFn | None = None,
        tools: list[Callable[..., Any]] | None = None,
        policy: Policy | None = None,
    ):
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", ""))
        if not self.name.isidentifier() or not re.search(r"[a-z0-9]", self.name.lower()):
            # its skill is named from its ASCII letters and digits (the Agent Skills spec): `日本` has none
            raise UserError(
                f"task name {self.name!r} must be a Python identifier with an ASCII letter or digit; "
                "pass name='my_task'"
            )
        self.instructions = (instructions or inspect.getdoc(fn) or "").strip()
        if not self.instructions:
            raise UserError(f"task {self.name!r} has no instructions: give the function a docstring saying what to do")
        self.input_model, self.params = _input_model(fn, self.name)
        self.output_model = _output_model(fn, self.name)
        self.check = check
        self.score: ScoreFn = score or _default_score
        self.tools = list(tools or [])
        for tool in self.tools:
            if not callable(tool):
                raise UserError(f"tool {tool!r} of task {self.name!r} is not callable")
        self.policy = policy or Policy()
        self.input_schema = self.input_model.model_json_schema()
        self.output_schema = self.output_model.model_json_schema()
        self.contract_hash = contract_hash(self.input_schema, self.output_schema, self.instructions)

    def parse_input(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> BaseModel:
        """Bind call arguments (or one dict of them) to the input model; bad input is a UserError."""
        kwargs = dict(kwargs or {})
        if len(args) > len(self.params):
            raise UserError(f"task {self.name!r} takes {len(self.params)} argument(s), got {len(args)}")
        kwargs.update(zip(self.params, args))
        unknown = sorted(set(kwargs) - set(self.params))
        if unknown:  # a misspelt or stale parameter: refused, not dropped (checked here, so the schema is unchanged)
            raise UserError(
                f"bad input for task {self.name!r}: {', '.join(map(repr, unknown))} is not a parameter of the task "
                f"(its parameters: {', '.join(self.params)})"
            )
        try:
            parsed = self.input_model.model_validate(kwargs)
        except ValidationError as exc:
            raise UserError(f"bad input for task {self.name!r}: {_brief(exc)}") from exc
        try:
            # by alias, as the schemas name the fields: as traces store it and models are sent it
            dumped, unwritable = parsed.model_dump(mode="json", by_alias=True), None
        except ValueError as exc:  # bytes that are not UTF-8 (pydantic writes bytes as text), a lone surrogate
            dumped, unwritable = parsed.model_dump(by_alias=True), exc
        bad = _unencodable_text(dumped, ())
        if bad is not None:
            # the path may hold the broken text itself (a dict key): escape it so the message prints
            field = (".".join(map(str, bad)) or "<root>").encode("utf-8", "backslashreplace").decode()
            raise UserError(
                f"bad input for task {self.name!r}: {field}: text holds a lone surrogate (not valid Unicode); "
                "decode the source as UTF-8 or replace the broken characters"
            )
        if unwritable is not None:
            raise UserError(
                f"bad input for task {self.name!r}: it cannot be written as JSON ({str(unwritable).splitlines()[0]}); "
                "pass binary data as base64 text, or bytes that are UTF-8"
            )
        return parsed

    def parse_output(self, data: Any) -> BaseModel:
        """Validate an answer (JSON text or dict) against the output model; raises pydantic's ValidationError."""
        if isinstance(data, str):
            return self.output_model.model_validate_json(data)
        return self.output_model.model_validate(data)


READ_ONLY = "__protege_read_only__"
F = TypeVar("F", bound=Callable[..., Any])


def read_only(fn: F) -> F:
    """Mark a task tool as free of side effects (a lookup, a search): a shadow check or skill evidence may run it
    for a call the served answer did not make, so that answer can still be scored. Unmarked tools are never run
    again by a check (they may charge a card twice); only their recorded results answer it."""
    setattr(fn, READ_ONLY, True)
    return fn


def contract_hash(input_schema: dict, output_schema: dict, instructions: str) -> str:
    blob = json.dumps([input_schema, output_schema, instructions], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def same_wording(a: str, b: str) -> bool:
    """Whether two instructions differ only in whitespace inside their paragraphs (a docstring reflowed or
    re-indented): the same contract, so not a new task version. A paragraph break is kept — a student's prompt
    is the first paragraph."""
    return _paragraphs(a) == _paragraphs(b)


def _paragraphs(text: str) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip())]


def input_hash(data: dict[str, Any]) -> str:
    """Stable hash of a task input (canonical JSON), used for dedup and the train/eval split."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _unencodable_text(value: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """Path to the first text that UTF-8 cannot encode (a lone surrogate, as `json.loads('"\\ud800"')` gives),
    else None; such text would break hashing and storage later, far from the caller."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _unencodable_text(key, (*path, key)) if isinstance(key, str) else None
            found = found if found is not None else _unencodable_text(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, (list, tuple, set, frozenset)):
        for i, item in enumerate(value):
            found = _unencodable_text(item, (*path, i))
            if found is not None:
                return found
    return None


def _brief(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])


def _hints(fn: Callable[..., Any], task: str) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception as exc:  # unresolvable forward refs and the like
        raise UserError(f"cannot read the type hints of task {task!r}: {exc}") from exc


def _input_model(fn: Callable[..., Any], task: str) -> tuple[type[BaseModel], list[str]]:
    hints = _hints(fn, task)
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise UserError(f"task {task!r}: *args/**kwargs are not allowed; name each parameter with a type")
        if p.name not in hints:
            raise UserError(f"task {task!r}: parameter {p.name!r} needs a type annotation (e.g. a pydantic model)")
        default = ... if p.default is p.empty else p.default
        fields[p.name] = (hints[p.name], default)
    if not fields:
        raise UserError(f"task {task!r} takes no parameters; a task needs at least one typed input")
    try:
        model = create_model(f"{_camel(task)}Input", **fields)
        model.model_json_schema()
    except Exception as exc:
        raise UserError(
            f"task {task!r}: its parameter types must be pydantic-compatible (models, str, int, list[...], ...): {exc}"
        ) from exc
    return model, list(fields)


def _output_model(fn: Callable[..., Any], task: str) -> type[BaseModel]:
    ret = _hints(fn, task).get("return")
    if ret is None:
        raise UserError(f"task {task!r} needs a return annotation: a pydantic model, e.g. `-> Triage`")
    if not (isinstance(ret, type) and issubclass(ret, BaseModel)):
        raise UserError(
            f"task {task!r} returns {ret!r}; the return annotation must be a pydantic BaseModel subclass "
            f"(wrap plain values: `class Answer(BaseModel): value: str`)"
        )
    return ret


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))
