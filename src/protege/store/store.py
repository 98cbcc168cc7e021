"""`Store`: typed queries over the tables, on SQLite (default) or PostgreSQL (plumbing in base.py).

Hot-path writes (runs, traces) are single statements committed at once, so a trace is durable the moment its
attempt ends; on PostgreSQL each is one autocommit round trip.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import String, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.sql import Select
from sqlmodel import Session, SQLModel, col
from sqlmodel.sql.sqltypes import AutoString

from protege.errors import StoreError, UserError
from protege.store.budget import BudgetQueries
from protege.store.bulk import BulkInsert
from protege.store.engine import SQLITE_BUSY_TIMEOUT_MS, require_aware
from protege.store.models import (
    DatasetRow,
    LabelRow,
    RunRow,
    ShadowRow,
    SkillRow,
    StudentRow,
    TaskRow,
    TraceRow,
    new_id,
    table_of,
    utcnow,
)
from protege.store.search import query_terms, search_statement
from protege.tasks import same_wording

DATASET_TIERS = ("teacher", "import")  # replay answers are only schema-checked: opt in (build_dataset tiers=)
_Select = TypeVar("_Select", bound="Select[Any]")
COLLISION_RETRIES = 30  # version-numbering races: each round lets at least one concurrent writer through
# The hot path's inserts, built once: SQLAlchemy memoizes a statement's cache key on the object, so reusing it
# skips rebuilding and re-keying the statement on every write (~0.05 ms of a call's store write)
_INSERT_RUN = insert(RunRow)
_INSERT_TRACE = insert(TraceRow)


def answer_key(output: Any) -> str:
    """An answer as canonical JSON, to compare answers whatever their key order."""
    return json.dumps(output, sort_keys=True, ensure_ascii=False)


USD_DIGITS = 10  # decimal places the ledger keeps of a dollar amount


class Ledger(BaseModel):
    """Spend of one task: by tier, in total, and against what the teacher alone would have cost."""

    task: str
    calls: int
    calls_by_tier: dict[str, int]
    spend_by_tier: dict[str, float]
    total_usd: float
    teacher_only_usd: float | None
    savings_usd: float | None
    savings_ratio: float | None
    imported_usd: float = 0.0  # what imported logs say their calls cost: spent before protege, not in the total


class Store(BudgetQueries):
    """The protege store. Open with a SQLAlchemy URL; migrations run on open unless `migrate=False`."""

    # -- tasks -------------------------------------------------------------------------------------------------

    def register_task(
        self,
        *,
        name: str,
        contract_hash: str,
        input_schema: dict,
        output_schema: dict,
        instructions: str,
        policy: dict | None = None,
    ) -> TaskRow:
        """Record a task's contract; the same contract returns its row, a changed one becomes a new version."""
        for attempt in range(COLLISION_RETRIES):  # another process may register the same version at once
            _backoff(attempt)
            latest = self.task(name)
            if latest is not None and _same_contract(latest, contract_hash, input_schema, output_schema, instructions):
                if latest.policy != policy:
                    self._exec(update(TaskRow).where(col(TaskRow.id) == latest.id).values(policy=policy))
                    latest.policy = policy
                return latest
            row = TaskRow(
                name=name,
                version=(latest.version + 1) if latest else 1,
                contract_hash=contract_hash,
                input_schema=input_schema,
                output_schema=output_schema,
                instructions=instructions,
                policy=policy,
            )
            try:
                return self._add(row)
            except IntegrityError:
                continue
        raise StoreError(f"could not register task {name!r}: concurrent registrations kept colliding")

    def task(self, name: str, version: int | None = None) -> TaskRow | None:
        stmt = select(TaskRow).where(col(TaskRow.name) == name)
        stmt = stmt.where(col(TaskRow.version) == version) if version else stmt.order_by(col(TaskRow.version).desc())
        return self._first(stmt.limit(1))

    def tasks(self) -> list[TaskRow]:
        """The newest version of every registered task, by name."""
        name, version = col(TaskRow.name), col(TaskRow.version)
        newest = select(name, func.max(version).label("v")).group_by(name).subquery()
        stmt = select(TaskRow).join(newest, (name == newest.c.name) & (version == newest.c.v))
        return self._all(stmt.order_by(col(TaskRow.name)))

    # -- runs and traces ---------------------------------------------------------------------------------------

    def insert_run(self, run: RunRow | dict) -> None:
        """Write a run row at once (a dict of RunRow fields is accepted too: it skips the model's constructor)."""
        self._exec(_INSERT_RUN, _row_dict(run) if isinstance(run, RunRow) else _from_dict(RunRow, run))

    def finish_run(self, run_id: str, **fields: Any) -> None:
        fields.setdefault("finished_at", utcnow())
        self._exec(update(RunRow).where(col(RunRow.id) == run_id).values(**_no_nul(fields, _TEXT_FIELDS[RunRow])))

    def run(self, run_id: str) -> RunRow | None:
        return self._first(select(RunRow).where(col(RunRow.id) == run_id))

    def runs(self, task: str | None = None, *, limit: int = 100, offset: int = 0) -> list[RunRow]:
        stmt = select(RunRow)
        if task:
            stmt = stmt.where(col(RunRow.task_name) == task)
        return self._all(stmt.order_by(col(RunRow.created_at).desc(), col(RunRow.id)).offset(offset).limit(limit))

    def insert_trace(self, trace: TraceRow | dict) -> None:
        """Write one attempt and commit it at once: a crash after this line loses nothing.

        A dict of TraceRow fields is accepted too (defaults filled in); it skips SQLModel's constructor, which
        costs ~0.1-0.2 ms per row.
        """
        self._exec(_INSERT_TRACE, _trace_row(trace))

    def record_attempt(self, trace: dict, *, run: dict | None = None, finish: dict | None = None) -> None:
        """The cascade's one write per attempt, in one transaction: the call's run row (first attempt), the
        attempt's trace, and the run's outcome (last attempt). Committed before the caller sees the answer."""
        trace_row = _from_dict(TraceRow, trace)
        run_row = _from_dict(RunRow, run) if run is not None else None
        if finish is not None:
            finish = _no_nul({"finished_at": utcnow(), **finish}, _TEXT_FIELDS[RunRow])

        def write() -> None:
            with self.engine.begin() as conn:
                if run_row is not None:
                    conn.execute(_INSERT_RUN, {**run_row, **(finish or {})})
                elif finish is not None:
                    conn.execute(update(RunRow).where(col(RunRow.id) == trace_row["run_id"]).values(**finish))
                conn.execute(_INSERT_TRACE, trace_row)

        self._retry(write)

    def insert_traces(self, traces: Iterable[TraceRow | dict], *, batch: int = 2000) -> int:
        """Bulk ingest (imports, benchmarks): one transaction per `batch` rows, each written by the driver's bulk
        path (executemany on SQLite, COPY on PostgreSQL; see bulk.py). A bad row fails its batch, none of whose
        rows are stored; the batches before it are."""
        n, chunk = 0, []
        for t in traces:
            chunk.append(t)
            if len(chunk) >= batch:
                n += self._insert_many(chunk)
                chunk = []
        return n + (self._insert_many(chunk) if chunk else 0)

    def _insert_many(self, traces: list[TraceRow | dict]) -> int:
        bulk = self._bulk_traces

        def write() -> None:
            with self.engine.begin() as conn:
                bulk.write(conn, traces, _trace_row)

        self._retry(write)
        return len(traces)

    @cached_property
    def _bulk_traces(self) -> BulkInsert:
        return BulkInsert(table_of(TraceRow), self.engine.dialect)

    def trace(self, trace_id: str) -> TraceRow | None:
        return self._first(select(TraceRow).where(col(TraceRow.id) == trace_id))

    def traces(
        self,
        task: str | None = None,
        *,
        tier: str | None = None,
        valid: bool | None = None,
        run_id: str | None = None,
        shadow: bool | None = None,
        limit: int | None = 100,
        offset: int = 0,
        oldest_first: bool = False,
        created_before: datetime | None = None,
        task_version: int | None = None,
    ) -> list[TraceRow]:
        """Traces, newest first (or oldest first), filtered; paged with limit/offset."""
        stmt = _trace_filter(select(TraceRow), task, tier, valid, run_id, shadow, task_version)
        if created_before is not None:
            stmt = stmt.where(col(TraceRow.created_at) < require_aware(created_before, "created_before"))
        order = col(TraceRow.created_at).asc() if oldest_first else col(TraceRow.created_at).desc()
        stmt = stmt.order_by(order, col(TraceRow.id)).offset(offset)
        return self._all(stmt.limit(limit) if limit is not None else stmt)

    def knows_task(self, name: str) -> bool:
        """Whether the store has the task: registered (a task row), or only its traces or skills (imported before)."""
        if self.task(name) is not None:
            return True
        for column in (TraceRow.task_name, SkillRow.task_name):
            if self._scalar(select(col(column)).where(col(column) == name).limit(1)) is not None:
                return True
        return False

    def unregistered_trace_counts(self) -> dict[str, int]:
        """Traces of task names no task row has (imported before their task was registered), per name."""
        registered = select(col(TaskRow.name))
        stmt = (
            select(col(TraceRow.task_name), func.count())
            .where(col(TraceRow.task_name).not_in(registered))
            .group_by(col(TraceRow.task_name))
        )
        return {name: int(n) for name, n in self._rows(stmt)}

    def answer_keys(self, task: str, tier: str) -> set[tuple[str, str]]:
        """(input hash, answer as canonical JSON) of the task's traces of `tier`: what a re-import would repeat."""
        stmt = select(col(TraceRow.input_hash), col(TraceRow.output)).where(
            col(TraceRow.task_name) == task, col(TraceRow.tier) == tier
        )
        return {(digest, answer_key(output)) for digest, output in self._rows(stmt)}

    def count_traces(
        self,
        task: str | None = None,
        *,
        tier: str | None = None,
        valid: bool | None = None,
        shadow: bool | None = None,
        run_id: str | None = None,
        task_version: int | None = None,
    ) -> int:
        stmt = _trace_filter(
            select(func.count()).select_from(TraceRow), task, tier, valid, run_id, shadow, task_version
        )
        return int(self._scalar(stmt))

    def count_dataset_traces(
        self,
        task: str,
        *,
        since: datetime | None = None,
        tiers: tuple[str, ...] = DATASET_TIERS,
        exclude_versions: Iterable[int] = (),
    ) -> int:
        """Valid traces of the tiers a dataset is built from (created after `since`; none of the task versions in
        `exclude_versions`, which a dataset leaves out): what a distill would see."""
        stmt = (
            select(func.count())
            .select_from(TraceRow)
            .where(col(TraceRow.task_name) == task, col(TraceRow.valid).is_(True), col(TraceRow.tier).in_(tiers))
        )
        excluded = list(exclude_versions)
        if excluded:
            stmt = stmt.where(col(TraceRow.task_version).not_in(excluded))
        if since is not None:
            stmt = stmt.where(col(TraceRow.created_at) > require_aware(since, "since"))
        return int(self._scalar(stmt))

    def dataset_traces(self, task: str, *, tiers: tuple[str, ...] = DATASET_TIERS) -> Iterator[dict]:
        """Stream a task's valid traces of `tiers` as plain dicts (oldest first), for the dataset builder.

        Left out: invalid attempts, traces whose latest reviewer label is 'bad', and every other trace with the
        same input and the same answer as one of those (a reviewer's "bad" judges the answer to that input: an
        imported copy of it was trained on) unless a copy's latest label is 'good'. Shadow teacher traces stay:
        they are valid teacher work.
        """
        latest_label = select(func.max(col(LabelRow.id))).group_by(col(LabelRow.trace_id))
        rejected = select(col(LabelRow.trace_id)).where(
            col(LabelRow.id).in_(latest_label), col(LabelRow.verdict) == "bad"
        )
        cols = [
            col(TraceRow.id),
            col(TraceRow.task_version),
            col(TraceRow.tier),
            col(TraceRow.model),
            col(TraceRow.input),
            col(TraceRow.input_hash),
            col(TraceRow.messages),
            col(TraceRow.tools),
            col(TraceRow.output),
            col(TraceRow.output_text),
            col(TraceRow.created_at),
        ]
        stmt = (
            select(*cols)
            .where(col(TraceRow.task_name) == task, col(TraceRow.valid).is_(True), col(TraceRow.tier).in_(tiers))
            .where(col(TraceRow.id).not_in(rejected))
            .order_by(col(TraceRow.created_at), col(TraceRow.id))
        )
        bad_answers = self._labelled_answers(rejected) - self._labelled_answers(  # a copy judged good since wins
            select(col(LabelRow.trace_id)).where(col(LabelRow.id).in_(latest_label), col(LabelRow.verdict) == "good")
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(stream_results=True, yield_per=5000).execute(stmt):
                if bad_answers and (row.input_hash, answer_key(row.output)) in bad_answers:
                    continue
                yield dict(row._mapping)

    def _labelled_answers(self, trace_ids: Any) -> set[tuple[str | None, str]]:
        """(input hash, answer as canonical JSON) of the traces `trace_ids` (a subquery) selects."""
        judged = select(col(TraceRow.input_hash), col(TraceRow.output)).where(col(TraceRow.id).in_(trace_ids))
        return {(digest, answer_key(output)) for digest, output in self._rows(judged)}

    # -- labels ------------------------------------------------------------------------------------------------

    def add_label(self, trace_id: str, verdict: str, *, reviewer: str = "", note: str | None = None) -> LabelRow:
        """Record a reviewer's verdict; the latest label of a trace is the one that counts."""
        if verdict not in ("good", "bad"):
            raise UserError(f"label verdict {verdict!r} must be 'good' or 'bad'")
        if self.trace(trace_id) is None:
            raise UserError(f"no trace {trace_id!r}; list traces with `protege traces`")
        return self._add(LabelRow(trace_id=trace_id, verdict=verdict, reviewer=reviewer, note=note))

    def labels(self, trace_id: str) -> list[LabelRow]:
        return self._all(select(LabelRow).where(col(LabelRow.trace_id) == trace_id).order_by(col(LabelRow.id)))

    # -- skills ------------------------------------------------------------------------------------------------

    def add_skill(self, row: SkillRow) -> SkillRow:
        """Insert a new immutable skill version (numbered after the task's newest)."""
        for attempt in range(COLLISION_RETRIES):  # each round of a race lets at least one writer through
            _backoff(attempt)
            latest = self.skill(row.task_name)
            row.version = (latest.version + 1) if latest else 1
            try:  # a fresh instance each try: model_copy() would share the ORM state of `row`
                return self._add(SkillRow(**row.model_dump(exclude={"id"})))
            except IntegrityError:
                continue
        raise StoreError(f"could not add a skill version for {row.task_name!r}: concurrent writers kept colliding")

    def skill(self, task: str, *, version: int | None = None, status: str | None = None) -> SkillRow | None:
        """The task's skill at `version`, or its newest (with `status`, if given)."""
        stmt = select(SkillRow).where(col(SkillRow.task_name) == task)
        if version is not None:
            stmt = stmt.where(col(SkillRow.version) == version)
        if status is not None:
            stmt = stmt.where(col(SkillRow.status) == status)
        return self._first(stmt.order_by(col(SkillRow.version).desc()).limit(1))

    def skills(self, task: str | None = None, *, status: str | None = None) -> list[SkillRow]:
        stmt = select(SkillRow)
        if task:
            stmt = stmt.where(col(SkillRow.task_name) == task)
        if status:
            stmt = stmt.where(col(SkillRow.status) == status)
        return self._all(stmt.order_by(col(SkillRow.task_name), col(SkillRow.version).desc()))

    def update_skill(self, skill_id: int, **fields: Any) -> SkillRow:
        return self._update(SkillRow, skill_id, fields)

    def search_skills(
        self,
        query: str,
        *,
        status: str | None = "approved",
        exclude_task: str | None = None,
        limit: int = 5,
    ) -> list[tuple[SkillRow, float]]:
        """Skills whose text matches free-text `query`, best first, with a score (higher is better).

        Any user text is safe (FTS syntax characters are not interpreted); no searchable word in it → [].
        Every matching version is a candidate: pass status=None to search drafts and retired versions too.
        """
        terms = query_terms(query)
        if not terms or limit <= 0:
            return []
        stmt = search_statement(self.dialect, terms)
        if status is not None:
            stmt = stmt.where(col(SkillRow.status) == status)
        if exclude_task is not None:
            stmt = stmt.where(col(SkillRow.task_name) != exclude_task)

        def run() -> list[tuple[SkillRow, float]]:
            with Session(self._auto, expire_on_commit=False) as s:
                return [(row, float(score)) for row, score in s.execute(stmt.limit(limit)).all()]

        return self._retry(run)

    # -- datasets and students ---------------------------------------------------------------------------------

    def add_dataset(self, row: DatasetRow) -> DatasetRow:
        return self._add(row)

    def dataset(self, dataset_id: str) -> DatasetRow | None:
        return self._first(select(DatasetRow).where(col(DatasetRow.id) == dataset_id))

    def datasets(self, task: str | None = None) -> list[DatasetRow]:
        stmt = select(DatasetRow)
        stmt = stmt.where(col(DatasetRow.task_name) == task) if task else stmt
        return self._all(stmt.order_by(col(DatasetRow.created_at).desc()))

    def add_student(self, row: StudentRow) -> StudentRow:
        return self._add(row)

    def student(self, student_id: str) -> StudentRow | None:
        return self._first(select(StudentRow).where(col(StudentRow.id) == student_id))

    def students(self, task: str | None = None, *, state: str | None = None) -> list[StudentRow]:
        stmt = select(StudentRow)
        if task:
            stmt = stmt.where(col(StudentRow.task_name) == task)
        if state:
            stmt = stmt.where(col(StudentRow.state) == state)
        return self._all(stmt.order_by(col(StudentRow.created_at).desc()))

    def promoted_student(self, task: str) -> StudentRow | None:
        """The task's promoted student (the most recently promoted, should several be marked promoted)."""
        stmt = select(StudentRow).where(col(StudentRow.task_name) == task, col(StudentRow.state) == "promoted")
        return self._first(stmt.order_by(col(StudentRow.promoted_at).desc()).limit(1))

    def update_student(self, student_id: str, **fields: Any) -> StudentRow:
        return self._update(StudentRow, student_id, fields)

    # -- shadows -----------------------------------------------------------------------------------------------

    def add_shadow(self, row: ShadowRow) -> ShadowRow:
        return self._add(row)

    def shadow_agreement(
        self, task: str, tier: str, *, window: int = 50, since: datetime | None = None
    ) -> tuple[float | None, int]:
        """Mean agreement of the last `window` shadow comparisons of a tier (after `since`), and how many."""
        stmt = select(col(ShadowRow.agreement)).where(col(ShadowRow.task_name) == task, col(ShadowRow.tier) == tier)
        if since is not None:
            stmt = stmt.where(col(ShadowRow.created_at) >= require_aware(since, "since"))
        stmt = stmt.order_by(col(ShadowRow.created_at).desc(), col(ShadowRow.id).desc()).limit(window)
        values = [v for (v,) in self._rows(stmt)]
        return (sum(values) / len(values) if values else None), len(values)

    def shadow_scores(self, task: str, tier: str, *, since: datetime | None = None, limit: int = 500) -> list[float]:
        """The agreements of a tier's last `limit` shadow comparisons (after `since`), oldest first."""
        stmt = select(col(ShadowRow.agreement)).where(col(ShadowRow.task_name) == task, col(ShadowRow.tier) == tier)
        if since is not None:
            stmt = stmt.where(col(ShadowRow.created_at) >= require_aware(since, "since"))
        stmt = stmt.order_by(col(ShadowRow.created_at).desc(), col(ShadowRow.id).desc()).limit(limit)
        return [v for (v,) in reversed(self._rows(stmt))]

    # -- ledger ------------------------------------------------------------------------------------------------

    def ledger(self, task: str) -> Ledger:
        """Spend by tier (every attempt, failed and shadow ones included) vs the teacher-only counterfactual.

        Teacher-only = served calls x the mean cost of a valid, non-shadow teacher attempt of this task (None until
        the teacher has answered once), plus what the teacher's attempts cost on the calls that failed: those
        fail without protege too, at the same price. Counted at the mean, a failed call read as savings (one
        failure in three: 33% saved with every served call the teacher's); left out, it read as a loss. Imported
        traces' costs were spent before protege: apart (`imported_usd`), in neither figure.
        """
        by_tier = self._rows(
            select(col(TraceRow.tier), func.sum(col(TraceRow.cost_usd)))
            .where(col(TraceRow.task_name) == task)
            .group_by(col(TraceRow.tier))
        )
        failed_teacher = self._scalar(
            select(func.sum(col(TraceRow.cost_usd)))
            .join(RunRow, col(RunRow.id) == col(TraceRow.run_id))
            .where(
                col(TraceRow.task_name) == task,
                col(TraceRow.tier) == "teacher",
                col(TraceRow.shadow).is_(False),
                col(RunRow.status) != "ok",
            )
        )
        served = self._rows(
            select(col(RunRow.tier), func.count())
            .where(col(RunRow.task_name) == task, col(RunRow.status) == "ok")
            .group_by(col(RunRow.tier))
        )
        calls = self._scalar(select(func.count()).select_from(RunRow).where(col(RunRow.task_name) == task))
        teacher_mean = self._scalar(
            select(func.avg(col(TraceRow.cost_usd))).where(
                col(TraceRow.task_name) == task,
                col(TraceRow.tier) == "teacher",
                col(TraceRow.valid).is_(True),
                col(TraceRow.shadow).is_(False),
            )
        )
        # to a ten-billionth of a dollar: sums of float costs otherwise read as savings of 1.4e-17 in --json
        spend = {tier: round(float(cost or 0.0), USD_DIGITS) for tier, cost in by_tier}
        imported = spend.pop("import", 0.0)
        total = round(sum(spend.values()), USD_DIGITS)
        answered = sum(int(n) for tier, n in served if tier)
        teacher_only = (
            round(float(teacher_mean) * answered + float(failed_teacher or 0.0), USD_DIGITS)
            if teacher_mean is not None
            else None
        )
        savings = round(teacher_only - total, USD_DIGITS) if teacher_only is not None else None
        return Ledger(
            task=task,
            calls=int(calls),
            calls_by_tier={t or "failed": int(n) for t, n in served},
            spend_by_tier=spend,
            total_usd=total,
            teacher_only_usd=teacher_only,
            savings_usd=savings,
            savings_ratio=(savings / teacher_only) if savings is not None and teacher_only else None,
            imported_usd=imported,
        )


def _trace_filter(
    stmt: _Select,
    task: str | None,
    tier: str | None,
    valid: bool | None,
    run_id: str | None,
    shadow: bool | None,
    task_version: int | None = None,
) -> _Select:
    if task:
        stmt = stmt.where(col(TraceRow.task_name) == task)
    if tier:
        stmt = stmt.where(col(TraceRow.tier) == tier)
    if valid is not None:
        stmt = stmt.where(col(TraceRow.valid).is_(valid))
    if run_id:
        stmt = stmt.where(col(TraceRow.run_id) == run_id)
    if shadow is not None:
        stmt = stmt.where(col(TraceRow.shadow).is_(shadow))
    if task_version is not None:
        stmt = stmt.where(col(TraceRow.task_version) == task_version)
    return stmt


def _defaults(table: type[SQLModel]) -> dict[str, Any]:
    """Column defaults of a hot-path table, made once (id and created_at are made per row)."""
    return {
        name: f.get_default(call_default_factory=True)
        for name, f in table.model_fields.items()
        if name not in ("id", "created_at") and not f.is_required()
    }


_HOT_TABLES: tuple[type[SQLModel], ...] = (RunRow, TraceRow)
_DEFAULTS = {t: _defaults(t) for t in _HOT_TABLES}
_REQUIRED = {t: [n for n, f in t.model_fields.items() if f.is_required()] for t in _HOT_TABLES}


def _from_dict(table: type[SQLModel], data: dict[str, Any]) -> dict[str, Any]:
    """A plain dict row (bulk ingest, or a caller skipping the model's slow constructor), checked and completed."""
    fields = table.model_fields
    unknown = data.keys() - fields.keys()
    if unknown:
        raise UserError(f"{table.__tablename__} fields {sorted(unknown)!r} are not columns; use {sorted(fields)!r}")
    missing = [n for n in _REQUIRED[table] if n not in data]
    if missing:
        raise UserError(f"{table.__tablename__} row with fields {sorted(data)!r} lacks required fields {missing!r}")
    row = _no_nul({**_DEFAULTS[table], **data}, _TEXT_FIELDS[table])
    if not row.get("id"):
        row["id"] = new_id()
    if row.get("created_at") is None:
        row["created_at"] = utcnow()
    else:
        require_aware(row["created_at"], f"{table.__tablename__} created_at")
    return row


def _trace_row(trace: TraceRow | dict) -> dict[str, Any]:
    return _row_dict(trace) if isinstance(trace, TraceRow) else _from_dict(TraceRow, trace)


def _row_dict(row: SQLModel) -> dict[str, Any]:
    values = {name: getattr(row, name) for name in type(row).model_fields}
    return _no_nul(values, _TEXT_FIELDS[type(row)]) if type(row) in _TEXT_FIELDS else values


def _text_fields(table: type[SQLModel]) -> frozenset[str]:
    return frozenset(c.name for c in table_of(table).columns if isinstance(c.type, (String, AutoString)))


_TEXT_FIELDS = {t: _text_fields(t) for t in _HOT_TABLES}


def _no_nul(values: dict, text_fields: frozenset[str]) -> dict:
    """Text columns of runs and traces never hold NUL: PostgreSQL refuses it, and a refused insert would lose a
    paid attempt. It becomes U+FFFD there, on both databases; JSON columns keep it exactly (escaped as \\u0000)."""
    for name in text_fields:
        value = values.get(name)
        if type(value) is str and "\x00" in value:
            values[name] = value.replace("\x00", "\ufffd")
    return values


def _same_contract(row: TaskRow, contract_hash: str, input_schema: dict, output_schema: dict, text: str) -> bool:
    """The recorded version's contract, or one its instructions only reflow (whitespace inside paragraphs): a
    reworded docstring retires the task's student and skill (services/contract_change), a re-wrapped one must not.
    The row keeps its first hash and text, so processes of either wording agree on the version."""
    if row.contract_hash == contract_hash:
        return True
    return (
        row.input_schema == input_schema and row.output_schema == output_schema and same_wording(row.instructions, text)
    )


def _backoff(attempt: int) -> None:
    """After a collision, wait a little (random, growing) so racing writers spread out."""
    if attempt:
        time.sleep(random.uniform(0, 0.002 * min(attempt, 10)))


__all__ = ["DATASET_TIERS", "SQLITE_BUSY_TIMEOUT_MS", "Ledger", "OperationalError", "Store"]
