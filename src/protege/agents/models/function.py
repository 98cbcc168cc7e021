"""Models made of Python: `FunctionModel` wraps a function, `ScriptedModel` answers from a list.

Both are public test doubles (also exported by `protege.testing`): they go through the same `Model` protocol as
the real providers, record every request in `.requests`, and — when they answer with plain text or a dict —
report an estimated usage (see `protege.agents.tokens`) so `price_as` can price them like the model they
stand in for.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from protege.agents.models.base import ModelRequest, ModelResponse, Usage
from protege.agents.tokens import count_tokens, prompt_tokens
from protege.errors import UserError

Answer = ModelResponse | str | dict
ModelFunction = Callable[[ModelRequest], Answer | Awaitable[Answer]]


def to_response(answer: Any, req: ModelRequest, model_name: str) -> ModelResponse:
    """Normalise a str/dict/ModelResponse answer; plain answers get an estimated usage."""
    if isinstance(answer, ModelResponse):
        return answer if answer.model else answer.model_copy(update={"model": model_name})
    if isinstance(answer, dict):
        text = json.dumps(answer, ensure_ascii=False)
    elif isinstance(answer, str):
        text = answer
    else:
        raise UserError(
            f"model {model_name!r} answered {answer!r}; return a ModelResponse, a str or a dict (JSON answer)"
        )
    usage = Usage(input_tokens=prompt_tokens(req), output_tokens=count_tokens(text))
    return ModelResponse(text=text, usage=usage, model=model_name, stop_reason="end_turn")


class RecentRequests(list):
    """A model's most recent requests, for tests and debugging, at most KEEP of them: kept whole, a teacher that
    served for days grew the process by ~10 KB a call."""

    KEEP = 1000

    def append(self, req: ModelRequest) -> None:
        super().append(req)
        if len(self) > self.KEEP:
            del self[0]


class FunctionModel:
    """A model whose answers come from `fn(request)` — sync or async, returning ModelResponse | str | dict.

    A dict is the structured answer (sent back as its JSON text). `price_as` prices its calls as another model;
    `writes_prose` says whether it can write free text such as a SKILL.md (the skill author checks it).
    """

    def __init__(
        self,
        fn: ModelFunction,
        *,
        name: str | None = None,
        price_as: str | None = None,
        writes_prose: bool = False,
    ):
        if not callable(fn):
            raise UserError(f"FunctionModel needs a callable fn(request) -> ModelResponse | str | dict, got {fn!r}")
        self.fn = fn
        self.name = name or f"function:{getattr(fn, '__name__', 'fn')}"
        self.price_as = price_as
        self.writes_prose = writes_prose
        self.requests: list[ModelRequest] = RecentRequests()

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.requests.append(req)
        answer = self.fn(req)
        if inspect.isawaitable(answer):
            answer = await answer
        return to_response(answer, req, self.name)

    def __repr__(self) -> str:
        return f"FunctionModel({self.name!r})"


class ScriptedModel:
    """A model that answers from `responses` in order: ModelResponse, str, dict, or an exception to raise."""

    def __init__(
        self,
        responses: Iterable[Answer | BaseException],
        *,
        name: str = "scripted",
        price_as: str | None = None,
        writes_prose: bool = False,
    ):
        self.responses = list(responses)
        self.name = name
        self.price_as = price_as
        self.writes_prose = writes_prose
        self.requests: list[ModelRequest] = []

    @property
    def remaining(self) -> int:
        """Scripted answers not used yet."""
        return len(self.responses) - len(self.requests)

    async def request(self, req: ModelRequest) -> ModelResponse:
        used = len(self.requests)
        self.requests.append(req)
        if used >= len(self.responses):
            raise UserError(
                f"ScriptedModel {self.name!r} was asked {used + 1} times but has only {len(self.responses)} "
                f"scripted response(s); add more responses (or check why the agent called it again)"
            )
        answer = self.responses[used]
        if isinstance(answer, BaseException):
            raise answer
        return to_response(answer, req, self.name)

    def __repr__(self) -> str:
        return f"ScriptedModel({self.name!r}, {self.remaining} left)"
