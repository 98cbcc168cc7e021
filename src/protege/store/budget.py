"""Queries for the teacher budget (part of `Store`): each scope's spend per day, and the reservations in flight.

A scope's day row (`budget`) keeps what is settled (`spent_usd`) and what the calls in flight reserved
(`reserved_usd`); each reservation is also a row of its own (`budget_hold`) naming its owner process and a lease.
A cap counts both. Reserving, settling and releasing each change the day rows and the hold rows in one
transaction, so a process killed at any moment leaves its reservation whole or not at all; the next reservation
(any process) releases the holds of an owner that is gone (this host, pid not running) or whose lease ran out.

Locks are taken in one order — the day rows by scope name, each hold row before its day row — so concurrent
reservations, settlements and releases never deadlock on PostgreSQL; on SQLite each transaction's first statement
is a write, so it takes the database's write lock at once instead of upgrading a read lock (which fails at once).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from protege.store.background import BackgroundQueries, owner_gone, process_owner
from protege.store.models import BudgetHoldRow, BudgetRow, new_id, utcnow

log = logging.getLogger(__name__)
STALE_SWEEP_S = 10.0  # between looks for a dead process's holds (a refusal always looks first)
HOLD_LEASE_S = 900.0  # past any one model request (60 s timeouts, a few retries); frees a dead host's holds
CAP_SLACK = 1e-12  # float sums of reservations may land a hair over a cap they meet exactly
ALL_TASKS = "*"


@dataclass(frozen=True)
class BudgetHold:
    """A granted reservation of `amount` against each of `scopes` on `day`; settle or release it when done."""

    id: str
    day: str
    amount: float
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class BudgetRefusal:
    """A reservation a cap refused, with the figures it was decided on (under the row's lock)."""

    scope: str
    cap: float
    spent: float  # settled
    reserved: float  # by the calls in flight, before this one
    amount: float  # what this reservation asked for

    @property
    def committed(self) -> float:
        return self.spent + self.reserved


@dataclass(frozen=True)
class BudgetState:
    """A scope's day: settled spend, what the calls in flight reserved, and how many reservations that is."""

    scope: str
    day: str
    spent_usd: float
    reserved_usd: float
    holds: int


class _Undo(Exception):
    """Leave a reservation's transaction by rolling it back, carrying what to return."""

    def __init__(self, outcome: Any):
        self.outcome = outcome


_NO_DAY_ROW = object()
_HOLD_COLUMNS = (
    col(BudgetHoldRow.id),
    col(BudgetHoldRow.task_name),
    col(BudgetHoldRow.day),
    col(BudgetHoldRow.amount_usd),
    col(BudgetHoldRow.owner),
    col(BudgetHoldRow.expires_at),
)


class BudgetQueries(BackgroundQueries):
    """The teacher budget; `Store` inherits these."""

    def reserve_budget(
        self,
        amount: float,
        caps: Mapping[str, float | None],
        *,
        day: str | None = None,
        owner: str | None = None,
        lease_s: float = HOLD_LEASE_S,
    ) -> BudgetHold | BudgetRefusal:
        """Reserve `amount` against every scope of `caps` at once (a None cap: counted, never refused), or none.

        Releases the holds of dead owners first (on this store's first reservation, then at most every
        STALE_SWEEP_S, and before any refusal), so a killed process's reservations stop counting against the cap
        without every call reading every hold.
        """
        swept = self._sweep_stale_holds(force=False)
        hold = BudgetHold(new_id(), day or today(), amount, tuple(sorted(caps)))
        expires = utcnow() + timedelta(seconds=lease_s)
        outcome = self._reserve(hold, caps, owner or process_owner(), expires)
        if isinstance(outcome, BudgetRefusal) and not swept and self._sweep_stale_holds(force=True):
            outcome = self._reserve(hold, caps, owner or process_owner(), expires)  # what a dead process held
        return outcome

    def _sweep_stale_holds(self, *, force: bool) -> bool:
        """Release stale holds when due (or `force`); whether a sweep ran."""
        now = time.monotonic()
        if not force and now - getattr(self, "_swept_at", -math.inf) < STALE_SWEEP_S:
            return False
        self._swept_at = now
        self.release_stale_holds()
        return True

    def _reserve(self, hold: BudgetHold, caps: Mapping[str, float | None], owner: str, expires: datetime) -> Any:
        for _ in range(3):  # the day rows are made on a scope's first reservation of the day
            outcome = self._retry(lambda: self._take(hold, caps, owner, expires))
            if outcome is not _NO_DAY_ROW:
                return outcome  # a hold or a refusal
            self._make_day_rows(hold.scopes, hold.day)
        raise AssertionError("budget day rows vanished while reserving")  # pragma: no cover - rows are never deleted

    def _take(self, hold: BudgetHold, caps: Mapping[str, float | None], owner: str, expires: datetime) -> Any:
        """One transaction: add the amount to each scope's reserved total, read back under the row's lock, and
        keep it only if every cap still holds; the hold rows are written in the same transaction."""
        try:
            with self.engine.begin() as conn:
                for scope in hold.scopes:
                    self._add_reserved(conn, hold, scope, caps[scope])
                conn.execute(insert(BudgetHoldRow), [_hold_row(hold, s, owner, expires) for s in hold.scopes])
        except _Undo as undo:
            return undo.outcome
        return hold

    @staticmethod
    def _add_reserved(conn: Connection, hold: BudgetHold, scope: str, cap: float | None) -> None:
        stmt = (
            update(BudgetRow)
            .where(col(BudgetRow.task_name) == scope, col(BudgetRow.day) == hold.day)
            .values(reserved_usd=col(BudgetRow.reserved_usd) + hold.amount)
            .returning(col(BudgetRow.spent_usd), col(BudgetRow.reserved_usd))
        )
        row = conn.execute(stmt).first()
        if row is None:
            raise _Undo(_NO_DAY_ROW)
        spent, reserved = float(row[0]), float(row[1])
        if cap is not None and spent + reserved > cap + CAP_SLACK:
            raise _Undo(BudgetRefusal(scope, cap, spent, reserved - hold.amount, hold.amount))

    def _make_day_rows(self, scopes: Sequence[str], day: str) -> None:
        for scope in scopes:
            try:
                self._exec(insert(BudgetRow), {"task_name": scope, "day": day, "spent_usd": 0.0, "reserved_usd": 0.0})
            except IntegrityError:
                pass  # there already, or another writer made it first

    def settle_budget(self, hold: BudgetHold, cost: float) -> None:
        """End a reservation: its amount leaves the reserved total and `cost` (what the call was billed) joins the
        settled spend. A hold released meanwhile (its lease ran out) had its amount taken off already."""

        def settle() -> None:
            with self.engine.begin() as conn:
                for scope in hold.scopes:
                    _end_hold(conn, hold.id, scope, hold.day, cost)

        self._retry(settle)

    def release_budget(self, hold: BudgetHold) -> None:
        """End a reservation nothing was billed for."""
        self.settle_budget(hold, 0.0)

    def release_stale_holds(self) -> float:
        """Release the holds whose owner process is gone or whose lease ran out, logged once per owner by the
        process that released them; returns the amount released."""
        now, gone = utcnow(), dict[str, bool]()
        stale: dict[str, list[Any]] = {}  # by reservation, its scopes in name order (the order locks are taken)
        for row in self._rows(select(*_HOLD_COLUMNS).order_by(col(BudgetHoldRow.id), col(BudgetHoldRow.task_name))):
            if row.owner not in gone:
                gone[row.owner] = owner_gone(row.owner)
            if gone[row.owner] or _lapsed(row.expires_at, now):
                stale.setdefault(row.id, []).append(row)
        released: dict[str, list[list[Any]]] = {}  # by owner: the reservations this process released
        for rows in stale.values():
            mine = self._release_holds(rows)
            if mine:
                released.setdefault(rows[0].owner, []).append(mine)
        for owner, reservations in released.items():
            _log_released(owner, reservations, gone=gone[owner])
        return sum(float(rows[0].amount_usd) for reservations in released.values() for rows in reservations)

    def _release_holds(self, rows: list[Any]) -> list[Any]:
        """Release one reservation's holds (its scopes, in one transaction); those this process released (another
        one may have been first)."""

        def release() -> list[Any]:
            with self.engine.begin() as conn:
                return [r for r in rows if _end_hold(conn, r.id, r.task_name, r.day, 0.0)]

        return self._retry(release)

    def spent(self, scope: str, *, day: str | None = None) -> float:
        """What counts against the scope's cap on `day` (default today, UTC): settled spend plus live reservations."""
        stmt = select(col(BudgetRow.spent_usd) + col(BudgetRow.reserved_usd)).where(
            col(BudgetRow.task_name) == scope, col(BudgetRow.day) == (day or today())
        )
        return _usd(self._scalar(stmt) or 0.0)

    def budget(self, *, day: str | None = None) -> list[BudgetState]:
        """Every scope's teacher budget on `day` (default today, UTC), by scope: for operators and `protege stats`."""
        day = day or today()
        holds = dict(
            self._rows(
                select(col(BudgetHoldRow.task_name), func.count())
                .where(col(BudgetHoldRow.day) == day)
                .group_by(col(BudgetHoldRow.task_name))
            )
        )
        stmt = select(col(BudgetRow.task_name), col(BudgetRow.spent_usd), col(BudgetRow.reserved_usd)).where(
            col(BudgetRow.day) == day
        )
        return [
            BudgetState(scope, day, _usd(spent), max(_usd(reserved), 0.0), int(holds.get(scope, 0)))
            for scope, spent, reserved in sorted(self._rows(stmt))
        ]

    def budget_holds(self) -> list[BudgetHoldRow]:
        """The reservations of the calls in flight (or of dead processes, until the next reservation)."""
        return self._all(select(BudgetHoldRow).order_by(col(BudgetHoldRow.created_at), col(BudgetHoldRow.id)))


def _hold_row(hold: BudgetHold, scope: str, owner: str, expires: datetime) -> dict[str, Any]:
    return {
        "id": hold.id,
        "task_name": scope,
        "day": hold.day,
        "amount_usd": hold.amount,
        "owner": owner,
        "expires_at": expires,
        "created_at": utcnow(),
    }


def _end_hold(conn: Connection, hold_id: str, scope: str, day: str, cost: float) -> bool:
    """Delete a hold and move its amount out of the reserved total (`cost` into the settled one); False when the
    hold was gone already (released by another process), whose amount left the total then."""
    amount = conn.execute(
        delete(BudgetHoldRow)
        .where(col(BudgetHoldRow.id) == hold_id, col(BudgetHoldRow.task_name) == scope)
        .returning(col(BudgetHoldRow.amount_usd))
    ).scalar()
    ended = amount is not None
    if ended or cost:
        values: dict[str, Any] = {"spent_usd": col(BudgetRow.spent_usd) + cost}
        if ended:
            values["reserved_usd"] = col(BudgetRow.reserved_usd) - amount
        conn.execute(
            update(BudgetRow).where(col(BudgetRow.task_name) == scope, col(BudgetRow.day) == day).values(**values)
        )
    return ended


def _log_released(owner: str, reservations: list[list[Any]], *, gone: bool) -> None:
    total = sum(float(rows[0].amount_usd) for rows in reservations)  # a reservation's amount, whatever its scopes
    what = (
        f"a teacher budget reservation of ${total:.4f}"
        if len(reservations) == 1
        else f"{len(reservations)} teacher budget reservations, ${total:.4f} in all,"
    )
    scopes = _scopes(sorted({row.task_name for rows in reservations for row in rows}))
    why = (
        "its process is gone (killed mid-call?)"
        if gone
        else "its lease ran out (a process on another host that died, or a call that hung)"
    )
    log.warning("released %s on %s held by %s: %s", what, scopes, owner, why)


def _usd(value: float) -> float:
    """To a ten-billionth of a dollar: adding and taking off reservations leaves float dust (1e-17) behind."""
    return round(float(value), 10)


def _lapsed(expires_at: datetime, now: datetime) -> bool:
    if expires_at.tzinfo is None:  # SQLite hands back naive UTC on some paths
        expires_at = expires_at.replace(tzinfo=UTC)
    return expires_at < now


def _scopes(names: Any) -> str:
    return ", ".join("all tasks" if n == ALL_TASKS else f"task {n!r}" for n in names)


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")
