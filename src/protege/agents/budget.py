"""The teacher budget guard: a model proxy that reserves spend before each request and settles after.

The reservation is the most a request can cost (its prompt tokens plus `max_tokens` of output at the
teacher's prices), taken atomically in the store against every cap, so concurrent calls in any number of
processes can never pass a cap together. After the response the reservation is settled to the real cost, also
for an answer that was billed but could not be used (`ModelError.usage`); only a request nothing was billed for
releases it.
"""

from __future__ import annotations

from typing import Any

from protege.agents.models.base import Model, ModelRequest, ModelResponse, Usage
from protege.errors import BudgetExceeded, ModelError
from protege.store import Store

ALL_TASKS = "*"


class BudgetedModel:
    """Wraps the teacher for one task; raises BudgetExceeded before spending past a cap."""

    writes_prose = True

    def __init__(self, inner: Model, store: Store, task: str, caps: dict[str, float | None], prices: Any):
        self.inner = inner
        self.name = inner.name
        self.price_as = getattr(inner, "price_as", None)
        self.writes_prose = getattr(inner, "writes_prose", False)
        self.store = store
        self.task = task
        self.caps = {scope: cap for scope, cap in caps.items() if cap is not None}
        self.prices = prices

    def _cost(self, usage: Usage) -> float:
        return self.prices.cost(self.price_as or self.name, usage)

    def _worst_case(self, req: ModelRequest) -> float:
        from protege.agents.tokens import count_tokens

        text = "".join(m.content for m in req.messages) + str(req.output_schema or "") + str(req.tools)
        return self._cost(Usage(input_tokens=count_tokens(text), output_tokens=req.max_tokens))

    async def request(self, req: ModelRequest) -> ModelResponse:
        if not self.caps:
            return await self.inner.request(req)
        reserved = self._worst_case(req)
        taken: list[str] = []
        for scope, cap in self.caps.items():
            if not self.store.reserve_spend(scope, reserved, cap):
                self._release(taken, reserved)
                spent = self.store.spent(scope)
                what = "all tasks" if scope == ALL_TASKS else f"task {self.task!r}"
                raise BudgetExceeded(
                    f"teacher budget for {what} is ${cap:.4f}/day and ${spent:.4f} is spent or reserved; this call "
                    f"could cost up to ${reserved:.4f}. Raise the cap (Policy.teacher_budget_usd / "
                    f"PROTEGE_TEACHER_BUDGET_USD_PER_DAY) or wait until tomorrow (UTC).",
                    task=self.task,
                    scope=scope,
                    spent=spent,
                    cap=cap,
                )
            taken.append(scope)
        try:
            resp = await self.inner.request(req)
        except ModelError as exc:
            if exc.usage is None:
                self._release(taken, reserved)  # refused or never answered: nothing billed
            else:
                self._settle(taken, reserved, exc.usage)  # answered and billed, but unreadable: it still counts
            raise
        except BaseException:
            self._release(taken, reserved)  # failed requests are not billed
            raise
        self._settle(taken, reserved, resp.usage)
        return resp

    def _settle(self, scopes: list[str], reserved: float, usage: Usage) -> None:
        actual = self._cost(usage)
        for scope in scopes:
            self.store.reserve_spend(scope, actual - reserved, None)

    def _release(self, scopes: list[str], amount: float) -> None:
        for scope in scopes:
            self.store.reserve_spend(scope, -amount, None)
