"""`protege import-traces` of chat logs as a new user brings them: Anthropic transcripts with tool use, legacy
OpenAI function calls, files imported with and without the app, models the price table lacks, bytes that are not
UTF-8, and a file whose bad lines must be reported in a form a person can read."""

from __future__ import annotations

import importlib
import json
import uuid
import warnings
from pathlib import Path

import pytest

from cli.cli_support import Project, assert_one_line_error, make_project
from protege.agents.models.base import Usage
from protege.agents.pricing import default_table
from protege.cli.imports import Contract, plan_import
from protege.store import Store

APP_SOURCE = '''
from typing import Literal

from pydantic import BaseModel

from protege import Protege
from protege.agents import FunctionModel


class Ticket(BaseModel):
    sender: str
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "other"]
    priority: int


class Summary(BaseModel):
    summary: str
    sentiment: Literal["pos", "neg", "neu"]


app = Protege(teacher=FunctionModel(lambda req: "{}"), replay=FunctionModel(lambda req: "{}"))


@app.task
def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority."""


@app.task
def summarize(text: str) -> Summary:
    """Summarize the text in one sentence and give its sentiment."""
'''


@pytest.fixture
def project(tmp_path, monkeypatch) -> Project:
    project = make_project(tmp_path, monkeypatch)
    module = f"importapp_{uuid.uuid4().hex[:10]}"  # unique: the module stays in sys.modules after the test
    (tmp_path / f"{module}.py").write_text(APP_SOURCE, encoding="utf-8")
    project.app = f"{module}:app"
    return project


def write_lines(project: Project, name: str, records: list) -> Path:
    path = project.path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def triage_line(i: int, answer: dict | None = None, **extra) -> dict:
    ticket = json.dumps({"ticket": {"sender": f"a{i}@x", "subject": "refund"}})
    answer = answer if answer is not None else {"queue": "billing", "priority": 3}
    messages = [{"role": "user", "content": ticket}, {"role": "assistant", "content": json.dumps(answer)}]
    return {"messages": messages, **extra}


def imported(project: Project, task: str) -> list:
    with Store(project.db) as store:
        return store.traces(task, tier="import", oldest_first=True)


# -- formats ---------------------------------------------------------------------------------------------------------

SONNET = "claude-sonnet-4-5-20250929"
ORDER_SCHEMA = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
ANTHROPIC_USAGE = {
    "input_tokens": 50,
    "output_tokens": 30,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 500,
}


def test_anthropic_transcripts_keep_tool_use_the_system_prompt_and_cache_usage(project):
    """An Anthropic Messages transcript with tool use: the tool_result turn is a tool turn (its input was stored as
    an empty user turn), the top-level system prompt is kept, and the usage is read Anthropic's way (input_tokens
    uncached, cache reads and writes priced as such)."""
    answer = json.dumps({"summary": "good product, late shipping", "sentiment": "neu"})
    record = {
        "model": SONNET,
        "system": [{"type": "text", "text": "Summarize."}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Great product, but shipping took three weeks."}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"id": 7}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "late"}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "usage": ANTHROPIC_USAGE,
        "tools": [{"name": "lookup_order", "description": "An order by id.", "input_schema": ORDER_SCHEMA}],
    }
    write_lines(project, "claude.jsonl", [record])
    report = project.json("--app", project.app, "import-traces", "claude.jsonl", "--task", "summarize")
    assert (report["imported"], report["skipped"]) == (1, [])
    (trace,) = imported(project, "summarize")
    assert trace.input == {"text": "Great product, but shipping took three weeks."}
    assert [m["role"] for m in trace.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert trace.messages[0]["content"] == "Summarize."
    assert trace.messages[2]["tool_calls"] == [{"id": "toolu_1", "name": "lookup_order", "arguments": {"id": 7}}]
    assert trace.messages[3] == {"role": "tool", "content": "late", "tool_call_id": "toolu_1", "name": "lookup_order"}
    assert trace.tools == [{"name": "lookup_order", "description": "An order by id.", "parameters": ORDER_SCHEMA}]
    tokens = (trace.input_tokens, trace.output_tokens, trace.cache_read_tokens, trace.cache_write_tokens)
    assert tokens == (50, 30, 2000, 500)
    usage = Usage(input_tokens=50, output_tokens=30, cache_read_tokens=2000, cache_write_tokens=500)
    assert trace.cost_usd == pytest.approx(default_table().cost(SONNET, usage)) and trace.cost_usd > 0


def test_legacy_function_call_turns_are_kept(project):
    """OpenAI's legacy `function_call` and "function" turns are a tool call and its result, as tool_calls are."""
    record = {
        "messages": [
            {"role": "user", "content": json.dumps({"ticket": {"sender": "a@x", "subject": "refund"}})},
            {"role": "assistant", "content": None, "function_call": {"name": "plan_of", "arguments": '{"email": "a"}'}},
            {"role": "function", "name": "plan_of", "content": "pro"},
            {"role": "assistant", "content": '{"queue": "billing", "priority": 2}'},
        ]
    }
    write_lines(project, "legacy.jsonl", [record])
    assert project.json("--app", project.app, "import-traces", "legacy.jsonl", "--task", "triage")["imported"] == 1
    (trace,) = imported(project, "triage")
    assert [m["role"] for m in trace.messages] == ["user", "assistant", "tool", "assistant"]
    (call,) = trace.messages[1]["tool_calls"]
    assert (call["name"], call["arguments"]) == ("plan_of", {"email": "a"})
    assert trace.messages[2] == {"role": "tool", "content": "pro", "tool_call_id": call["id"], "name": "plan_of"}


def test_an_empty_user_turn_is_never_the_input(project):
    """A blank last user turn is passed over for the last one with text; a transcript with none is a bad line."""
    words = {"role": "user", "content": "Terrible support, never again."}
    answer = {"role": "assistant", "content": '{"summary": "angry", "sentiment": "neg"}'}
    lines = [
        {"messages": [words, {"role": "user", "content": "  "}, answer]},
        {"messages": [{"role": "user", "content": ""}, answer]},
    ]
    write_lines(project, "blank.jsonl", lines)
    result = project.cli("--app", project.app, "import-traces", "blank.jsonl", "--task", "summarize", "--skip-bad")
    assert result.exit_code == 0 and "line 2: no user turn with text" in result.stderr
    (trace,) = imported(project, "summarize")
    assert trace.input == {"text": "Terrible support, never again."}


# -- the same traces with and without the app ------------------------------------------------------------------------


def test_a_file_imported_with_and_without_the_app_is_stored_once(project):
    """Without the app the task's stored schemas check the lines; the input and answer are then stored as the
    app's models give them back (a default filled in, an undeclared key dropped), so neither order of importing
    stores a line twice."""
    lines = [triage_line(i, {"queue": "billing", "priority": 3, "why": "refund"}) for i in range(3)]
    write_lines(project, "first.jsonl", lines)
    assert project.json("--app", project.app, "import-traces", "first.jsonl", "--task", "triage")["imported"] == 3
    again = project.json("import-traces", "first.jsonl", "--task", "triage")  # the task's stored schemas
    assert (again["imported"], again["already_imported"]) == (0, 3)
    write_lines(
        project, "second.jsonl", [triage_line(i, {"queue": "bug", "priority": 1, "why": "x"}) for i in range(9, 11)]
    )
    assert project.json("import-traces", "second.jsonl", "--task", "triage")["imported"] == 2
    with_app = project.json("--app", project.app, "import-traces", "second.jsonl", "--task", "triage")
    assert (with_app["imported"], with_app["already_imported"]) == (0, 2)
    traces = imported(project, "triage")
    assert len(traces) == 5
    assert all(t.input["ticket"]["body"] == "" and "why" not in t.output for t in traces)


def test_the_app_parses_each_input_once(project, monkeypatch):
    """An input is parsed by the task's model once a line (it was three times: a third of a big import's time)."""
    monkeypatch.syspath_prepend(str(project.path))
    app = importlib.import_module(project.app.partition(":")[0]).app
    spec = app.tasks["triage"].spec
    calls = []
    parse = spec.parse_input
    monkeypatch.setattr(spec, "parse_input", lambda *a, **k: calls.append(1) or parse(*a, **k))
    path = write_lines(project, "logs.jsonl", [triage_line(i) for i in range(5)])
    plan = plan_import(path, Contract.of("triage", None, spec))
    app.close()
    assert (len(plan.rows), len(calls)) == (5, 5)


# -- prices ----------------------------------------------------------------------------------------------------------


def test_usage_of_a_model_without_a_price_is_counted_and_said(project):
    """Lines whose usage names no model, or one the price table lacks, go in at $0: the summary says which models
    and how many tokens, --json lists them, and no raw Python warning is printed."""
    unknown = f"gpt-unknown-{uuid.uuid4().hex[:6]}"  # new to this process: the table would warn about it once
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    lines = [triage_line(0, usage=usage), triage_line(1, usage=usage, model=unknown)]
    lines.append(triage_line(2, usage=usage, model="gpt-4o"))
    write_lines(project, "u.jsonl", lines)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="no price for model")  # a warning fails the command
        text = project.cli("import-traces", "u.jsonl", "--task", "priced")
        report = project.json("import-traces", "u.jsonl", "--task", "other")
    assert text.exit_code == 0, text.output
    said = " ".join(text.stderr.split())
    assert "2 line(s) with usage name a model the price table lacks" in said and "2,200 tokens count as $0" in said
    assert f"{unknown!r}: 1 × 1,100 tokens" in said and "no model named: 1 × 1,100 tokens" in said
    assert "--model" in said and "UserWarning" not in text.output
    assert report["unpriced"] == {"import": {"lines": 1, "tokens": 1100}, unknown: {"lines": 1, "tokens": 1100}}
    assert [t.cost_usd > 0 for t in imported(project, "priced")] == [False, False, True]


# -- encodings -------------------------------------------------------------------------------------------------------


def test_bytes_that_are_not_utf8_are_a_bad_line_and_utf16_a_clear_error(project):
    """A Latin-1 byte was replaced by U+FFFD and stored without a word; it is a bad line now, named by its byte.
    A UTF-16 file (as Windows tools save text) is refused with what to do."""
    good = json.dumps(triage_line(0)).encode()
    latin1 = json.dumps(triage_line(1)).replace("refund", "R\u00fcckerstattung").encode("latin-1")
    (project.path / "mixed.jsonl").write_bytes(latin1 + b"\n" + good + b"\n")
    assert_one_line_error(
        project.cli("import-traces", "mixed.jsonl", "--task", "t"), 2, "line 1: not UTF-8 text (byte 0xfc", "--skip-bad"
    )
    partial = project.json("import-traces", "mixed.jsonl", "--task", "t", "--skip-bad")
    assert partial["imported"] == 1 and partial["skipped"][0]["reason"] == "not UTF-8 text"
    assert ["\ufffd" in json.dumps(t.input) for t in imported(project, "t")] == [False]
    (project.path / "wide.jsonl").write_text(json.dumps(triage_line(2)) + "\n", encoding="utf-16")
    assert_one_line_error(
        project.cli("import-traces", "wide.jsonl", "--task", "t"), 2, "is UTF-16 text, not UTF-8", "iconv -f UTF-16"
    )


# -- reports ---------------------------------------------------------------------------------------------------------


def test_bad_lines_are_grouped_by_reason_in_a_report_people_can_read(project, monkeypatch):
    """1,500 lines failing the same way made a one-line error of thousands of characters: bad lines are grouped by
    reason with a count and their first lines; a partial import lists the groups a line each, wrapped to the
    terminal; --json carries every bad line, refused or not."""
    monkeypatch.setenv("COLUMNS", "80")
    lines = [triage_line(i, {"queue": "sales", "priority": 3}) for i in range(40)]
    lines += ["{broken", json.dumps(triage_line(99))]
    write_lines(project, "bad.jsonl", lines)
    refused = project.cli("--app", project.app, "import-traces", "bad.jsonl", "--task", "triage")
    assert_one_line_error(
        refused,
        2,
        "41 bad line(s)",
        "40 × the answer is not a valid output of task 'triage': lines 1, 2, 3, … (line 1: queue",
    )
    assert "line 41: not valid JSON" in refused.stderr and len(refused.stderr) < 600
    as_json = project.cli("--app", project.app, "import-traces", "bad.jsonl", "--task", "triage", "--json")
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 2 and report["imported"] == 0 and "41 bad line(s)" in report["error"]
    assert len(report["skipped"]) == 41 and report["skipped"][40]["reason"] == "not valid JSON"
    partial = project.cli("--app", project.app, "import-traces", "bad.jsonl", "--task", "triage", "--skip-bad")
    assert partial.exit_code == 0 and "imported 1 of 42" in partial.stdout
    listed = partial.stderr.splitlines()
    assert listed[0] == "warning: partial import: skipped 41 bad line(s) of 'bad.jsonl':"
    assert listed[1].startswith("  40 × the answer is not a valid output") and any(
        x.startswith("  line 41: not valid") for x in listed
    )
    assert all(len(line) <= 80 for line in listed)
