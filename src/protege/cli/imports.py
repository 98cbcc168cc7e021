"""`protege import-traces`: existing chat logs become traces of a task (tier "import").

Each JSONL line is one chat record, in either of two formats:
- OpenAI's chat / fine-tuning format: `{"messages": [...], "tools": [...]?, "model": "..."?, "usage": {...}?}`,
  tool calls as `tool_calls` or the legacy `function_call`;
- Anthropic's Messages format: a top-level `system`, messages whose content is blocks (`text`, `tool_use`,
  `tool_result`), and its `usage` (`input_tokens` uncached, `cache_read_input_tokens`, `cache_creation_input_tokens`).
`usage` gives the trace's tokens, priced by the app's price table when the app is loaded, else the packaged one; a
model the table lacks is counted as $0 and the import says so. The file must be UTF-8 (a byte order mark is
dropped) and may be gzip-compressed (told by its first bytes, whatever its name).
The last assistant turn is the output; the last user turn with text before it is the input (never a tool result).
How the input is read:
- the user turn is a JSON object that is the task's input ({"email": {...}}) — or, for a one-parameter task, the
  value of that parameter ({...}); plain text is the input of a one-parameter task whose parameter is a string;
- an unregistered task takes any JSON object as the input, and plain text as {"text": ...}.
The output must be a JSON object; for a registered task it must validate against the task's output model (the
app's pydantic model and `check` when the app is loaded, its stored JSON schema otherwise). Either way the input
and output are stored as the model gives them back (defaults filled in, undeclared keys dropped), so a file
imported with and without the app is the same traces.

Every line is checked before anything is written. Bad lines are reported grouped by reason; by default nothing is
imported when any line is bad (fix the file and run again). `--skip-bad` imports the good lines and reports the
bad ones (a partial import, said so). The good lines go in through `Store.insert_traces` in one transaction;
a line whose input and answer the task's imported traces already hold, or an earlier line of the file holds, is
left out (a file imported twice, a line written twice).
"""

from __future__ import annotations

import copy
import gc
import gzip
import json
import zlib
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from io import BufferedReader
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from protege.agents.validate import strip_fences
from protege.cli.schema import schema_errors
from protege.errors import UserError
from protege.store.models import new_id, utcnow
from protege.tasks import input_hash

if TYPE_CHECKING:
    from protege.agents.pricing import Price, PriceTable

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
TEXT_PARTS = frozenset({"text", "input_text", "output_text"})  # chat, Anthropic and Responses API text parts
NO_MODEL = "import"  # the model recorded when neither the line nor --model names one


class BadLine(Exception):
    """One line of the file that cannot become a trace. The message says why; `reason` is its kind without the
    line's particulars (what a report groups bad lines by), the message itself when not given."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class Bad(NamedTuple):
    """A bad line (or span) of the file: where, why, and the kind of problem."""

    line: int
    why: str
    reason: str


@dataclass(frozen=True)
class TaskInput:
    """A task input read from a user turn: as the trace stores it, and the app's parsed model of it (None without
    the app), parsed once and handed on to check the answer."""

    value: dict[str, Any]
    parsed: Any = None


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

    def read_input(self, text: str) -> TaskInput:
        """The task input a user turn holds (raises BadLine)."""
        value = json_or_none(text)
        if not self.registered:
            return TaskInput(value if isinstance(value, dict) else {"text": text})
        candidates = [value] if isinstance(value, dict) else []
        if len(self.params) == 1:
            wrapped = {self.params[0]: value if value is not None else text}
            # an object without the parameter's name is read as its value first, so a bad one says what it lacks
            # (`{"subject": ...}`: the ticket's `sender`), not that it is no whole input
            lacks = isinstance(value, dict) and self.params[0] not in value
            candidates = [wrapped, *candidates] if lacks else [*candidates, wrapped]
        problems: list[str] = []
        for candidate in candidates:
            found, errors = self._parse_input(candidate)
            if found is not None:
                return found
            problems = problems or errors
        if not candidates:
            raise BadLine(f"the user turn is not a JSON object of the task's inputs {self.params!r}")
        reason = f"the user turn is not an input of task {self.task!r}"
        raise BadLine(f"{reason}: {'; '.join(problems[:3])}", reason)

    def _parse_input(self, candidate: dict) -> tuple[TaskInput | None, list[str]]:
        """`candidate` read as the task's input, or why it is not one."""
        if self.spec is None:
            errors = schema_errors(candidate, self.input_schema or {})
            return (None, errors) if errors else (TaskInput(conform(candidate, self.input_schema or {})), [])
        try:
            parsed = self.spec.parse_input((), candidate)
        except UserError as exc:
            return None, [str(exc).split(": ", 1)[-1]]
        # by alias, as the schemas name the fields and protege's own traces store inputs
        return TaskInput(parsed.model_dump(mode="json", by_alias=True), parsed), []

    def read_output(self, text: str, task_input: TaskInput) -> dict[str, Any]:
        """The task output an answer holds, checked against the task (and its `check`, given the input)."""
        if self.spec is not None:
            from protege.agents.validate import validate_answer

            output, errors = validate_answer(self.spec, task_input.parsed, text)
            if output is None or errors:
                reason = f"the answer is not a valid output of task {self.task!r}"
                raise BadLine(f"{reason}: {'; '.join(errors[:3])}", reason)
            return output.model_dump(mode="json", by_alias=True)
        value = json_or_none(strip_fences(text))
        if not isinstance(value, dict):
            raise BadLine("the last assistant turn is not a JSON object (a task's output is one)")
        if not self.output_schema:
            return value
        errors = schema_errors(value, self.output_schema)
        if errors:
            reason = f"the answer does not match the output schema of task {self.task!r}"
            raise BadLine(f"{reason}: {'; '.join(errors[:3])}", reason)
        return conform(value, self.output_schema)


# -- data as the task's pydantic model gives it back ---------------------------------------------------------------


def conform(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """`value` (already checked against `schema`, a pydantic model's JSON schema) as the model would dump it:
    missing fields that have a default get it, keys the model does not declare are dropped (pydantic ignores them
    unless the model allows extra keys), whole floats of integer fields become ints. Without it a file imported
    without the app would store other inputs and answers than with it, and be imported twice."""
    root = schema if root is None else root
    schema = _resolved(schema, root)
    if isinstance(value, dict):
        return _conform_object(value, schema, root)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [conform(item, schema["items"], root) for item in value]
    if isinstance(value, float) and schema.get("type") == "integer" and value.is_integer():
        return int(value)
    return _conform_alternatives(value, schema, root)


def _conform_object(value: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> Any:
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if not isinstance(props, dict):
        if isinstance(extra, dict):  # a dict[str, Model] field
            return {k: conform(v, extra, root) for k, v in value.items()}
        return _conform_alternatives(value, schema, root)
    out: dict[str, Any] = {}
    for name, sub in props.items():
        if name in value:
            out[name] = conform(value[name], sub, root) if isinstance(sub, dict) else value[name]
        elif isinstance(sub, dict) and "default" in sub:
            out[name] = copy.deepcopy(sub["default"])
    if extra:  # the model keeps undeclared keys (extra="allow")
        for name, item in value.items():
            if name not in props:
                out[name] = conform(item, extra, root) if isinstance(extra, dict) else item
    return out


def _conform_alternatives(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """`value` conformed to the first of `schema`'s anyOf / oneOf forms it matches (Optional[Model] is one)."""
    for key in ("anyOf", "oneOf"):
        for option in schema.get(key) or []:
            if isinstance(option, dict) and not schema_errors(value, {"$defs": root.get("$defs", {}), **option}):
                return conform(value, option, root)
    return value


def _resolved(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `$ref` (and pydantic's one-item allOf around a ref) followed."""
    for _ in range(32):  # a cycle of refs ends somewhere
        if "$ref" in schema and isinstance(schema["$ref"], str):
            node: Any = root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node.get(part, {}) if isinstance(node, dict) else {}
            schema = node if isinstance(node, dict) else {}
        elif isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0] if isinstance(schema["allOf"][0], dict) else {}
        else:
            break
    return schema


# -- pricing ---------------------------------------------------------------------------------------------------------


@dataclass
class Unpriced:
    """The lines (or calls) of one model the price table has no price for, and their tokens."""

    items: int = 0
    tokens: int = 0


@dataclass
class Pricer:
    """Prices usage by a table (None: the packaged one) and keeps count of what it could not price, so an import
    can say which models' tokens went in at $0 instead of a Python warning about the first of them."""

    table: PriceTable | None = None
    unpriced: dict[str, Unpriced] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from protege.agents.models.base import Usage
        from protege.agents.pricing import FREE_PROVIDERS, MACHINE_PRICED_PROVIDERS, default_table

        self._usage = Usage
        self._table = self.table or default_table()
        self._unmetered = FREE_PROVIDERS | MACHINE_PRICED_PROVIDERS  # priced without a per-token price
        self._prices: dict[str, Price | None] = {}  # model → its price: a file names few models, each many times

    def cost(self, model: str, usage: dict[str, int]) -> float:
        if model.split(":", 1)[0] in self._unmetered:
            return self._table.cost(model, self._usage(**usage))
        if model not in self._prices:
            self._prices[model] = self._table.price(model)
        price = self._prices[model]
        if price is not None:
            return price.cost(self._usage(**usage))
        tokens = sum(usage.values())
        if tokens:
            entry = self.unpriced.setdefault(model, Unpriced())
            entry.items += 1
            entry.tokens += tokens
        return 0.0


# -- the plan --------------------------------------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What a file would import: trace dicts for the good lines, the bad lines, and what was left out on purpose."""

    rows: list[dict[str, Any]]
    bad: list[Bad]
    lines: int
    left_out: Counter[str] = field(default_factory=Counter)  # why → items that are fine but not imported
    unpriced: dict[str, Unpriced] = field(default_factory=dict)  # model → lines whose usage it could not price
    recorded: dict[str, str] = field(default_factory=dict)  # row id → the protege trace its spans say it is


def plan_import(
    path: Path, contract: Contract, *, model: str | None = None, prices: PriceTable | None = None
) -> ImportPlan:
    """Read and check every line of `path`; nothing is written. `prices` prices the lines' usage (None: the
    packaged table)."""
    if not path.is_file():
        raise UserError(f'no file {str(path)!r}; give a JSONL file of {{"messages": [...]}} lines')
    pricer = Pricer(prices)
    rows, bad, lines = [], [], 0
    start = utcnow()
    with without_gc():
        for number, line in read_lines(path):
            lines += 1
            try:
                row = trace_from_line(line, contract, model=model, pricer=pricer)
            except BadLine as exc:
                bad.append(Bad(number, str(exc), exc.reason))
                continue
            row["created_at"] = start + timedelta(microseconds=number)  # file order survives ordering by time
            rows.append(row)
    return ImportPlan(rows=rows, bad=bad, lines=lines, unpriced=pricer.unpriced)


@contextmanager
def without_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: reading a big file keeps millions of small dicts (the rows), which
    each collection walks again, for a third of the time; they hold no cycles, so nothing is left uncollected."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


# -- reading the file ------------------------------------------------------------------------------------------------

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # what the OpenTelemetry Collector's file exporter compresses with
UTF8_BOM = b"\xef\xbb\xbf"
WIDE_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def read_lines(path: Path) -> Generator[tuple[int, bytes], None, None]:
    """The file's non-blank lines with their numbers (from 1), as bytes (decoded where they are parsed: orjson
    reads UTF-8 bytes directly, and a line that is not UTF-8 is a bad line, not a file that fails)."""
    with open_import_file(path) as f, _gzip_errors(path):
        for number, line in enumerate(f, 1):
            if number == 1:
                line = line.removeprefix(UTF8_BOM)
            if line.strip():
                yield number, line


def read_whole(path: Path) -> bytes:
    """The whole file, as `open_import_file` reads it, without a byte order mark."""
    with open_import_file(path) as f, _gzip_errors(path):
        return f.read().removeprefix(UTF8_BOM)


def open_import_file(path: Path) -> gzip.GzipFile | BufferedReader:
    """An import file's bytes: a gzip-compressed file is decompressed on the way, told by its first bytes rather
    than its name; a zstd-compressed or UTF-16/32 file is refused with what to do."""
    with path.open("rb") as raw:
        head = raw.read(len(ZSTD_MAGIC))
    if head.startswith(ZSTD_MAGIC):
        raise UserError(f"{str(path)!r} is zstd-compressed; decompress it first (`zstd -d`) and import the result")
    stream: gzip.GzipFile | BufferedReader = gzip.open(path, "rb") if head.startswith(GZIP_MAGIC) else path.open("rb")
    try:
        with _gzip_errors(path):
            encoding = _wide_encoding(stream.peek(4)[:4])
        if encoding:
            raise UserError(
                f"{str(path)!r} is {encoding} text, not UTF-8; convert it first (`iconv -f {encoding} -t UTF-8 "
                f"{path.name} > {path.stem}.utf8{path.suffix}`) and import the result"
            )
    except UserError:
        stream.close()
        raise
    return stream


def _wide_encoding(head: bytes) -> str | None:
    """UTF-16 or UTF-32 when the file's first bytes say so (a byte order mark, or the NUL bytes of ASCII text
    written two or four bytes a character: '{' as 7b 00), else None."""
    for mark, encoding in WIDE_BOMS:
        if head.startswith(mark):
            return encoding
    if len(head) >= 2 and b"\x00" in head[:2]:
        return "UTF-32" if head.count(0) >= 3 else "UTF-16"
    return None


@contextmanager
def _gzip_errors(path: Path) -> Iterator[None]:
    """Turns a damaged gzip file's read error (cut short, corrupt) into a UserError naming the file."""
    try:
        yield
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(
            f"{str(path)!r} is gzip-compressed but damaged ({exc}); check it with `gzip -t` and export it again"
        ) from None


def parse_json_line(line: bytes | str) -> Any:
    """One line's JSON value (raises BadLine: not UTF-8, not JSON)."""
    try:
        return _loads(line)
    except (ValueError, TypeError) as exc:
        if isinstance(line, bytes):
            _require_utf8(line)
        raise BadLine(f"not valid JSON ({exc})", "not valid JSON") from None


def _require_utf8(line: bytes) -> None:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadLine(
            f"not UTF-8 text (byte 0x{line[exc.start]:02x} at column {exc.start + 1}); save the file as UTF-8, "
            f"e.g. `iconv -f latin1 -t UTF-8` for a Latin-1 one",
            "not UTF-8 text",
        ) from None


# -- one line as a trace ---------------------------------------------------------------------------------------------


def trace_from_line(
    line: bytes | str, contract: Contract, *, model: str | None = None, pricer: Pricer | None = None
) -> dict[str, Any]:
    """One JSONL line as a trace dict for `Store.insert_traces` (raises BadLine)."""
    data = parse_json_line(line)
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        raise BadLine('not a JSON object with a non-empty "messages" list')
    row = trace_from_chat(data, contract, model=model)
    if data.get("usage") is None:  # no usage, nothing to price
        return row
    usage = usage_of(data["usage"])
    row.update(usage, cost_usd=(pricer or Pricer()).cost(row["model"], usage))
    return row


def usage_of(raw: Any) -> dict[str, int]:
    """A line's `usage` in protege's convention (input_tokens are the uncached ones): Anthropic's when it has
    their cache fields, else OpenAI's (raises BadLine)."""
    if isinstance(raw, dict) and ("cache_read_input_tokens" in raw or "cache_creation_input_tokens" in raw):
        return anthropic_usage(raw)
    return openai_usage(raw)


def anthropic_usage(raw: dict[str, Any]) -> dict[str, int]:
    """Anthropic's `usage`: its input_tokens already leave the cache's reads and writes out, as protege does."""
    return {
        "input_tokens": _token_count(raw, "input_tokens"),
        "output_tokens": _token_count(raw, "output_tokens"),
        "cache_read_tokens": _token_count(raw, "cache_read_input_tokens"),
        "cache_write_tokens": _token_count(raw, "cache_creation_input_tokens"),
    }


def openai_usage(raw: Any) -> dict[str, int]:
    """An OpenAI `usage` object (chat completions: prompt_tokens / completion_tokens / prompt_tokens_details;
    the Responses API: input_tokens / output_tokens / input_tokens_details) in protege's convention, where
    input_tokens are the uncached ones (OpenAI counts the cached tokens inside the prompt's); raises BadLine."""
    if not isinstance(raw, dict):
        raise BadLine(
            f'"usage" must be an object like {{"prompt_tokens": 120, "completion_tokens": 15}}, got {_short_repr(raw)}',
            '"usage" is not an object',
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
    return token_count(usage, *keys, holder='"usage"')


def token_count(values: dict[str, Any], *keys: str, holder: str) -> int:
    """The first of `keys` that `values` holds, as a count of tokens (0 when none is there); a count that is not
    a whole number >= 0 is a BadLine naming `holder` (where the count was read)."""
    key = next((k for k in keys if values.get(k) is not None), None)
    if key is None:
        return 0
    value = values[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadLine(
            f"{holder} has {key}={_short_repr(value)}; a token count is a whole number >= 0",
            "a token count is not a whole number >= 0",
        )
    return value


def trace_from_chat(data: dict[str, Any], contract: Contract, *, model: str | None = None) -> dict[str, Any]:
    """A chat record ({"messages", "tools"?, "model"?, "system"?}, OpenAI's or Anthropic's) as a trace dict
    (raises BadLine); shared by the log import and the OpenTelemetry one."""
    messages = convert_messages(data["messages"], system=_system_text(data.get("system")))
    answer_at = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    answer = messages[answer_at].get("content", "") if answer_at is not None else ""
    if answer_at is None or messages[answer_at].get("tool_calls") or not answer.strip():
        raise BadLine("no final assistant answer (the last assistant turn must be text, not tool calls)")
    messages = messages[: answer_at + 1]
    # the question asked, not a tool's result (those are tool turns) nor an empty turn
    user = next((m for m in reversed(messages) if m["role"] == "user" and m.get("content", "").strip()), None)
    if user is None:
        raise BadLine("no user turn with text to take the input from")
    task_input = contract.read_input(user["content"])
    output = contract.read_output(answer, task_input)
    return {
        "id": new_id(),
        "task_name": contract.task,
        "task_version": contract.version,
        "tier": "import",
        "model": model or str(data.get("model") or NO_MODEL),
        "input": task_input.value,
        "input_hash": input_hash(task_input.value),
        "messages": messages,
        "tools": convert_tools(data.get("tools")),
        "output": output,
        "output_text": answer,
        "valid": True,
    }


def _system_text(system: Any) -> str:
    """Anthropic's top-level system prompt (text, or a list of text blocks) as text."""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "".join(str(b.get("text") or "") for b in system if isinstance(b, dict) and b.get("type") == "text")
    return ""


# -- transcripts -----------------------------------------------------------------------------------------------------


def convert_messages(raw: Iterable[Any], *, system: str = "") -> list[dict[str, Any]]:
    """Chat messages as protege transcript turns (Message dicts, defaults left out): OpenAI's (tool_calls, or the
    legacy function_call and function role) and Anthropic's (content blocks: text, tool_use, tool_result, which
    becomes a tool turn); `system` is Anthropic's top-level system prompt."""
    turns: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    names: dict[str, str] = {}  # tool call id → its tool's name, for the tool turns answering it
    for i, m in enumerate(raw):
        role = ROLES.get(m.get("role")) if isinstance(m, dict) else None  # type: ignore[arg-type]
        if role is None:
            raise BadLine(f"message {i} has no known role (system, developer, user, assistant, tool)", "bad message")
        content = m.get("content")
        if isinstance(content, list) and any(_kind(b) in ("tool_use", "tool_result") for b in content):
            turns += _block_turns(role, content, i, names)
        else:
            turns.append(_chat_turn(m, role, _text(content, i), i, turns, names))
    return turns


def _chat_turn(
    m: dict[str, Any], role: str, text: str, i: int, turns: list[dict[str, Any]], names: dict[str, str]
) -> dict[str, Any]:
    """One OpenAI chat message as a turn, empty fields left out (the hot path of a big import: kept plain)."""
    turn: dict[str, Any] = {"role": role, "content": text} if text else {"role": role}
    calls = [_tool_call(c, i, j) for j, c in enumerate(m["tool_calls"])] if m.get("tool_calls") else []
    if isinstance(m.get("function_call"), dict):  # the legacy single call, answered by a "function" turn
        calls.append(_tool_call({"id": f"call_{i}", "function": m["function_call"]}, i, len(calls)))
    if calls:
        turn["tool_calls"] = calls
        names.update({c["id"]: c["name"] for c in calls})
    if role == "tool":
        call_id = m.get("tool_call_id") or _answered_call(m, turns)
        name = m.get("name") or names.get(call_id)
        turn.update({k: v for k, v in (("tool_call_id", call_id), ("name", name)) if v})
    return turn


def _answered_call(message: dict[str, Any], turns: list[dict[str, Any]]) -> str:
    """The id of the call a legacy "function" turn answers (it names the function, not the call): the latest
    call of that function."""
    for turn in reversed(turns):
        for call in reversed(turn.get("tool_calls") or []):
            if call["name"] == message.get("name"):
                return str(call["id"])
    return ""


def _block_turns(role: str, blocks: list[Any], i: int, names: dict[str, str]) -> list[dict[str, Any]]:
    """An Anthropic message of content blocks as turns: its tool_result blocks as tool turns (in order, before
    any text the message also holds), its text and tool_use blocks as one turn of `role`."""
    turns: list[dict[str, Any]] = []
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        kind = _kind(block)
        if kind == "tool_result":
            call_id = str(block.get("tool_use_id") or "")
            text = _text(block.get("content"), i)
            turns.append(
                _compact({"role": "tool", "content": text, "tool_call_id": call_id, "name": names.get(call_id)})
            )
        elif kind == "tool_use":
            call = {"id": block.get("id"), "function": {"name": block.get("name"), "arguments": block.get("input")}}
            calls.append(_tool_call(call, i, j))
            names[calls[-1]["id"]] = calls[-1]["name"]
        elif kind in TEXT_PARTS:
            texts.append(str(block.get("text") or ""))
    if texts or calls:
        turns.append(_compact({"role": role, "content": "".join(texts), "tool_calls": calls}))
    return turns


def _kind(block: Any) -> Any:
    return block.get("type") if isinstance(block, dict) else None


def _compact(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn without its empty fields (the role stays, even an empty turn's)."""
    return {k: v for k, v in turn.items() if v not in (None, "", [])} | {"role": turn["role"]}


def _tool_call(call: Any, i: int, j: int) -> dict[str, Any]:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadLine(f"message {i}: tool call {j} has no function name", "bad message")
    args = fn.get("arguments") or {}
    if isinstance(args, str):
        args = json_or_none(args)
    if not isinstance(args, dict):
        raise BadLine(f"message {i}: the arguments of tool call {fn['name']!r} are not a JSON object", "bad message")
    return {"id": str(call.get("id") or f"call_{i}_{j}"), "name": fn["name"], "arguments": args}


def convert_tools(raw: Any) -> list[dict[str, Any]] | None:
    """Tool definitions — OpenAI's ([{"type": "function", "function": {...}}]) or Anthropic's ([{"name",
    "description", "input_schema"}]) — as protege ToolSpec dicts (raises BadLine)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise BadLine(f'"tools" must be a list of tool definitions, got {_short_repr(raw)}', '"tools" is not a list')
    specs = []
    for t in raw:
        fn = t.get("function", t) if isinstance(t, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            specs.append(
                {
                    "name": fn["name"],
                    "description": fn.get("description") or "",
                    "parameters": fn.get("parameters")
                    or fn.get("input_schema")
                    or {"type": "object", "properties": {}},
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
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") in TEXT_PARTS)
    raise BadLine(f"message {i}: content is neither text nor a list of content parts", "bad message")


def json_or_none(text: str | bytes) -> Any:
    """The JSON value of `text`, or None when it is not JSON."""
    try:
        return _loads(text)
    except (ValueError, TypeError):  # orjson's JSONDecodeError is a ValueError too
        return None


# -- reports ---------------------------------------------------------------------------------------------------------

WHY_CHARS = 160  # a bad line's reason is cut here in a summary: one can quote a 3 MB value
LINES_SHOWN = 3


def bad_groups(bad: list[Bad]) -> list[list[str]]:
    """The bad lines grouped by reason, biggest group first, as lines of text: a small group a line of text per bad
    line ('line 3: why'), a big one a single line of text with its count, first lines and first detail."""
    groups: dict[str, list[Bad]] = {}
    for item in bad:
        groups.setdefault(item.reason, []).append(item)
    ordered = sorted(groups.values(), key=lambda g: (-len(g), g[0].line))
    return [_group_lines(group) for group in ordered]


def _group_lines(group: list[Bad]) -> list[str]:
    if len(group) <= LINES_SHOWN:
        return [f"line {b.line}: {_cut(b.why)}" for b in group]
    first = group[0]
    lines = ", ".join(str(b.line) for b in group[:LINES_SHOWN])
    detail = first.why.removeprefix(first.reason).lstrip(": ") or first.why
    return [f"{len(group):,} × {first.reason}: lines {lines}, … (line {first.line}: {_cut(detail)})"]


def describe_bad(bad: list[Bad], path: Path, *, show: int = 4) -> str:
    """One line for an error: how many bad lines, and the first `show` groups of them by reason."""
    groups = bad_groups(bad)
    shown = "; ".join(text for group in groups[:show] for text in group)
    more = f"; and {len(groups) - show} more kind(s) of problem" if len(groups) > show else ""
    return f"{len(bad):,} bad line(s) in {str(path)!r}: {shown}{more}"


def _cut(text: str) -> str:
    return text if len(text) <= WHY_CHARS else text[:WHY_CHARS] + "…"
