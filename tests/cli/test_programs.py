"""`protege programs TASK [--induce]` on a store alone: induction from imported traces (tier "import"), the
per-field table a person reads, JSON for scripts, and a clear error before any programs exist."""

from __future__ import annotations

import json
import random

from programs.test_induce import _changelog
from programs.test_serving import Counted, Entry
from typer.testing import CliRunner

from protege import Protege
from protege.agents import FunctionModel
from protege.cli import app as cli
from protege.tasks import input_hash


def _store_with_traces(tmp_path) -> str:
    url = f"sqlite:///{tmp_path}/c.db"
    app = Protege(db=url, teacher=FunctionModel(lambda req: "{}"), replay=FunctionModel(lambda req: "{}"))

    @app.task
    def counted(entry: Entry) -> Counted:
        """Name the package and count its change items."""

    rng = random.Random(2)
    rows = []
    for _ in range(90):
        inp, out = _changelog(rng)
        out = {"package": out["package"], "changes": out["changes"]}
        rows.append(
            {
                "task_name": "counted",
                "task_version": 1,
                "tier": "import",
                "model": "gpt-4o",
                "input": inp,
                "input_hash": input_hash(inp),
                "output": out,
                "output_text": json.dumps(out),
                "valid": True,
            }
        )
    app.store.insert_traces(rows)
    app.close()
    return url


def test_programs_command_induces_shows_and_emits_json(tmp_path):
    url = _store_with_traces(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(cli, ["--db", url, "programs", "counted"])
    assert missing.exit_code == 2 and "--induce" in missing.output
    shown = runner.invoke(cli, ["--db", url, "programs", "counted", "--induce"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "2 of 2 fields served" in shown.output and "100.0%" in shown.output and "{" not in shown.output
    data = json.loads(runner.invoke(cli, ["--db", url, "programs", "counted", "--json"]).output)
    assert {f["field"]: f["promoted"] for f in data["fields"]} == {"package": True, "changes": True}


def test_skills_list_and_skill_show_carry_the_field_programs(tmp_path):
    url = _store_with_traces(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", url, "programs", "counted", "--induce"]).exit_code == 0
    listed = runner.invoke(cli, ["--db", url, "skills", "counted"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "2/2 fields" in listed.output
    terminal = {"COLUMNS": "200", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # rendered as on a terminal
    shown = runner.invoke(cli, ["--db", url, "skill", "show", "counted"], env=terminal)
    assert shown.exit_code == 0 and "field programs of 'counted'" in shown.output and "count of" in shown.output
