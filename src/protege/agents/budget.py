"""The teacher budget guard: a model proxy that reserves spend before each request and settles after.

The reservation is the most a request can cost (its prompt tokens plus `max_tokens` of output at the
teacher's prices), taken atomically in the store against every cap, so concurrent calls in any number of
processes can never pass a cap together. After the response the reservation is settled to the real cost, also
for an answer that was billed but could not be used (`ModelError.usage`); only a request nothing was billed for
releases it. A process killed mid-call leaves its reservation to the store, which releases it on a later
reservation once it sees the process gone (see protege.store.budget).
"""

from __future__ import annotations

from typing import Any

from protege.agents.models.base import Model, ModelRequest, ModelResponse, Usage
from protege.errors import BudgetExceeded, ModelError
from protege.store import BudgetHold, Store
from protege.store.budget import ALL_TASKS


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
        hold = self._reserve(self._worst_case(req))
        try:
            resp = await self.inner.request(req)
        except ModelError as exc:
            if exc.usage is None:
                self.store.release_budget(hold)  # refused or never answered: nothing billed
            else:
                self.store.settle_budget(hold, self._cost(exc.usage))  # answered and billed, but unreadable: counts
            raise
        except BaseException:
            self.store.release_budget(hold)  # failed requests are not billed
            raise
        self.store.settle_budget(hold, self._cost(resp.usage))
        return resp

    def _reserve(self, amount: float) -> BudgetHold:
        """Reserve `amount` against every cap at once, or raise BudgetExceeded with the figures the cap refused."""
        outcome = self.store.reserve_budget(amount, self.caps)
        if isinstance(outcome, BudgetHold):
            return outcome
        what = "all tasks" if outcome.scope == ALL_TASKS else f"task {self.task!r}"
        raise BudgetExceeded(
            f"teacher budget for {what} is ${outcome.cap:.4f}/day and ${outcome.committed:.4f} is spent or reserved "
            f"(${outcome.spent:.4f} spent, ${outcome.reserved:.4f} reserved by calls in flight); this call could cost "
            f"up to ${amount:.4f}. Raise the cap (Policy.teacher_budget_usd / PROTEGE_TEACHER_BUDGET_USD_PER_DAY) "
            f"or wait until tomorrow (UTC).",
            task=self.task,
            scope=outcome.scope,
            spent=outcome.committed,
            cap=outcome.cap,
        )
