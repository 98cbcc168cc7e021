"""`protege import-traces`: existing OpenAI chat-format logs become traces of a task (tier "import").

Each JSONL line is `{"messages": [...], "tools": [...]?, "model": "..."?, "usage": {...}?}` (OpenAI's chat /
fine-tuning format; `usage` as the API returns it gives the trace's tokens, priced by the app's price table when the
app is loaded, else the packaged one). The file may start with a UTF-8 byte order mark and may be gzip-compressed
(read by its first bytes, whatever its name).
The last assistant turn is the output; the user turn before it is the input. How the input is read:
- the user turn is a JSON object that is the task's input ({"email": {...}}) — or, for a one-parameter task, the
  value of that parameter ({...}); plain text is the input of a one-parameter task whose parameter is a string;
- an unregistered task takes any JSON object as the input, and plain text as {"text": ...}.
The output must be a JSON object; for a registered task it must validate against the task's output model (the
app's pydantic model and `check` when the app is loaded, its stored JSON schema otherwise).

Every line is checked before anything is written. Bad lines are reported by line number; by default nothing is
imported when any line is bad (fix the file and run again). `--skip-bad` imports the good lines and reports the
bad ones (a partial import, said so). The good lines go in through `Store.insert_traces` in one transaction;
a line whose input and answer the task's imported traces already hold, or an earlier line of the file holds, is
left out (a file imported twice, a line written twice).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from protege.agents.validate import strip_fences
from protege.cli.schema import schema_errors
from protege.errors import UserError
from protege.store.models import new_id, utcnow
from protege.tasks import input_hash

if TYPE_CHECKING:
    from protege.agents.pricing import PriceTable

_loads: Callable[[str | bytes], Any]
try:  # orjson comes with langgraph and parses ~3x faster; the json module is the fallback
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover
    _loads = json.loads

ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}


class BadLine(Exception):
    """One line of the file that cannot become a trace (the message says why)."""


@dataclass
class Contract:
    """How lines are checked for one task: by its app spec, its stored schemas, or (unregistered) barely."""

    task: str
    version: int = 1
    params: list[str] = field(default_factory=list)
    input_schema: dict | None = None
    output_schema: dict | None = None
    spec: Any = None  # the app's TaskSpec when the app is loaded

    @classmethod
    def of(cls, task: str, row: Any, spec: Any) -> Contract:
        if row is None and spec is None:
            return cls(task=task)
        schema = spec.input_schema if spec is not None else row.input_schema
        return cls(
            task=task,
            version=row.version if row is not None else 1,
            params=list(schema.get("properties", {})),
            input_schema=schema,
            output_schema=spec.output_schema if spec is not None else row.output_schema,
            spec=spec,
        )

    @property
    def registered(self) -> bool:
        return self.input_schema is not None

    def read_input(self, text: str) -> dict[str, Any]:
        value = _json_or_none(text)
        if not self.registered:
            return value if isinstance(value, dict) else {"text": text}
        candidates = [value] if isinstance(value, dict) else []
        if len(self.params) == 1:
            wrapped = {self.params[0]: value if value is not None else text}
            # an object without the parameter's name is read as its value first, so a bad one says what it lacks
            # (`{"subject": ...}`: the ticket's `sender`), not that it is no whole input
            lacks = isinstance(value, dict) and self.params[0] not in value
            candidates = [wrapped, *candidates] if lacks else [*candidates, wrapped]
        problems: list[str] = []
        for candidate in candidates:
            errors = self._input_errors(candidate)
            if not errors:
                return self.spec.parse_input((), candidate).model_dump(mode="json") if self.spec else candidate
            problems = problems or errors
        if not candidates:
            raise BadLine(f"the user turn is not a JSON object of the task's inputs {self.params!r}")
        raise BadLine(f"the user turn is not an input of task {self.task!r}: {'; '.join(problems[:3])}")

    def _input_errors(self, candidate: dict) -> list[str]:
        if self.spec is None:
            return schema_errors(candidate, self.input_schema or {})
        try:
            self.spec.parse_input((), candidate)
            return []
        except UserError as exc:
            return [str(exc).split(": ", 1)[-1]]

    def read_output(self, text: str, task_input: dict[str, Any]) -> dict[str, Any]:
        if self.spec is not None:
            from protege.agents.validate import validate_answer

            output, errors = validate_answer(self.spec, self.spec.parse_input((), task_input), text)
            if output is None or errors:
                raise BadLine(f"the answer is not a valid output of task {self.task!r}: {'; '.join(errors[:3])}")
            return output.model_dump(mode="json", by_alias=True)
        value = _json_or_none(strip_fences(text))
        if not isinstance(value, dict):
            raise BadLine("the last assistant turn is not a JSON object (a task's output is one)")
        errors = schema_errors(value, self.output_schema) if self.output_schema else []
        if errors:
            raise BadLine(f"the answer does not match the output schema of task {self.task!r}: {'; '.join(errors[:3])}")
        return value


@dataclass
class ImportPlan:
    """What a file would import: trace dicts for the good lines, and (line number, why) for the bad ones."""

    rows: list[dict[str, Any]]
    bad: list[tuple[int, str]]
    lines: int


def plan_import(
    path: Path, contract: Contract, *, model: str | None = None, prices: PriceTable | None = None
) -> ImportPlan:
    """Read and check every line of `path`; nothing is written. `prices` prices the lines' usage (None: the
    packaged table)."""
    if not path.is_file():
        raise UserError(f'no file {str(path)!r}; give a JSONL file of {{"messages": [...]}} lines')
    rows, bad, lines = [], [], 0
    start = utcnow()
    for number, line in read_lines(path):
        lines += 1
        try:
            row = trace_from_line(line, contract, model=model, prices=prices)
        except BadLine as exc:
            bad.append((number, str(exc)))
            continue
        row["created_at"] = start + timedelta(microseconds=number)  # file order survives ordering by time
        rows.append(row)
    return ImportPlan(rows=rows, bad=bad, lines=lines)


# -- reading the file ------------------------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # what the OpenTelemetry Collector's file exporter compresses with


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The file's non-blank lines with their numbers (from 1), as `open_import_file` reads them."""
    with open_import_file(path) as f, _gzip_errors(path):
        for number, line in enumerate(f, 1):
            if line.strip():
                yield number, line


def read_text(path: Path) -> str:
    """The whole file as text, as `open_import_file` reads it."""
    with open_import_file(path) as f, _gzip_errors(path):
        return f.read()


def open_import_file(path: Path) -> IO[str]:
    """An import file as UTF-8 text: a byte order mark (Windows tools write one) is dropped, and a gzip-compressed
    file is decompressed on the way, told by its first bytes rather than its name."""
    with path.open("rb") as f:
        head = f.read(len(ZSTD_MAGIC))
    if head.startswith(ZSTD_MAGIC):
        raise UserError(f"{str(path)!r} is zstd-compressed; decompress it first (`zstd -d`) and import the result")
    if head.startswith(GZIP_MAGIC):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return path.open(encoding="utf-8-sig", errors="replace")


@contextmanager
def _gzip_errors(path: Path) -> Iterator[None]:
    """Turns a damaged gzip file's read error (cut short, corrupt) into a UserError naming the file."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"{str(path)!r} is gzip-compressed but damaged ({exc}); check it with `gzip -t` and export it again"
        ) from None


def trace_from_line(
    line: str, contract: Contract, *, model: str | None = None, prices: PriceTable | None = None
) -> dict[str, Any]:
    """One JSONL line as a trace dict for `Store.insert_traces` (raises BadLine)."""
    try:
        data = _loads(line)
    except (ValueError, TypeError) as exc:
        raise BadLine(f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        raise BadLine('not a JSON object with a non-empty "messages" list')
    row = trace_from_chat(data, contract, model=model)
    usage = openai_usage(data["usage"]) if data.get("usage") is not None else None
    if usage is None:  # no usage, nothing to price (an unpriced model's warning would be noise)
        return row
    return {**row, **usage, "cost_usd": token_cost(row["model"], usage, prices)}


def openai_usage(raw: Any) -> dict[str, int]:
    """An OpenAI `usage` object (chat completions: prompt_tokens / completion_tokens / prompt_tokens_details;
    the Responses API: input_tokens / output_tokens / input_tokens_details) in protege's convention, where
    input_tokens are the uncached ones (OpenAI counts the cached tokens inside the prompt's); raises BadLine."""
    if not isinstance(raw, dict):
        raise BadLine(
            f'"usage" must be an object like {{"prompt_tokens": 120, "completion_tokens": 15}}, got {_short_repr(raw)}'
        )
    details = raw.get("prompt_tokens_details") or raw.get("input_tokens_details") or {}
    prompt = _token_count(raw, "prompt_tokens", "input_tokens")
    cached = min(_token_count(details if isinstance(details, dict) else {}, "cached_tokens"), prompt)
    return {
        "input_tokens": prompt - cached,
        "output_tokens": _token_count(raw, "completion_tokens", "output_tokens"),
        "cache_read_tokens": cached,
    }


def _token_count(usage: dict[str, Any], *keys: str) -> int:
    """The first of `keys` that `usage` holds, as a count of tokens (0 when none is there; BadLine when bad)."""
    key = next((k for k in keys if usage.get(k) is not None), None)
    if key is None:
        return 0
    value = usage[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadLine(f'"usage" has {key}={_short_repr(value)}; a token count is a whole number >= 0')
    return value


def token_cost(model: str, usage: dict[str, int], prices: PriceTable | None) -> float:
    """Dollars for `usage` on `model`: by `prices` (the app's table, overrides included) when given, else by the
    packaged table."""
    from protege.agents.models.base import Usage
    from protege.agents.pricing import default_table

    return (prices or default_table()).cost(model, Usage(**usage))


def trace_from_chat(data: dict[str, Any], contract: Contract, *, model: str | None = None) -> dict[str, Any]:
    """An OpenAI chat record ({"messages", "tools"?, "model"?}) as a trace dict (raises BadLine); shared by the
    OpenAI log import and the OpenTelemetry one."""
    messages = convert_messages(data["messages"])
    answer_at = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if answer_at is None or messages[answer_at].get("tool_calls") or not messages[answer_at].get("content"):
        raise BadLine("no final assistant answer (the last assistant turn must be text, not tool calls)")
    messages = messages[: answer_at + 1]
    user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    if user is None:
        raise BadLine("no user turn to take the input from")
    task_input = contract.read_input(user.get("content", ""))
    output = contract.read_output(messages[answer_at]["content"], task_input)
    return {
        "id": new_id(),
        "task_name": contract.task,
        "task_version": contract.version,
        "tier": "import",
        "model": model or str(data.get("model") or "import"),
        "input": task_input,
        "input_hash": input_hash(task_input),
        "messages": messages,
        "tools": convert_tools(data.get("tools")),
        "output": output,
        "output_text": messages[answer_at]["content"],
        "valid": True,
    }


def convert_messages(raw: Iterable[Any]) -> list[dict[str, Any]]:
    """OpenAI chat messages as protege transcript turns (Message dicts, defaults left out)."""
    turns: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadLine(f"message {i} has no known role (system, developer, user, assistant, tool)")
        turn: dict[str, Any] = {"role": ROLES[m["role"]], "content": _text(m.get("content"), i)}
        calls = [_tool_call(c, i, j) for j, c in enumerate(m.get("tool_calls") or [])]
        if calls:
            turn["tool_calls"] = calls
            names.update({c["id"]: c["name"] for c in calls})
        if turn["role"] == "tool":
            call_id = m.get("tool_call_id") or ""
            turn.update(tool_call_id=call_id or None, name=m.get("name") or names.get(call_id))
        turns.append({k: v for k, v in turn.items() if v not in (None, "", [])} | {"role": turn["role"]})
    return turns


def _tool_call(call: Any, i: int, j: int) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadLine(f"message {i}: tool call {j} has no function name")
    args = fn.get("arguments") or {}
    if isinstance(args, str):
        args = _json_or_none(args)
        if not isinstance(args, dict):
            raise BadLine(f"message {i}: the arguments of tool call {fn['name']!r} are not a JSON object")
    return {"id": str(call.get("id") or f"call_{i}_{j}"), "name": fn["name"], "arguments": args}


def convert_tools(raw: Any) -> list[dict[str, Any]] | None:
    """OpenAI `tools` ([{"type": "function", "function": {...}}]) as protege ToolSpec dicts (raises BadLine)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadLine(f'"tools" must be a list of tool definitions, got {_short_repr(raw)}')
    specs = []
    for t in raw:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            specs.append(
                {
                    "name": fn["name"],
                    "description": fn.get("description") or "",
                    "parameters": fn.get("parameters") or {"type": "object", "properties": {}},
                }
            )
    return specs or None


def _short_repr(value: Any, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n] + "..."


def _text(content: Any, i: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    raise BadLine(f"message {i}: content is neither text nor a list of content parts")


def _json_or_none(text: str) -> Any:
    try:
        return _loads(text)
    except (ValueError, TypeError):  # orjson's JSONDecodeError is a ValueError too
        return None


def describe_bad(bad: list[tuple[int, str]], path: Path, *, show: int = 10) -> str:
    """'line 3: why; line 9: why; ... and N more' for the first `show` bad lines."""
    shown = "; ".join(f"line {n}: {why}" for n, why in bad[:show])
    more = f"; … and {len(bad) - show} more" if len(bad) > show else ""
    return f"{len(bad)} bad line(s) in {str(path)!r}: {shown}{more}"
