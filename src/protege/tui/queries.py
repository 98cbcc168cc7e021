"""What the review console reads, as plain functions over a `Store` (no Textual here, so they test alone).

Most reads are the Store's own queries (ledger, count_traces, traces, shadow_agreement). Three are not in the
Store's API and are built here on its engine: task names seen in traces, calls per tier per day/hour (the
dashboard chart) and a trace page sorted by a column other than the date. All are bounded: the console never
loads every trace, only a page of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Mapped
from sqlmodel import col

from protege.store import Ledger, RunRow, Store, TraceRow

TRACE_SORTS: dict[str, Mapped[Any]] = {
    "task": col(TraceRow.task_name),
    "tier": col(TraceRow.tier),
    "model": col(TraceRow.model),
    "valid": col(TraceRow.valid),
    "date": col(TraceRow.created_at),
    "cost": col(TraceRow.cost_usd),
}
CHEAP_TIERS = ("replay", "student", "program")
HOURLY_UP_TO = timedelta(hours=48)  # a shorter history is charted per hour, a longer one per day


def task_names(store: Store) -> list[str]:
    """Registered tasks plus any task that only has traces (imports), sorted."""
    with store.engine.connect() as conn:
        traced = {name for (name,) in conn.execute(select(col(TraceRow.task_name)).distinct())}
    return sorted(traced | {t.name for t in store.tasks()})


@dataclass(frozen=True)
class TaskStats:
    """One dashboard row: the ledger plus validity and shadow agreement of the cheaper tiers."""

    task: str
    ledger: Ledger
    attempts: int
    valid_attempts: int
    agreement: dict[str, tuple[float | None, int]] = field(default_factory=dict)

    @property
    def valid_rate(self) -> float | None:
        return self.valid_attempts / self.attempts if self.attempts else None

    @property
    def mean_agreement(self) -> float | None:
        """Agreement over both cheaper tiers, weighted by how many comparisons each has."""
        pairs = [(mean, n) for mean, n in self.agreement.values() if mean is not None and n]
        total = sum(n for _, n in pairs)
        return sum(mean * n for mean, n in pairs) / total if total else None


def task_stats(store: Store, task: str) -> TaskStats:
    return TaskStats(
        task=task,
        ledger=store.ledger(task),
        attempts=store.count_traces(task),
        valid_attempts=store.count_traces(task, valid=True),
        agreement={tier: store.shadow_agreement(task, tier) for tier in CHEAP_TIERS},
    )


@dataclass(frozen=True)
class TierSeries:
    """Calls per tier in consecutive buckets (oldest first); `unit` is 'day' or 'hour'."""

    unit: str
    labels: list[str]
    counts: list[dict[str, int]]

    @property
    def tiers(self) -> list[str]:
        seen = {tier for bucket in self.counts for tier in bucket}
        order = ["program", "student", "replay", "teacher", "import", "failed"]
        return [t for t in order if t in seen] + sorted(seen - set(order))


def calls_over_time(store: Store, task: str, *, max_buckets: int = 60) -> TierSeries:
    """Calls of `task` per serving tier per day (or hour, for a short history); the newest `max_buckets`."""
    where = col(RunRow.task_name) == task
    with store.engine.connect() as conn:
        created = col(RunRow.created_at)
        lo, hi = conn.execute(select(func.min(created), func.max(created)).where(where)).one()
        if lo is None:
            return TierSeries("day", [], [])
        lo, hi = _aware(lo), _aware(hi)
        unit = "hour" if hi - lo <= HOURLY_UP_TO else "day"
        bucket = _bucket(store.dialect, unit).label("bucket")
        stmt = select(bucket, col(RunRow.tier), func.count()).where(where).group_by(bucket, col(RunRow.tier))
        found: dict[str, dict[str, int]] = {}
        for label, tier, n in conn.execute(stmt):
            found.setdefault(str(label), {})[tier or "failed"] = int(n)
    labels = _bucket_labels(lo, hi, unit, max_buckets)
    return TierSeries(unit, labels, [found.get(label, {}) for label in labels])


def _bucket(dialect: str, unit: str) -> ColumnElement[str]:
    if dialect == "postgresql":
        fmt = "YYYY-MM-DD HH24:00" if unit == "hour" else "YYYY-MM-DD"
        return func.to_char(func.timezone("UTC", col(RunRow.created_at)), fmt)
    return func.strftime("%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d", col(RunRow.created_at))


def _bucket_labels(lo: datetime, hi: datetime, unit: str, max_buckets: int) -> list[str]:
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    fmt = "%Y-%m-%d %H:00" if unit == "hour" else "%Y-%m-%d"
    start = lo.replace(minute=0, second=0, microsecond=0)
    if unit == "day":
        start = start.replace(hour=0)
    end = hi.replace(minute=0, second=0, microsecond=0) if unit == "hour" else hi
    count = int((end - start) / step) + 1
    first = max(0, count - max_buckets)
    return [(start + step * i).strftime(fmt) for i in range(first, count)]


def _aware(value: datetime | str) -> datetime:
    if isinstance(value, str):  # SQLite hands min()/max() of a datetime column back as text
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TraceQuery:
    """The trace table's filters and sort order."""

    task: str | None = None
    tier: str | None = None
    valid: bool | None = None
    sort: str = "date"
    descending: bool = True

    def __post_init__(self) -> None:
        if self.sort not in TRACE_SORTS:
            raise ValueError(f"trace sort {self.sort!r} is not one of {sorted(TRACE_SORTS)!r}")


def count_traces(store: Store, q: TraceQuery) -> int:
    return store.count_traces(q.task, tier=q.tier, valid=q.valid)


def trace_page(store: Store, q: TraceQuery, *, limit: int, offset: int, total: int | None = None) -> list[TraceRow]:
    """One page of traces in the query's order.

    By date, near the start, it is `Store.traces`. Another sort orders only the ids (narrow rows sort fast), then
    loads that page's rows. Past the middle (when `total` is given) the page is read from the other end in the
    exactly reversed order, so the last page costs what the first does instead of an OFFSET over every row.
    """
    if total is not None and offset > total // 2:
        end = min(offset + limit, total)
        ids = _page_ids(
            store,
            replace(q, descending=not q.descending),
            limit=max(0, end - offset),
            offset=max(0, total - end),
            ids_descending=True,
        )
        return _rows_by_id(store, ids[::-1])
    if q.sort == "date":
        return store.traces(
            q.task, tier=q.tier, valid=q.valid, limit=limit, offset=offset, oldest_first=not q.descending
        )
    return _rows_by_id(store, _page_ids(store, q, limit=limit, offset=offset))


def _page_ids(store: Store, q: TraceQuery, *, limit: int, offset: int, ids_descending: bool = False) -> list[str]:
    """Ids of one page, ordered by the sort column, then the date (same direction), then the id (the tie-break
    `Store.traces` uses: ascending, or descending to walk the same order backwards)."""
    column = TRACE_SORTS[q.sort]
    keys = [column] if q.sort == "date" else [column, col(TraceRow.created_at)]
    order = [k.desc() if q.descending else k.asc() for k in keys]
    order.append(col(TraceRow.id).desc() if ids_descending else col(TraceRow.id).asc())
    stmt = select(col(TraceRow.id))
    for clause in _filters(q):
        stmt = stmt.where(clause)
    with store.engine.connect() as conn:
        return list(conn.scalars(stmt.order_by(*order).offset(offset).limit(limit)))


def _rows_by_id(store: Store, ids: list[str]) -> list[TraceRow]:
    if not ids:
        return []
    with store.session() as s:
        rows = {row.id: row for row in s.scalars(select(TraceRow).where(col(TraceRow.id).in_(ids)))}
    return [rows[i] for i in ids if i in rows]


def _filters(q: TraceQuery) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if q.task:
        clauses.append(col(TraceRow.task_name) == q.task)
    if q.tier:
        clauses.append(col(TraceRow.tier) == q.tier)
    if q.valid is not None:
        clauses.append(col(TraceRow.valid).is_(q.valid))
    return clauses


def latest_labels(store: Store, trace_ids: list[str]) -> dict[str, str]:
    """The latest verdict of each of these traces (the one that counts), by trace id."""
    from protege.store import LabelRow

    if not trace_ids:
        return {}
    trace_id = col(LabelRow.trace_id)
    stmt = select(trace_id, col(LabelRow.verdict)).where(trace_id.in_(trace_ids)).order_by(col(LabelRow.id))
    with store.engine.connect() as conn:
        return {tid: verdict for tid, verdict in conn.execute(stmt)}
