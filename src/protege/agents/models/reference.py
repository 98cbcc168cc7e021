"""`ReferenceModel`: the offline teacher, answering from labelled (input, output) examples.

It answers a request whose structured `task_input` is a known input (matched by canonical JSON, the same
`input_hash` the store uses) with that input's output as JSON text. It prices its calls as the model it stands
in for — by default the configured teacher — from estimated token counts of the prompt it was given and the
answer it returns, so demos and benchmarks report what the real teacher would have cost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from protege.agents.models.base import ModelRequest, ModelResponse, Usage
from protege.agents.models.function import RecentRequests
from protege.agents.tokens import count_tokens, prompt_tokens
from protege.errors import ModelError, UserError
from protege.tasks import input_hash


class ReferenceModel:
    """Answers known inputs from labelled examples; refuses unknown ones with a ModelError.

    `examples`: (input, output) pairs or {"input": ..., "output": ...} dicts; inputs and outputs may be dicts
    or pydantic models. An input is matched against the request's `task_input` (e.g. {"ticket": {...}}) and,
    for one-parameter tasks, against the value of its only field ({...}), so examples may be written either way.
    `price_as` (default: the configured teacher, `Settings().teacher`) names the model whose prices its calls
    cost; pass `price_as=""` for a free reference.
    """

    writes_prose = False

    def __init__(self, examples: Iterable[Any], *, name: str = "reference:teacher", price_as: str | None = None):
        if price_as is None:
            from protege.settings import Settings

            price_as = Settings().teacher
        self.name = name
        self.price_as = price_as or None
        self.answers: dict[str, str] = {}
        for i, example in enumerate(examples):
            given, output = _pair(example, i)
            self.answers[input_hash(_plain(given))] = json.dumps(_plain(output), ensure_ascii=False)
        self.requests: list[ModelRequest] = RecentRequests()

    @classmethod
    def from_jsonl(
        cls, path: str | Path, *, input_key: str = "input", output_key: str = "output", **options: Any
    ) -> ReferenceModel:
        """Examples from a JSONL file, one {"input": ..., "output": ...} object per line (keys configurable)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"reference file {str(path)!r} does not exist; give a JSONL file of labelled examples")
        pairs = []
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    pairs.append((row[input_key], row[output_key]))
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise UserError(
                        f"{str(path)!r} line {number}: expected a JSON object with keys {input_key!r} and "
                        f"{output_key!r} ({exc!r}); pass input_key=/output_key= if yours are named differently"
                    ) from exc
        return cls(pairs, **options)

    def __len__(self) -> int:
        return len(self.answers)

    def answer_for(self, task_input: dict[str, Any] | None) -> str | None:
        """The JSON answer for a task input, or None when the reference has no example of it."""
        if task_input is None:
            return None
        task_input = _plain(task_input)
        found = self.answers.get(input_hash(task_input))
        if found is None and len(task_input) == 1:
            (only,) = task_input.values()
            found = self.answers.get(input_hash(only)) if isinstance(only, dict) else None
        return found

    async def request(self, req: ModelRequest) -> ModelResponse:
        self.requests.append(req)
        text = self.answer_for(req.task_input)
        if text is None:
            shown = json.dumps(req.task_input, ensure_ascii=False, default=str)[:200]
            raise ModelError(
                f"reference model {self.name!r} has no answer for the input {shown}"
                + ("" if req.task_input is not None else " (the request carries no task_input)")
                + f"; it knows {len(self.answers)} labelled input(s) — add this one or use a real teacher",
                model=self.name,
            )
        usage = Usage(input_tokens=prompt_tokens(req), output_tokens=count_tokens(text))
        return ModelResponse(text=text, usage=usage, model=self.name, stop_reason="end_turn")

    def __repr__(self) -> str:
        return f"ReferenceModel({len(self.answers)} examples, price_as={self.price_as!r})"


def _pair(example: Any, index: int) -> tuple[Any, Any]:
    if isinstance(example, dict) and "input" in example and "output" in example:
        return example["input"], example["output"]
    if isinstance(example, (tuple, list)) and len(example) == 2:
        return example[0], example[1]
    raise UserError(
        f"reference example #{index} is {example!r}; give (input, output) pairs or {{'input': ..., 'output': ...}}"
    )


def _plain(value: Any) -> Any:
    """JSON-ready data (pydantic models at any depth become dicts), so it hashes like the input the cascade sends."""
    return to_jsonable_python(value)
