"""The store's tables (DESIGN §7). Plain SQLModel rows; JSON columns hold transcripts, schemas and metrics.

Ids of rows written on the hot path (runs, traces) are client-made uuid4 hex strings, so a trace can be
written before its run row is committed and bulk ingest needs no round trip per row.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def new_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def table_of(model: type[SQLModel]) -> Table:
    """The SQLAlchemy table of a table model."""
    return model.__table__  # type: ignore[attr-defined]  # set by SQLAlchemy; SQLModel's stubs don't declare it


REPR_TEXT = 60  # characters of a long text a row's repr shows


class BriefRepr:
    """A row's repr with long texts cut and JSON columns counted: `print(app.skill("t"))` showed a whole SKILL.md
    and its files (~15 KB), a student its every eval score."""

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, _brief(value)


def _brief(value: Any) -> Any:
    if isinstance(value, str) and len(value) > REPR_TEXT:
        return f"{value[:REPR_TEXT]}… ({len(value):,} chars)"
    if isinstance(value, dict) and len(repr(value)) > REPR_TEXT:
        keys = ", ".join(map(str, list(value)[:6])) + (", …" if len(value) > 6 else "")
        return f"<{len(value)} {'key' if len(value) == 1 else 'keys'}: {keys}>"
    if isinstance(value, list) and len(repr(value)) > REPR_TEXT:
        return f"<{len(value)} {'item' if len(value) == 1 else 'items'}>"
    return value


def _json(**kw: Any) -> Any:
    # none_as_null: Python None is SQL NULL (not the JSON text 'null'), so IS NULL filters work
    return Field(default=None, sa_column=Column(JSON(none_as_null=True), **kw))


def _text() -> Any:
    return Field(default="", sa_column=Column(Text, nullable=False, default=""))


class TaskRow(SQLModel, table=True):
    """One version of a task's contract: schemas, instructions, policy. A changed contract is a new version."""

    __tablename__ = "task"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_task_name_version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str  # looked up through the (name, version) unique index
    version: int = 1
    contract_hash: str
    input_schema: dict | None = _json()
    output_schema: dict | None = _json()
    instructions: str = _text()
    policy: dict | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class RunRow(BriefRepr, SQLModel, table=True):
    """One call of a task: its input, final output, serving tier, total cost and the teacher-only counterfactual."""

    __tablename__ = "run"
    __table_args__ = (Index("ix_run_task_created", "task_name", "created_at"), Index("ix_run_created", "created_at"))

    id: str = Field(default_factory=new_id, primary_key=True)
    task_name: str
    task_version: int = 1
    input: dict | None = _json()
    input_hash: str = Field(default="", index=True)
    output: dict | None = _json()
    tier: str | None = None
    status: str = "running"  # running | ok | failed
    error: str | None = Field(default=None, sa_column=Column(Text))
    cost_usd: float = 0.0
    latency_s: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


class TraceRow(BriefRepr, SQLModel, table=True):
    """One tier attempt: the whole transcript, the output, validity, tokens, cost and latency."""

    __tablename__ = "trace"
    __table_args__ = (
        Index("ix_trace_task_created", "task_name", "created_at"),
        Index("ix_trace_created", "created_at"),  # the all-tasks trace list, newest first
        Index("ix_trace_task_valid_tier", "task_name", "valid", "tier"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    task_name: str
    task_version: int = 1
    tier: str  # teacher | replay | student | import
    model: str = ""
    attempt: int = 0
    shadow: bool = False
    skill_version: int | None = None
    student_id: str | None = None
    input: dict | None = _json()
    input_hash: str = Field(default="", index=True)
    messages: list | None = _json()
    tools: list | None = _json()
    output: dict | None = _json()
    output_text: str = _text()
    valid: bool = False
    errors: list | None = _json()
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    confidence: float | None = None  # a local model's mean token probability
    field_confidences: dict | None = _json()  # output field → its least-sure token's probability (the gate's input)
    raw: list | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class SkillRow(BriefRepr, SQLModel, table=True):
    """One immutable version of a task's skill (a whole SKILL.md plus extra files) and its review state."""

    __tablename__ = "skill"
    __table_args__ = (
        UniqueConstraint("task_name", "version", name="uq_skill_task_version"),
        Index("ix_skill_task_status", "task_name", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    task_name: str
    name: str
    version: int = 1
    status: str = "draft"  # draft | approved | rejected | retired
    kind: str = "authored"  # authored | exemplar | imported | edited
    description: str = _text()
    text: str = _text()
    files: dict | None = _json()
    source_trace_ids: list | None = _json()
    author_model: str = ""
    evidence: dict | None = _json()
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    review_note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class LabelRow(SQLModel, table=True):
    """A reviewer's verdict on a trace: good or bad (bad traces never reach a dataset)."""

    __tablename__ = "label"

    id: int | None = Field(default=None, primary_key=True)
    trace_id: str = Field(index=True)
    verdict: str  # good | bad
    reviewer: str = ""
    note: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class DatasetRow(BriefRepr, SQLModel, table=True):
    """A built SFT dataset: where its files are, their content hash, counts at each stage and its params."""

    __tablename__ = "dataset"

    id: str = Field(default_factory=new_id, primary_key=True)
    task_name: str = Field(index=True)
    path: str
    content_hash: str
    counts: dict | None = _json()
    params: dict | None = _json()
    created_at: datetime = Field(default_factory=utcnow)


class StudentRow(BriefRepr, SQLModel, table=True):
    """A fine-tuned student: base, adapter on disk, evaluation metrics, and its state."""

    __tablename__ = "student"
    __table_args__ = (Index("ix_student_task_state", "task_name", "state"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    task_name: str
    base: str
    adapter_path: str
    adapter_hash: str = ""
    dataset_id: str | None = None
    metrics: dict | None = _json()
    params: dict | None = _json()
    state: str = "candidate"  # candidate | promoted | demoted
    created_at: datetime = Field(default_factory=utcnow)
    promoted_at: datetime | None = None


class ShadowRow(SQLModel, table=True):
    """A shadow comparison: a cheaper tier's answer vs the teacher's on the same input."""

    __tablename__ = "shadow"
    __table_args__ = (Index("ix_shadow_task_tier_created", "task_name", "tier", "created_at"),)

    id: int | None = Field(default=None, primary_key=True)
    task_name: str
    run_id: str
    tier: str
    trace_id: str
    teacher_trace_id: str
    agreement: float
    created_at: datetime = Field(default_factory=utcnow)


class BudgetRow(SQLModel, table=True):
    """Teacher spend of one scope (a task, or "*" for all tasks) and day: settled, and reserved by the calls in
    flight. A cap counts both, checked and changed in one statement, so concurrent calls cannot pass it together."""

    __tablename__ = "budget"
    __table_args__ = (UniqueConstraint("task_name", "day", name="uq_budget_task_day"),)

    id: int | None = Field(default=None, primary_key=True)
    task_name: str  # "*" for the all-tasks daily cap
    day: str  # YYYY-MM-DD (UTC)
    spent_usd: float = 0.0  # settled: what the finished calls cost
    # the worst cases of the calls in flight, the sum of their budget_hold rows; a server default for the rows an
    # older protege inserts while a fleet is upgraded
    reserved_usd: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})


class BudgetHoldRow(SQLModel, table=True):
    """One call's reservation against one scope's cap while the call runs, with its owner and a lease.

    Kept only in the day's total, a reservation of a killed process counted against the cap all day, with nobody
    to release it; as a row, the next reservation releases it once its owner is gone or its lease ran out.
    """

    __tablename__ = "budget_hold"

    id: str = Field(primary_key=True)  # the reservation: one id across the scopes it holds
    task_name: str = Field(primary_key=True)  # the scope
    day: str  # the day row it is counted in (a call that runs past midnight settles there)
    amount_usd: float
    owner: str  # "host:pid:token" of the calling process
    expires_at: datetime
    created_at: datetime = Field(default_factory=utcnow)


class JobRow(SQLModel, table=True):
    """Background work owed to a task (skill writing, evidence runs, ...), durable until done.

    A process claims a job by writing its owner id and a lease; a job whose owner died (its process is gone, or
    its lease ran out) is claimed by the next process that opens the store, so paid work is never dropped.
    """

    __tablename__ = "job"
    __table_args__ = (Index("ix_job_state_task", "state", "task_name"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    task_name: str
    kind: str  # a key of the lifecycle's job handlers: "skill", ...
    payload: dict | None = _json()
    state: str = "pending"  # pending | failed (done jobs are deleted)
    owner: str | None = None  # "host:pid:token" of the process running it; None: free to claim
    lease_until: datetime | None = None
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class LeaseRow(SQLModel, table=True):
    """A named lease ("distill:<task>"): one holder at a time across processes; it lapses if the holder dies."""

    __tablename__ = "lease"

    name: str = Field(primary_key=True)
    owner: str
    expires_at: datetime
    acquired_at: datetime = Field(default_factory=utcnow)
    info: dict | None = _json()  # the holder's progress, for `protege students` and the TUI


ALL_TABLES: list[type[SQLModel]] = [
    TaskRow,
    RunRow,
    TraceRow,
    SkillRow,
    LabelRow,
    DatasetRow,
    StudentRow,
    ShadowRow,
    BudgetRow,
    BudgetHoldRow,
    JobRow,
    LeaseRow,
]
