"""Every error protege raises descends from `ProtegeError`.

Two families below it: `UserError` (the caller's mistake: fix the code or config) and `RunError` (something
failed while running: a provider, a validation, a budget). Messages name the bad value with ``!r`` and say
what to do next; structured attributes carry the details for code that handles them.
"""

from __future__ import annotations

from typing import Any


class ProtegeError(Exception):
    """Root of every error protege raises."""


class UserError(ProtegeError):
    """Misuse of the API or bad configuration: the message says how to fix it."""


class MissingKeyError(UserError):
    """A provider needs an API key that is not set."""

    def __init__(self, provider: str, env_var: str, *, role: str | None = None, spec: str | None = None):
        self.provider = provider
        self.env_var = env_var
        self.role = role
        if role is None:
            message = (
                f"{provider} needs an API key: set {env_var}, or run offline with a local model "
                f"(teacher=ReferenceModel(...) or 'local:<path>'); `protege demo` runs fully offline."
            )
        else:  # which of the app's models it is: the default replay model surprises people who set a teacher only
            message = (
                f"the {role} model {spec!r} needs an API key: set {env_var}, or give "
                f"Protege({role}=...) a model that runs offline (FunctionModel, ReferenceModel or 'local:<path>')"
            )
        super().__init__(message)


class LocalModelUnavailable(UserError):
    """A local model cannot be loaded: its files are missing or are no checkpoint (raised when the model is
    built), or its engine's package is not installed (llama-cpp-python: raised on its first call). A UserError
    where a caller names the model; the cascade's student tier escalates instead (warned once per task), since a
    student that cannot load must not fail the calls a replay or teacher can answer."""


class RunError(ProtegeError):
    """A failure while running a call, a distillation or a store operation."""


class ModelError(RunError):
    """A model provider failed: status and body carry what it said.

    `usage` (a protege `Usage`) is set when the provider answered, and so billed, but the answer could not be used
    (an unreadable body, tool arguments that are not JSON): the budget and the ledger charge it. `None`: nothing
    was billed.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str = "",
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
        usage: Any = None,
    ):
        self.model = model
        self.status = status
        self.body = body
        self.retry_after = retry_after  # seconds the provider asked for (its Retry-After header), if it said
        self.usage = usage
        super().__init__(message)


class RateLimited(ModelError):
    """The provider answered 429 after the SDK's own retries; `retry_after` is what it asked to wait, if it said."""


class Overloaded(ModelError):
    """The provider is overloaded (529/503) after the SDK's own retries."""


class ModelTimeout(ModelError):
    """The provider did not answer in time."""


class BadResponse(ModelError):
    """The provider's answer could not be read (a malformed body, tool arguments that are not JSON, differing final
    answers); `usage` is what it was billed, read from the answer or estimated."""


class ValidationFailed(RunError):
    """An answer did not parse into the task's output model, or failed its `check`."""

    def __init__(self, message: str, *, errors: list[str] | None = None, text: str = "", tier: str = ""):
        self.errors = list(errors or [])
        self.text = text
        self.tier = tier
        super().__init__(message)


class ToolError(RunError):
    """A task tool raised or timed out; the loop reports it back to the model."""


class BudgetExceeded(RunError):
    """Teacher spend would pass a cap; the call was refused before spending."""

    def __init__(self, message: str, *, task: str = "", scope: str = "", spent: float = 0.0, cap: float = 0.0):
        self.task = task
        self.scope = scope
        self.spent = spent
        self.cap = cap
        super().__init__(message)


class AllTiersFailed(RunError):
    """Every tier tried for a call failed; `attempts` lists what each one did."""

    def __init__(self, message: str, *, run_id: str = "", attempts: list[Any] | None = None):
        self.run_id = run_id
        self.attempts = list(attempts or [])
        super().__init__(message)


class StoreError(RunError):
    """The store could not be opened, migrated or written."""


class TrainingError(RunError):
    """Building a dataset, training or evaluating a student failed."""


__all__ = [
    "AllTiersFailed",
    "BadResponse",
    "BudgetExceeded",
    "LocalModelUnavailable",
    "MissingKeyError",
    "ModelError",
    "ModelTimeout",
    "Overloaded",
    "ProtegeError",
    "RateLimited",
    "RunError",
    "StoreError",
    "ToolError",
    "TrainingError",
    "UserError",
    "ValidationFailed",
]
