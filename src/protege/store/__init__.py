"""The store: SQLModel tables and the `Store` that reads and writes them (knows nothing of the rest)."""

from protege.store.budget import BudgetHold, BudgetRefusal, BudgetState
from protege.store.models import (
    DatasetRow,
    JobRow,
    LabelRow,
    LeaseRow,
    RunRow,
    ShadowRow,
    SkillRow,
    StudentRow,
    TaskRow,
    TraceRow,
)
from protege.store.store import Ledger, Store

__all__ = [
    "BudgetHold",
    "BudgetRefusal",
    "BudgetState",
    "DatasetRow",
    "JobRow",
    "LabelRow",
    "LeaseRow",
    "Ledger",
    "RunRow",
    "ShadowRow",
    "SkillRow",
    "Store",
    "StudentRow",
    "TaskRow",
    "TraceRow",
]
