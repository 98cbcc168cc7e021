"""Shared set-up for the CLI tests: an isolated project dir with a test app module (FunctionModel teacher, a
task with a tool, nothing on the network) and a runner that invokes the real `protege` typer app."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner

from protege.cli import app

APP_SOURCE = '''
import json
from typing import Literal

from pydantic import BaseModel

from protege import Policy, Protege
from protege.agents import FunctionModel, ModelResponse, ToolCall, Usage


class Ticket(BaseModel):
    sender: str
    subject: str


class Triage(BaseModel):
    queue: Literal["billing", "bug", "other"]
    priority: int


def plan_of(email: str) -> str:
    """The customer's plan by email address."""
    return "enterprise" if email.startswith("vip") else "free"


def teacher(req):
    ticket = req.task_input["ticket"]
    if "garbage" in ticket["subject"]:
        return ModelResponse(text="not json at all", usage=Usage(input_tokens=100, output_tokens=5))
    results = [m.content for m in req.messages if m.role == "tool"]
    if not results:
        call = ToolCall(id="c1", name="plan_of", arguments={"email": ticket["sender"]})
        return ModelResponse(tool_calls=[call], usage=Usage(input_tokens=400, output_tokens=20))
    subject = ticket["subject"]
    queue = "billing" if "refund" in subject else "bug" if "crash" in subject else "other"
    answer = {"queue": queue, "priority": 1 if results[-1] == "enterprise" else 3}
    return ModelResponse(text=json.dumps(answer), usage=Usage(input_tokens=500, output_tokens=30))


app = Protege(teacher=FunctionModel(teacher, price_as="anthropic:claude-opus-4-5"),
              replay=FunctionModel(teacher, price_as="anthropic:claude-haiku-4-5"))


@app.task(tools=[plan_of], policy=Policy(min_traces=50, shadow_rate=0))
def triage(ticket: Ticket) -> Triage:
    """Route a support ticket to a queue and set its priority; look the customer's plan up first."""
'''


@dataclass
class Project:
    """An isolated project: its folder, the app spec of its test app module, and its store URL."""

    path: Path
    app: str
    db: str

    def cli(self, *args: str, input: str | None = None):
        return CliRunner().invoke(app, [str(a) for a in args], input=input)

    def ok(self, *args: str, input: str | None = None):
        """Invoke and require success; returns the result."""
        result = self.cli(*args, input=input)
        assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
        return result

    def json(self, *args: str):
        return json.loads(self.ok(*args, "--json").stdout)

    def run_task(self, sender: str = "ann@x.example", subject: str = "refund please") -> dict:
        ticket = json.dumps({"ticket": {"sender": sender, "subject": subject}})
        return self.json("--app", self.app, "run", "triage", "--input", ticket)


def make_project(tmp_path: Path, monkeypatch) -> Project:
    monkeypatch.chdir(tmp_path)
    for var in ("PROTEGE_APP", "PROTEGE_PROJECT_DIR", "PROTEGE_DEBUG", "PROTEGE_TEACHER", "PROTEGE_REPLAY"):
        monkeypatch.delenv(var, raising=False)
    db = f"sqlite:///{tmp_path / '.protege' / 'protege.db'}"
    monkeypatch.setenv("PROTEGE_DB", db)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables wide enough to show whole cells
    module = f"cliapp_{uuid.uuid4().hex[:10]}"  # unique: the module stays in sys.modules after the test
    (tmp_path / f"{module}.py").write_text(APP_SOURCE, encoding="utf-8")
    return Project(path=tmp_path, app=f"{module}:app", db=db)


def assert_one_line_error(result, code: int, *fragments: str) -> None:
    """The CLI failed with `code`, one red line on stderr naming every fragment, and no traceback."""
    assert result.exit_code == code, f"exit {result.exit_code}: {result.stdout} {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
