"""Worker: one call whose sync tool hangs past the 0.2 s tool timeout, then exit.

    python hung_tool.py DB_FILE

Prints the call's duration once the call returned and the app is closed, then exits (or, if the hung tool keeps
the interpreter alive, does not).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import GOOD, Ticket, Triage

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.agents.models.base import ModelResponse, ToolCall


def slow_lookup(query: str) -> str:
    """Look the account up (hangs for 300 s: far past any test's patience)."""
    time.sleep(300)
    return "too late"


def answer(req):
    if req.messages[-1].role != "tool":
        return ModelResponse(tool_calls=[ToolCall(id="c1", name="slow_lookup", arguments={"query": "q"})])
    return GOOD


def triage(ticket: Ticket) -> Triage:
    """Route a support ticket."""


app = Protege(db=f"sqlite:///{sys.argv[1]}", teacher=FunctionModel(answer), project_dir=Path(sys.argv[1]).parent)
app.task(tools=[slow_lookup], policy=Policy(tool_timeout_s=0.2))(triage)
t0 = time.perf_counter()
app.run("triage", {"ticket": {"subject": "x"}})
app.close()
print(f"{time.perf_counter() - t0:.3f}", flush=True)
