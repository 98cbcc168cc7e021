"""protege: an expensive teacher solves a task once; skills, replays and a distilled student take over the repeats.

Public API re-exports only; nothing heavy is imported here (torch, transformers and textual load lazily).
"""

from typing import Any

from protege.errors import (
    AllTiersFailed,
    BudgetExceeded,
    MissingKeyError,
    ModelError,
    ProtegeError,
    RateLimited,
    RunError,
    UserError,
    ValidationFailed,
)
from protege.tasks import Policy, read_only
from protege.version import __version__

__all__ = [
    "AllTiersFailed",
    "BudgetExceeded",
    "MissingKeyError",
    "ModelError",
    "Policy",
    "Protege",
    "ProtegeError",
    "RateLimited",
    "RunError",
    "RunResult",
    "UserError",
    "ValidationFailed",
    "__version__",
    "read_only",
]


def __getattr__(name: str) -> Any:  # the facade pulls in langgraph; load it on first use
    if name in ("Protege", "RunResult"):
        from protege import app

        return getattr(app, name)
    raise AttributeError(f"module 'protege' has no attribute {name!r}")
