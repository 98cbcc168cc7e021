"""Shared pieces of the reliability tests: a task contract, an oracle teacher, subprocess helpers, store dumps.

Worker scripts under scripts/ import this module directly (they put this folder on sys.path), so it must stay
importable without pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"
SRC = HERE.parents[1] / "src"
OPUS = "anthropic:claude-opus-4-5"
HAIKU = "anthropic:claude-haiku-4-5"


class Ticket(BaseModel):
    subject: str
    body: str = ""


class Triage(BaseModel):
    queue: Literal["billing", "bug", "account", "other"]
    priority: int


GOOD = {"queue": "billing", "priority": 2}
BAD = {"queue": "sales", "priority": 2}  # parses as JSON, fails the schema (queue is an enum)


def answer_for(task_input: dict) -> dict:
    subject = task_input["ticket"]["subject"]
    return {"queue": "billing" if "refund" in subject else "bug", "priority": 2}


def oracle(req: Any) -> Any:
    """A teacher that answers from the structured input and reports usage, so costs and budgets are real."""
    from protege.agents.models.base import ModelResponse, Usage

    return ModelResponse(text=json.dumps(answer_for(req.task_input)), usage=Usage(input_tokens=2000, output_tokens=500))


def register_triage(app: Any, **options: Any) -> Any:
    @app.task(**options)
    def triage(ticket: Ticket) -> Triage:
        """Route a support ticket to a queue and set its priority (1 = urgent)."""

    return triage


# -- subprocesses ------------------------------------------------------------------------------------------------


def script_env() -> dict[str, str]:
    """The environment for a worker script: protege importable from src, no inherited provider keys."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_script(name: str, *args: str | Path, **kw: Any) -> subprocess.Popen:
    kw = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **kw}
    return subprocess.Popen([sys.executable, str(SCRIPTS / name), *map(str, args)], env=script_env(), **kw)


def phase_file(path: str | Path, k: int) -> str:
    """The name of a worker's file (output, go signal) in phase k of calls.py: `path` itself, then path.1, ..."""
    return str(path) if k == 0 else f"{path}.{k}"


def run_script(
    name: str, *args: str | Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *map(str, args)],
        env={**script_env(), **(env or {})},
        capture_output=True,
        timeout=timeout,
    )


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout}s for {what}")
        time.sleep(0.02)


# -- store dumps -------------------------------------------------------------------------------------------------


def store_text(store: Any) -> str:
    """Every row of every table of the store as text: what a leak check searches."""
    from sqlalchemy import MetaData, select

    meta = MetaData()
    meta.reflect(bind=store.engine)
    parts = []
    with store.engine.connect() as conn:
        for table in meta.sorted_tables:
            for row in conn.execute(select(table)):
                parts.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(parts)
