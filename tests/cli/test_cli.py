"""The `protege` CLI through typer's CliRunner on an isolated project: every command, its --json output, and its
error paths (one red line, exit 2 for usage mistakes and 1 for run failures, no traceback)."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cli.cli_support import assert_one_line_error, make_project
from protege.cli import app as cli_app
from protege.store import Store, StudentRow

COMMANDS = [
    "init",
    "tasks",
    "run",
    "traces",
    "trace",
    "skills",
    "skill",
    "dataset",
    "distill",
    "students",
    "promote",
    "demote",
    "stats",
    "tui",
    "demo",
    "import-traces",
]


@pytest.fixture
def project(tmp_path, monkeypatch):
    return make_project(tmp_path, monkeypatch)


@pytest.fixture
def seeded(project):
    """Three calls through the CLI: two billing/bug tickets and one for a VIP customer."""
    project.run_task(subject="refund please")
    project.run_task(subject="app crash on start")
    project.run_task(sender="vip@big.example", subject="refund now")
    return project


def test_help_lists_every_command(project):
    """`protege --help` names every command of DESIGN §9."""
    out = project.ok("--help").stdout
    for command in COMMANDS:
        assert command in out


# -- run ---------------------------------------------------------------------------------------------------------


def test_run_prints_output_and_records_traces(project):
    """`run` goes through the cascade (tool call included); --json has the output and the trace ids in the store."""
    res = project.run_task(sender="vip@big.example", subject="refund")
    assert res["output"] == {"queue": "billing", "priority": 1}
    assert res["tier"] == "teacher" and res["cost_usd"] > 0 and len(res["trace_ids"]) == 1
    traces = project.json("traces", "triage")
    assert [t["id"] for t in traces] == res["trace_ids"] and traces[0]["tier"] == "teacher"
    plain = project.ok(
        "--app", project.app, "run", "triage", "--input", '{"ticket": {"sender": "a@b.example", "subject": "crash"}}'
    )
    assert json.loads(plain.stdout) == {"queue": "bug", "priority": 3}
    assert "served by teacher" in plain.stderr


def test_run_input_from_file_stdin_and_bare_value(project):
    """--input takes @file, - (stdin), and for a one-parameter task the parameter's bare value."""
    (project.path / "in.json").write_text('{"sender": "a@b.example", "subject": "refund"}')
    by_file = project.json("--app", project.app, "run", "triage", "--input", "@in.json")
    by_stdin = json.loads(
        project.ok(
            "--app",
            project.app,
            "run",
            "triage",
            "--input",
            "-",
            "--json",
            input='{"ticket": {"sender": "a@b.example", "subject": "crash"}}',
        ).stdout
    )
    assert by_file["output"]["queue"] == "billing" and by_stdin["output"]["queue"] == "bug"


def test_run_error_paths(project):
    """Unknown task, bad JSON, missing file, bad input and a missing student are usage errors (exit 2)."""
    cases = [
        (["nope", "--input", "{}"], ("no task 'nope'", "triage")),
        (["triage", "--input", "{not json"], ("--input is not valid JSON",)),
        (["triage", "--input", "@missing.json"], ("'missing.json'", "does not exist")),
        (["triage", "--input", "[1, 2]"], ("must be a JSON object",)),
        (["triage", "--input", '{"ticket": {"sender": "a"}}'], ("bad input for task 'triage'", "subject")),
        (
            ["triage", "--input", '{"ticket": {"sender": "a", "subject": "b"}}', "--tier", "student"],
            ("has no student",),
        ),
        (["triage", "--input", '{"ticket": {"sender": "a", "subject": "b"}}', "--tier", "boss"], ("'boss'",)),
    ]
    for args, fragments in cases:
        assert_one_line_error(project.cli("--app", project.app, "run", *args), 2, *fragments)


def test_run_failures_exit_1(project):
    """A teacher answer that fails validation is a run error (exit 1), with or without escalation."""
    bad = '{"ticket": {"sender": "a@b.example", "subject": "garbage"}}'
    assert_one_line_error(project.cli("--app", project.app, "run", "triage", "--input", bad), 1, "every tier failed")
    assert_one_line_error(
        project.cli("--app", project.app, "run", "triage", "--input", bad, "--no-escalate"), 1, "escalate=False"
    )
    assert project.json("traces", "--invalid")[0]["errors"]


def test_missing_or_broken_app(project):
    """run/distill without an app, or with one that does not import, say how to point at it (exit 2)."""
    assert_one_line_error(project.cli("run", "triage", "--input", "{}"), 2, "needs your app", "--app")
    assert_one_line_error(project.cli("distill", "triage"), 2, "needs your app")
    assert_one_line_error(
        project.cli("--app", "no_such_module:app", "run", "t", "--input", "{}"),
        2,
        "cannot import app module 'no_such_module'",
    )
    (project.path / "broken_app_mod.py").write_text("raise RuntimeError('boom at import')\n")
    assert_one_line_error(
        project.cli("--app", "broken_app_mod:app", "run", "t", "--input", "{}"), 2, "RuntimeError: boom at import"
    )
    (project.path / "not_an_app.py").write_text("app = 42\n")
    assert_one_line_error(project.cli("--app", "not_an_app:app", "run", "t", "--input", "{}"), 2, "not a Protege app")


def test_a_store_the_app_does_not_use_is_refused_not_silently_bypassed(project, monkeypatch):
    """`--db other.db run ...` with an app that opens its own store wrote the call to the app's store while
    `traces` read the other: refused, naming both; a read command that finds no store says it did not import the
    app and how to point at the app's store."""
    own = project.path / "own.db"
    module = "ownstore_" + project.app.split(":")[0]
    source = (project.path / f"{project.app.split(':')[0]}.py").read_text()
    source = source.replace("app = Protege(", f"app = Protege(db={f'sqlite:///{own}'!r}, ", 1)
    (project.path / f"{module}.py").write_text(source)
    ticket = '{"ticket": {"sender": "a@b.example", "subject": "refund"}}'
    result = project.cli("--app", f"{module}:app", "run", "triage", "--input", ticket)
    assert_one_line_error(result, 2, "opens its own store", str(own), "drop --db")
    with Store(f"sqlite:///{own}") as store:  # the app opened it at import; no call reached it
        assert store.count_traces() == 0
    monkeypatch.setenv("PROTEGE_DB", f"sqlite:///{project.path / 'elsewhere.db'}")
    assert_one_line_error(project.cli("--app", f"{module}:app", "tasks"), 2, "without importing", "--db")


def test_app_from_env_and_pyproject(project, monkeypatch):
    """PROTEGE_APP, then [tool.protege] app in ./pyproject.toml, name the app when --app is absent."""
    ticket = '{"ticket": {"sender": "a@b.example", "subject": "refund"}}'
    monkeypatch.setenv("PROTEGE_APP", project.app)
    assert project.json("run", "triage", "--input", ticket)["tier"] == "teacher"
    monkeypatch.delenv("PROTEGE_APP")
    (project.path / "pyproject.toml").write_text(f'[tool.protege]\napp = "{project.app}"\n')
    assert project.json("run", "triage", "--input", ticket)["output"]["queue"] == "billing"


def test_debug_shows_the_exception(project):
    """With --debug the error propagates (a traceback) instead of one line."""
    result = project.cli("--debug", "--app", project.app, "run", "nope", "--input", "{}")
    assert result.exit_code != 0 and type(result.exception).__name__ == "UserError"


# -- reading the store -------------------------------------------------------------------------------------------


def test_read_commands_need_a_store(project):
    """Without a store, reading commands say where they looked and how to make one (exit 2)."""
    for args in (["tasks"], ["traces"], ["stats"], ["skills"], ["students"], ["tui"]):
        assert_one_line_error(project.cli(*args), 2, "no protege store at", "protege init")


def test_read_commands_make_no_store_in_a_database_that_has_none(project):
    """`protege --db URL tasks` on an empty database (or another app's) left 17 protege tables behind; reading
    commands now refuse and the database stays as it was."""
    import sqlite3

    empty = project.path / "empty.db"
    sqlite3.connect(empty).close()
    result = project.cli("--db", f"sqlite:///{empty}", "tasks")
    assert result.exit_code != 0 and "protege" in result.stderr
    with sqlite3.connect(empty) as conn:
        assert conn.execute("select count(*) from sqlite_master").fetchone() == (0,)


def test_tasks_says_when_a_drafts_evidence_trial_failed(seeded):
    """Under skill_approval="evidence" a draft whose replay trial fell short showed only as "v1 draft"."""
    from protege.store import Store

    store = Store(seeded.db)
    try:
        draft = store.skill("triage")
        assert draft is not None and draft.status == "draft"
        store.update_skill(draft.id, evidence={"agreement": 0.5, "n": 4, "passed": False, "promote_at": 0.95})
    finally:
        store.close()
    out = seeded.ok("tasks").stdout
    assert "evidence failed: 50% agreement on 4 calls" in " ".join(out.split())


def test_tasks_traces_and_filters(seeded):
    """tasks/traces list what the calls wrote, with --tier, --valid/--invalid and --limit filters."""
    tasks = seeded.json("tasks")
    assert [(t["name"], t["calls"], t["traces"]) for t in tasks] == [("triage", 3, 3)]
    assert tasks[0]["inputs"] == ["ticket"] and tasks[0]["valid_share"] == 1.0
    assert len(seeded.json("traces", "--limit", "2")) == 2
    assert len(seeded.json("traces", "triage", "--tier", "teacher", "--valid")) == 3
    assert seeded.json("traces", "--invalid") == [] and seeded.json("traces", "--tier", "replay") == []
    assert seeded.json("traces", "--tier", "author") == []  # the skill author's own calls are a tier too
    table = seeded.ok("traces", "triage").stdout
    assert "teacher" in table and '"queue":"billing"' in table
    assert "shadow run" not in table  # the legend of a marker no row shows
    assert_one_line_error(seeded.cli("traces", "nope"), 2, "no task 'nope'", "triage")
    assert_one_line_error(seeded.cli("traces", "--tier", "nonsense"), 2, "--tier 'nonsense'", "teacher", "import")
    failed = seeded.cli("traces", "nope", "--json")  # a script reading --json gets a failure it can parse too
    assert_one_line_error(failed, 2, "no task 'nope'")
    assert json.loads(failed.stdout) == {
        "error": json.loads(failed.stdout)["error"],
        "type": "UserError",
        "exit_code": 2,
    }
    assert "no task 'nope'" in json.loads(failed.stdout)["error"] and seeded.cli("traces", "nope").stdout == ""


def test_trace_transcript(seeded):
    """`trace ID` (or a prefix) shows the input, the tool call and result, and the output; bad ids fail."""
    newest = seeded.json("traces", "--limit", "1")[0]
    shown = seeded.ok("trace", newest["id"][:8]).stdout
    assert newest["id"] in shown and "plan_of" in shown and "enterprise" in shown and '"priority": 1' in shown
    full = seeded.json("trace", newest["id"])
    assert full["messages"][-1]["role"] == "assistant" and full["labels"] == []
    assert_one_line_error(seeded.cli("trace", "deadbeefdeadbeef"), 2, "no trace 'deadbeefdeadbeef'")


def test_a_long_input_line_wraps_in_the_transcript_instead_of_being_cut(project, monkeypatch):
    """rich cut JSON lines at the panel's edge with no mark: the input a reviewer most needs lost its end."""
    subject = "refund " + " ".join(f"ITM-{n}" for n in range(5600, 5640)) + " END-OF-SUBJECT"
    project.run_task(subject=subject)
    newest = project.json("traces", "--limit", "1")[0]["id"]
    monkeypatch.setenv("COLUMNS", "80")
    shown = project.ok("trace", newest, "--full").stdout
    assert "END-OF-SUBJECT" in shown and all(f"ITM-{n}" in shown for n in range(5600, 5640))


def test_trace_shows_each_fields_confidence_least_sure_first(project):
    """A student's trace keeps the per-field confidences its gate went by; `trace` lists them, least sure first."""
    from protege.store import Store, TraceRow

    (project.path / ".protege").mkdir()  # a Store opened directly makes no folder (the app and the CLI do)
    with Store(project.db) as store:
        trace = TraceRow(
            task_name="triage", tier="student", confidence=0.97, field_confidences={"queue": 0.99, "priority": 0.41}
        )
        store.insert_traces([trace])
    shown = project.ok("trace", trace.id).stdout
    assert "field confidence: priority 0.410 (least sure) · queue 0.990" in shown


def test_tasks_names_background_work_that_is_owed(seeded):
    """A pending or failed skill job (a provider's 429 during writing) was visible only in SQL."""
    with Store(seeded.db) as store:
        job = store.add_job("triage", "skill", {"trace_id": "t"}, owner=None, lease_s=60)
        store.fail_job(job.id, "RateLimited: anthropic: HTTP 429", final=True)
    listed = seeded.ok("tasks")
    assert "skill work for triage is failed (run 1 time(s); last error: RateLimited" in listed.stderr
    assert seeded.json("tasks")[0]["jobs"][0]["state"] == "failed"


def test_stats_ledger(seeded):
    """stats shows calls, tier mix, spend and the teacher-only counterfactual (all teacher: no savings)."""
    ledger = seeded.json("stats", "triage")
    assert ledger["calls"] == 3 and ledger["calls_by_tier"] == {"teacher": 3}
    assert ledger["total_usd"] > 0 and abs(ledger["savings_usd"]) < 1e-9
    assert [lg["task"] for lg in seeded.json("stats")] == ["triage"]
    out = seeded.ok("stats", "triage").stdout
    assert "teacher-only counterfactual" in out and "total" in out
    assert_one_line_error(seeded.cli("stats", "nope"), 2, "no task 'nope'")
    seeded.cli("--app", seeded.app, "run", "triage", "--input", '{"ticket": {"sender": "a@b", "subject": "garbage"}}')
    overview = seeded.ok("stats").stdout  # shares of all calls, as `stats TASK` gives them: a failed call shown
    assert "teacher 75.0%" in overview and "failed 25.0%" in overview


# -- skills ------------------------------------------------------------------------------------------------------


def test_skill_review_flow(seeded, tmp_path):
    """The teacher's success left a draft: show, approve, export, reject an edit, import it back."""
    skills = seeded.json("skills", "triage")
    assert [(s["version"], s["status"]) for s in skills] == [(1, "draft")]
    shown = seeded.ok("skill", "show", "triage").stdout  # not a terminal: the SKILL.md itself, as `> file` keeps it
    assert shown.startswith("---\n") and "name: triage" in shown and "─" not in shown
    approved = seeded.json("skill", "approve", "triage", "--reviewer", "ann")
    assert approved["status"] == "approved" and approved["reviewed_by"] == "ann"
    assert_one_line_error(seeded.cli("skill", "approve", "triage"), 2, "no draft skill to approve")
    folders = seeded.json("skill", "export", str(tmp_path / "out"))
    skill_md = tmp_path / "out" / "triage" / "SKILL.md"
    assert folders == [str(tmp_path / "out" / "triage")] and skill_md.is_file()
    shown = seeded.ok("skill", "show", "triage").stdout
    assert skill_md.read_text() == shown  # what `skill show > file` writes is the exported file
    edited = tmp_path / "edited.md"
    edited.write_text(shown.replace("# ", "# Edited: ", 1))
    assert seeded.json("skill", "edit", "triage", "--file", str(edited))["version"] == 2
    rejected = seeded.json("skill", "reject", "triage", "--note", "too long")
    assert (rejected["version"], rejected["status"], rejected["review_note"]) == (2, "rejected", "too long")
    again = seeded.json("skill", "import", str(tmp_path / "out"))  # the same content: no new version
    assert [(r["version"], r["status"]) for r in again] == [(1, "approved")]
    assert [s["status"] for s in seeded.json("skills")][:2] == ["rejected", "approved"]
    assert_one_line_error(seeded.cli("skill", "show", "triage", "--version", "9"), 2, "no skill version 9")
    assert_one_line_error(seeded.cli("skill", "show", "nope"), 2, "no task 'nope'")


# -- students ----------------------------------------------------------------------------------------------------


def test_students_promote_demote(seeded):
    """students lists rows; promote by id prefix, demote by task; unknown ids and tasks fail clearly."""
    with Store(seeded.db) as store:
        row = store.add_student(
            StudentRow(
                task_name="triage",
                base="smollm2-135m",
                adapter_path="/x",
                metrics={"retention": 0.97, "field_kinds": {"queue": "enum", "priority": "computed"}},
            )
        )
    listed = seeded.json("students", "triage")
    assert [(s["id"], s["state"]) for s in listed] == [(row.id, "candidate")]
    assert seeded.json("promote", row.id[:8])["state"] == "promoted"
    assert seeded.json("tasks")[0]["student"] == row.id
    listing = seeded.ok("students").stdout
    assert "97.0%" in listing and "enum 1 · computed 1" in listing  # the field kinds learned from its traces
    assert seeded.json("demote", "triage")["state"] == "demoted"
    assert_one_line_error(seeded.cli("demote", "triage"), 2, "no promoted student")
    assert_one_line_error(seeded.cli("promote", "nope-nope"), 2, "no student 'nope-nope'")


def _add_student(project, **metrics):
    """A triage student row with these metrics (no weights: the listing reads the row only)."""
    with Store(project.db) as store:
        store.add_student(StudentRow(task_name="triage", base="smollm2-135m", adapter_path="/x", metrics=metrics))


def test_promoting_a_student_distill_refused_says_why_it_was_refused(seeded):
    """A reviewer may promote a student distill kept as a candidate; the command says what they overrule and how to
    undo it. A student that passed gets no note."""
    reason = "retention 0.545 < Policy.promote_at 0.950, and no confidence floor reaches it"
    _add_student(seeded, retention=0.545, verdict={"passed": False, "reason": reason})
    with Store(seeded.db) as store:
        refused = store.students("triage")[0]
    out = " ".join(seeded.ok("promote", refused.id[:8]).stdout.split())
    assert "now serves 'triage'" in out and f"note: distill kept it as a candidate: {reason}." in out
    assert "`protege demote triage` takes it out of service" in out
    _add_student(seeded, retention=0.97, verdict={"passed": True, "reason": "retention 0.970 ≥ 0.950"})
    with Store(seeded.db) as store:
        passed = store.students("triage")[0]
    assert "note:" not in seeded.ok("promote", passed.id[:8]).stdout


def test_students_of_a_task_show_exact_match_per_field(seeded):
    """`protege students TASK` adds the newest student's per-field exact match, worst first, with field kinds
    where known — a table for people, no raw dicts."""
    _add_student(
        seeded,
        retention=0.9,
        field_accuracy={"queue": 0.985, "priority": 0.5},
        field_kinds={"queue": "copied"},
        kind_accuracy={"copied": 0.985},
    )
    out = seeded.ok("students", "triage").stdout
    assert "exact match per field" in out and "{" not in out
    priority, queue = out.index("priority"), out.index("queue")
    assert priority < queue and "50.0%" in out and "98.5%" in out and "copied" in out
    assert "per field kind: copied 98.5%" in out
    assert "exact match per field" not in seeded.ok("students").stdout


def test_students_show_how_each_did_behind_its_task_programs(seeded):
    """A student judged behind its task's field programs shows that retention (and the fields fixed per call)
    beside its own, per field too."""
    served = {"retention": 0.95, "fields_fixed_mean": 2.375, "field_accuracy": {"queue": 1.0, "priority": 0.9}}
    _add_student(seeded, retention=0.5, field_accuracy={"queue": 0.75, "priority": 0.6}, served=served)
    out = seeded.ok("students", "triage").stdout
    assert "with programs" in out and "95.0% (2.4 fixed)" in out and "{" not in out
    priority_row = next(line for line in out.splitlines() if line.strip().startswith("priority"))
    assert priority_row.split()[-2:] == ["60.0%", "90.0%"]


def test_students_prune_deletes_old_weights_and_says_how_much(seeded):
    """`protege students prune`: a dry run lists what would go; the real one deletes the weights of all but the
    newest KEEP unpromoted students under the project's students/ folder, in a table with sizes, rows kept."""
    from datetime import timedelta

    from protege.store.models import utcnow

    ids = []
    with Store(seeded.db) as store:
        for age in (1, 2, 3):
            row = StudentRow(task_name="triage", base="b", adapter_path="", created_at=utcnow() - timedelta(hours=age))
            adapter = seeded.path / ".protege" / "students" / "triage" / row.id / "adapter"
            adapter.mkdir(parents=True)
            (adapter / "model.safetensors").write_bytes(b"w" * 2_500_000)
            row.adapter_path = str(adapter)
            ids.append(store.add_student(row).id)
    dry = seeded.ok("students", "prune", "triage", "--keep", "1", "--dry-run").stdout
    assert ids[1] in dry and ids[2] in dry and ids[0] not in dry and "would delete 5.0 MB of weights" in dry
    assert all((seeded.path / ".protege" / "students" / "triage" / i).exists() for i in ids)
    assert "pass --yes" in seeded.cli("students", "prune", "--keep", "1").stderr  # deletes nothing without it
    out = seeded.ok("students", "prune", "--keep", "1", "--yes").stdout
    assert "deleted 5.0 MB of weights; the rows stay in the store" in out and "2.5 MB" in out
    assert [(seeded.path / ".protege" / "students" / "triage" / i).exists() for i in ids] == [True, False, False]
    assert len(seeded.json("students", "triage")) == 3
    assert seeded.ok("students", "triage").stdout.count("candidate (pruned)") == 2
    assert "nothing to prune" in seeded.ok("students", "prune", "--keep", "1", "--yes").stdout
    refused = seeded.cli("promote", ids[2]).stderr
    assert "weights of student" in refused and "were pruned" in refused and "''" not in refused  # not 'id''s


def test_students_shows_automatic_distills(seeded):
    """A distill running under its lease shows its phase and progress; a finished one its outcome."""
    from protege.store.background import process_owner

    with Store(seeded.db) as store:
        store.acquire_lease(
            "distill:triage",
            owner=process_owner(),
            ttl_s=60,
            info={"phase": "train", "done": 12, "total": 40, "pid": 4321, "started_at": 0},
        )
    out = seeded.ok("students").stdout
    assert "no students yet" in out and "distilling 'triage' now: train 12/40" in out and "(pid 4321)" in out
    with Store(seeded.db) as store:
        store.release_lease(
            "distill:triage",
            owner=process_owner(),
            info={"phase": "done", "outcome": "promoted", "student_id": "abc123", "retention": 0.97},
        )
    assert "last distill of 'triage'" in (out := seeded.ok("students", "triage").stdout)
    assert "student abc123 promoted, retention 97.0%" in out


# -- datasets and distillation -----------------------------------------------------------------------------------


def test_dataset_build_from_the_store(seeded):
    """dataset build works from the store alone and writes train/eval files it reports in --json."""
    built = seeded.json("dataset", "build", "triage", "--eval-fraction", "0.34")
    assert built["counts"]["selected"] == 3 and built["counts"]["train"] + built["counts"]["eval"] == 3
    assert (seeded.path / ".protege" / "datasets" / "triage" / built["id"]).is_dir()
    assert_one_line_error(seeded.cli("dataset", "build", "nope"), 2, "no task 'nope'")


def test_distill_refuses_too_few_traces(seeded):
    """distill with the app checks Policy.min_traces before training (a usage error) and names the way past it,
    which the command has."""
    assert_one_line_error(seeded.cli("--app", seeded.app, "distill", "triage"), 2, "min_traces is 50")
    assert "`protege distill --force`" in seeded.cli("--app", seeded.app, "distill", "triage").stderr
    assert "--force" in seeded.cli("distill", "--help").stdout


# -- import-traces -----------------------------------------------------------------------------------------------


def chat_line(inp, out, *, tool: bool = False) -> str:
    messages = [{"role": "system", "content": "Route tickets."}, {"role": "user", "content": json.dumps(inp)}]
    if tool:
        messages += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c9", "type": "function", "function": {"name": "plan_of", "arguments": '{"email": "x"}'}}
                ],
            },
            {"role": "tool", "tool_call_id": "c9", "content": "free"},
        ]
    messages.append({"role": "assistant", "content": json.dumps(out)})
    return json.dumps({"messages": messages, "model": "gpt-4o-2024-08-06"})


def test_import_traces_registered_task(seeded):
    """Good lines become import traces (input parsed from the user turn, tool turns kept, schema-checked)."""
    lines = [
        chat_line(
            {"ticket": {"sender": f"u{i}@x", "subject": "refund"}}, {"queue": "billing", "priority": 3}, tool=i == 0
        )
        for i in range(5)
    ]
    lines.append(chat_line({"sender": "bare@x", "subject": "crash"}, {"queue": "bug", "priority": 3}))
    (seeded.path / "logs.jsonl").write_text("\n".join(lines) + "\n\n")
    report = seeded.json("import-traces", "logs.jsonl", "--task", "triage")
    assert (report["imported"], report["lines"], report["skipped"], report["registered"]) == (6, 6, [], True)
    imported = seeded.json("traces", "--tier", "import", "--limit", "10")
    assert {t["input"]["ticket"]["sender"] for t in imported} >= {"u0@x", "bare@x"}
    assert all(t["valid"] and t["model"] == "gpt-4o-2024-08-06" for t in imported)
    first = seeded.json("trace", [t for t in imported if t["input"]["ticket"]["sender"] == "u0@x"][0]["id"])
    assert first["messages"][2]["tool_calls"][0]["name"] == "plan_of" and first["messages"][3]["name"] == "plan_of"
    again = seeded.json("import-traces", "logs.jsonl", "--task", "triage")  # the same file twice: not counted twice
    assert (again["imported"], again["already_imported"]) == (0, 6)
    assert len(seeded.json("traces", "--tier", "import", "--limit", "100")) == 6


def test_import_traces_bad_lines_are_all_or_nothing(seeded):
    """Bad lines are reported by number and nothing is imported; --skip-bad imports the good ones."""
    good = chat_line({"ticket": {"sender": "a@x", "subject": "s"}}, {"queue": "other", "priority": 3})
    lines = [
        good,
        "{broken",
        chat_line({"ticket": {"sender": "a@x", "subject": "s"}}, {"queue": "sales", "priority": 3}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        chat_line({"ticket": {"sender": "b@x", "subject": "s"}}, {"queue": "other", "priority": 3}),
    ]
    (seeded.path / "bad.jsonl").write_text("\n".join(lines))
    before = len(seeded.json("traces", "--limit", "100"))
    assert_one_line_error(
        seeded.cli("import-traces", "bad.jsonl", "--task", "triage"),
        2,
        "3 bad line(s)",
        "line 2: not valid JSON",
        "line 3:",
        "queue",
        "line 4:",
        "nothing was imported",
    )
    assert len(seeded.json("traces", "--limit", "100")) == before
    partial = seeded.cli("import-traces", "bad.jsonl", "--task", "triage", "--skip-bad")
    assert partial.exit_code == 0 and "partial import" in partial.stderr and "imported 2 of 5" in partial.stdout
    assert len(seeded.json("traces", "--limit", "100")) == before + 2
    assert_one_line_error(seeded.cli("import-traces", "missing.jsonl", "--task", "triage"), 2, "no file")
    # the parameter's value without its required `sender`: that is what is said, not that `subject` is unknown
    (seeded.path / "half.jsonl").write_text(chat_line({"subject": "s"}, {"queue": "other", "priority": 3}))
    half = seeded.cli("import-traces", "half.jsonl", "--task", "triage")
    assert_one_line_error(half, 2, "has no lines to import", "ticket.sender: required field missing")
    assert "Extra inputs" not in half.stderr and "--skip-bad" not in half.stderr


def test_import_traces_unregistered_task_and_with_app(project):
    """An unregistered task takes any JSON object (text as {"text": ...}); with the app, its pydantic model checks."""
    lines = [
        chat_line({"q": 1}, {"a": 1}),
        json.dumps(
            {"messages": [{"role": "user", "content": "plain words"}, {"role": "assistant", "content": '{"a": 2}'}]}
        ),
    ]
    (project.path / "new.jsonl").write_text("\n".join(lines))
    result = project.cli("import-traces", "new.jsonl", "--task", "fresh")
    assert result.exit_code == 0 and "not registered" in result.stderr
    assert len(project.json("traces", "fresh")) == 2  # found by their task's name, registered or not
    listed = project.cli("tasks")
    assert "traces of unregistered tasks: fresh (2)" in " ".join(listed.stderr.split())
    inputs = [t["input"] for t in project.json("traces", "--tier", "import")]
    assert sorted(map(json.dumps, inputs)) == sorted([json.dumps({"q": 1}), json.dumps({"text": "plain words"})])
    (project.path / "t.jsonl").write_text(
        chat_line({"ticket": {"sender": "a", "subject": "b"}}, {"queue": "bug", "priority": "high"})
    )
    assert_one_line_error(
        project.cli("--app", project.app, "import-traces", "t.jsonl", "--task", "triage"), 2, "line 1:", "priority"
    )
    (project.path / "half.jsonl").write_text(chat_line({"subject": "b"}, {"queue": "bug", "priority": 3}))
    half = project.cli("--app", project.app, "import-traces", "half.jsonl", "--task", "triage")
    assert_one_line_error(half, 2, "ticket.sender: Field required")  # what the parameter's value lacks
    assert "not a parameter" not in half.stderr


def test_import_traces_collapses_lines_repeated_in_one_file(project):
    """A line written several times in one file is imported once, the copies counted as duplicates; importing the
    file again repeats none of them."""
    lines = [chat_line({"q": i}, {"a": i}) for i in range(3)] * 3
    (project.path / "dup.jsonl").write_text("\n".join(lines))
    report = project.json("import-traces", "dup.jsonl", "--task", "fresh")
    assert (report["lines"], report["imported"], report["duplicates"], report["already_imported"]) == (9, 3, 6, 0)
    assert len(project.json("traces", "fresh", "--limit", "100")) == 3
    again = project.cli("import-traces", "dup.jsonl", "--task", "fresh")
    assert again.exit_code == 0 and "imported 0 of 9" in again.stdout and "9 line(s) already imported" in again.stderr
    (project.path / "more.jsonl").write_text("\n".join([chat_line({"q": 9}, {"a": 9})] * 2))
    text = project.cli("import-traces", "more.jsonl", "--task", "fresh")
    assert "imported 1 of 2" in text.stdout and "1 line(s) repeat an earlier one of the file" in text.stderr


def test_import_traces_reads_a_byte_order_mark_and_gzip(project):
    """A file starting with a UTF-8 BOM imports; a gzip-compressed one is read as its text, whatever its name;
    a damaged gzip file or a zstd one is a one-line error saying what to do."""
    lines = "\n".join(chat_line({"q": i}, {"a": i}) for i in range(3)) + "\n"
    (project.path / "bom.jsonl").write_text(lines, encoding="utf-8-sig")
    assert project.json("import-traces", "bom.jsonl", "--task", "bom")["imported"] == 3
    packed = gzip.compress(lines.encode())
    (project.path / "logs.jsonl").write_bytes(packed)  # no .gz suffix: told by its first bytes
    assert project.json("import-traces", "logs.jsonl", "--task", "gz")["imported"] == 3
    (project.path / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    assert_one_line_error(project.cli("import-traces", "cut.jsonl.gz", "--task", "gz"), 2, "damaged", "gzip -t")
    (project.path / "z.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 8)
    assert_one_line_error(project.cli("import-traces", "z.jsonl.zst", "--task", "gz"), 2, "zstd-compressed", "zstd -d")


def usage_line(usage) -> str:
    line = json.loads(chat_line({"ticket": {"sender": "a@x", "subject": "s"}}, {"queue": "other", "priority": 3}))
    return json.dumps({**line, "usage": usage})


def test_import_traces_reads_openai_usage_and_prices_it(project):
    """A line's `usage` (OpenAI's, cached tokens inside the prompt's) gives the trace's tokens and a cost by the
    packaged price table; with the app loaded, by the app's prices (PROTEGE_PRICES overrides included)."""
    usage = {"prompt_tokens": 1200, "completion_tokens": 80, "prompt_tokens_details": {"cached_tokens": 1000}}
    (project.path / "u.jsonl").write_text(usage_line(usage))
    assert project.json("import-traces", "u.jsonl", "--task", "packaged")["imported"] == 1
    (project.path / "prices.json").write_text(json.dumps({"gpt-4o": {"input": 10, "output": 100, "cache_read": 1}}))
    project_prices = {"PROTEGE_PRICES": str(project.path / "prices.json")}
    result = CliRunner().invoke(
        cli_app, ["--app", project.app, "import-traces", "u.jsonl", "--task", "triage", "--json"], env=project_prices
    )
    assert result.exit_code == 0, result.output
    with Store(project.db) as store:
        (packaged,) = store.traces("packaged", tier="import")
        (priced,) = store.traces("triage", tier="import")
    assert (packaged.input_tokens, packaged.output_tokens, packaged.cache_read_tokens) == (200, 80, 1000)
    assert packaged.cost_usd == pytest.approx((200 * 2.5 + 80 * 10 + 1000 * 1.25) / 1e6)  # gpt-4o's packaged price
    assert priced.cost_usd == pytest.approx((200 * 10 + 80 * 100 + 1000 * 1) / 1e6)
    (project.path / "bad.jsonl").write_text(usage_line({"prompt_tokens": "many"}) + "\n" + usage_line([1]))
    assert_one_line_error(
        project.cli("import-traces", "bad.jsonl", "--task", "packaged"),
        2,
        "line 1: \"usage\" has prompt_tokens='many'",
        'line 2: "usage" must be an object',
    )


def test_import_traces_is_fast(project):
    """20,000 lines are checked and stored in one go, in a few seconds."""
    lines = (
        chat_line({"ticket": {"sender": f"u{i}@x", "subject": "s"}}, {"queue": "other", "priority": 3})
        for i in range(20_000)
    )
    (project.path / "big.jsonl").write_text("\n".join(lines) + "\n")
    report = project.json("import-traces", "big.jsonl", "--task", "bulk")
    assert report["imported"] == 20_000 and report["elapsed_s"] < 30
    assert project.json("tasks") == [] and project.json("traces", "--limit", "1")[0]["task_name"] == "bulk"


# -- init --------------------------------------------------------------------------------------------------------


def test_init_writes_a_runnable_starter(project):
    """init makes the store, a starter app and the pyproject hint; the starter runs offline and the CLI finds it."""
    (project.path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    out = project.ok("init").stdout
    assert "store ready" in out and "protege_app.py" in out
    assert (project.path / ".protege" / ".gitignore").read_text() == "*\n"
    assert 'app = "protege_app:app"' in (project.path / "pyproject.toml").read_text()
    proc = subprocess.run(
        [sys.executable, "protege_app.py"], cwd=project.path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "queue='billing'" in proc.stdout and "priority=1" in proc.stdout, proc.stderr
    assert project.json("tasks")[0]["name"] == "triage"
    again = project.ok("init")
    assert "exists; left as it is" in again.stderr and "already names app" in again.stderr
    assert_one_line_error(project.cli("init", "--app-file", "bad-name.py"), 2, "Python identifier")


def test_distill_report_formatting():
    """The distill report flattens the trainer's nested metrics and formats shares, seconds and rates apart."""
    from protege.cli.work import _flat, _metric_text

    flat = _flat(
        {
            "retention": 0.93,
            "train": {"wall_s": 300.0, "tokens_per_s": 812.0, "steps": 75},
            "per_field": [1, 2],
            "confidence": None,
        }
    )
    assert flat == {"retention": 0.93, "train.wall_s": 300.0, "train.tokens_per_s": 812.0, "train.steps": 75}
    shown = {k: _metric_text(k, v) for k, v in flat.items()}
    assert shown == {
        "retention": "93.0%",
        "train.wall_s": "5.0 min",
        "train.tokens_per_s": "812 tokens/s",  # was a bare 812
        "train.steps": "75",
    }
    assert _metric_text("served.fields_fixed_mean", 0.75) == "0.75 a call"  # a count, not a share
    assert _metric_text("train.tokens_per_s", 11.73) == "11.73 tokens/s"
    assert (_metric_text("train.stopped_early", False), _metric_text("train.stopped_early", True)) == ("no", "yes")


def test_the_distill_report_says_what_its_invalid_share_counts(capsys, monkeypatch):
    """`parse_failure_rate` counts answers cut short too (invalid, as the cascade treats them): named so."""
    from types import SimpleNamespace

    from protege.cli.work import show_distill_report

    monkeypatch.setenv("COLUMNS", "120")
    report = SimpleNamespace(
        metrics={"parse_failure_rate": 0.154}, student_id="s1", task="t", promoted=False, reason="r", dataset_id="d"
    )
    show_distill_report(report, 3.0)
    out = capsys.readouterr().out
    assert "invalid answers (unparseable or cut short)" in out and "15.4%" in out and "parse_failure" not in out


# -- what a new user's trial ran into ----------------------------------------------------------------------------


def test_traces_of_one_task_fit_a_narrow_terminal(seeded, monkeypatch):
    """`traces TASK` has no task column, which the table listed as optional: at 60 columns list.remove raised."""
    newest = seeded.json("traces", "--limit", "1")[0]["id"]
    for width in (40, 60, 70):
        monkeypatch.setenv("COLUMNS", str(width))
        lines = seeded.ok("traces", "triage", "--limit", "3").stdout.splitlines()
        assert all(len(line) <= width for line in lines) and any(newest[:6] in line for line in lines)
        assert width == 40 or any("teacher" in line for line in lines)  # 40 is too narrow for every cell whole


def test_skill_approve_without_a_version_never_goes_back(seeded):
    """v4 approved and v2, v3 left as drafts: `skill approve triage` approved v3 (retiring v4), then v2."""
    seeded.ok("skill", "approve", "triage")
    edited = seeded.path / "edited.md"
    for n in (2, 3, 4):
        edited.write_text(seeded.ok("skill", "show", "triage", "-v", "1").stdout.replace("# ", f"# v{n}: ", 1))
        seeded.ok("skill", "edit", "triage", "--file", str(edited))
    seeded.ok("skill", "approve", "triage", "-v", "4")
    assert_one_line_error(
        seeded.cli("skill", "approve", "triage"), 2, "v4 is approved and newer than every draft", "-v 3"
    )
    assert [(s["version"], s["status"]) for s in seeded.json("skills", "triage")][:3] == [
        (4, "approved"),
        (3, "draft"),
        (2, "draft"),
    ]
    assert seeded.json("skill", "approve", "triage", "-v", "3")["status"] == "approved"  # named: goes back


def test_skill_export_refuses_to_overwrite_and_to_write_into_a_file(seeded):
    """A second export overwrote the folder (a reviewer's edits there lost) unless --force; a file as the
    destination raised a bare FileExistsError."""
    seeded.ok("skill", "approve", "triage")
    out = seeded.path / "skills"
    seeded.ok("skill", "export", str(out))
    skill_md = out / "triage" / "SKILL.md"
    skill_md.write_text("my edits")
    assert_one_line_error(seeded.cli("skill", "export", str(out)), 2, repr(str(out / "triage")), "--force")
    assert skill_md.read_text() == "my edits"
    assert seeded.json("skill", "export", str(out), "--force") == [str(out / "triage")]
    assert skill_md.read_text() != "my edits"
    afile = seeded.path / "afile"
    afile.touch()
    assert_one_line_error(seeded.cli("skill", "export", str(afile)), 2, repr(str(afile)), "is a file")
    assert_one_line_error(seeded.cli("skill", "export", "/proc/protege-x"), 2, "'/proc/protege-x'")


def test_a_failed_calls_run_id_lists_its_attempts(project):
    """Every tier failed: the error names `protege traces --run ID`, which lists the attempts (`trace` takes trace
    ids, and says so when given the run id)."""
    import re

    bad = '{"ticket": {"sender": "a@b.example", "subject": "garbage"}}'
    failed = project.cli("--app", project.app, "run", "triage", "--input", bad)
    run_id = re.search(r"`protege traces --run (\w+)`", failed.stderr).group(1)
    project.run_task()  # another call, whose trace --run leaves out
    attempts = project.json("traces", "--run", run_id[:8])
    assert attempts and {a["run_id"] for a in attempts} == {run_id} and not any(a["valid"] for a in attempts)
    assert_one_line_error(project.cli("trace", run_id), 2, "is a run id", f"traces --run {run_id}")
    assert_one_line_error(project.cli("traces", "--run", "feedfacefeed"), 2, "no traces of run 'feedfacefeed'")


def test_distill_options_the_train_config_refuses_are_usage_errors(project):
    """`distill --method qlora` printed pydantic's `unexpected ValidationError` (exit 1); every value TrainConfig
    refuses is named with its option."""
    from protege.cli.work import train_config
    from protege.errors import UserError

    result = project.cli("--app", project.app, "distill", "triage", "--method", "qlora")
    assert_one_line_error(result, 2, "--method 'qlora'", "'lora' or 'full'")
    assert "ValidationError" not in result.stderr and "errors.pydantic.dev" not in result.stderr
    with pytest.raises(UserError, match=r"--method 'qlora' .*; --epochs -1 is not accepted: it should be greater"):
        train_config({"method": "qlora", "epochs": -1})


@pytest.mark.parametrize("steps", ["0", "-3"])
def test_distill_max_steps_must_be_a_positive_count(project, steps):
    """--max-steps -3 was silently ignored and 0 trained a step, shown as `train 1/0`."""
    result = project.cli("--app", project.app, "distill", "triage", "--max-steps", steps)
    assert result.exit_code == 2 and "--max-steps" in result.stderr and "greater than or equal to 1" in result.stderr


def test_distill_adapter_with_training_options_is_refused_in_the_clis_terms(project, tmp_path):
    """--adapter with --epochs said `pass either adapter= ... or config= ...`: Python keywords, not the options."""
    result = project.cli("--app", project.app, "distill", "triage", "--adapter", str(tmp_path), "--epochs", "2")
    assert_one_line_error(result, 2, "--adapter records a student trained elsewhere, so --epochs", "--adapter alone")
    assert "config=" not in result.stderr


def test_sigterm_during_a_distill_interrupts_it_as_ctrl_c_does():
    """A SIGTERM ended the process with no cleanup, leaving the half-trained student's folder behind."""
    import os
    import signal

    from protege.cli.work import sigterm_interrupts

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 1)  # the handler runs here at the latest
    assert signal.getsignal(signal.SIGTERM) is before


def test_students_serve_names_its_base_url_option(seeded):
    """openai:<name> without --base-url said `base_url ... got None`: the CLI names its option."""
    _add_student(seeded)
    with Store(seeded.db) as store:
        sid = store.students("triage")[0].id
    assert_one_line_error(seeded.cli("students", "serve", sid, "openai:student"), 2, "needs --base-url")
    assert_one_line_error(
        seeded.cli("students", "serve", sid, "torch", "--base-url", "http://x/v1"), 2, "--base-url 'http://x/v1'"
    )


def test_quant_help_and_readme_name_what_the_export_accepts():
    """`--quant` help listed f32 while the README said q8_0, f16 or q4_k_m: both name every accepted value."""
    from pathlib import Path

    from typer.testing import CliRunner

    from protege.cli import app
    from protege.distill.student_export import QUANTS

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    quant_line = " ".join(readme[readme.index("`--quant` is") :].split("\n\n")[0].split())
    for command in ("export", "serve"):
        shown = " ".join(
            CliRunner().invoke(app, ["students", command, "--help"], env={"COLUMNS": "200"}).stdout.split()
        )
        assert all(q in shown for q in QUANTS), (command, shown)
    assert all(f"`{q}`" in quant_line for q in QUANTS), quant_line


@pytest.mark.parametrize(
    "args", [["traces", "--limit", "0"], ["traces", "--no-such-flag"], ["--no-such-flag", "tasks"]]
)
def test_parser_errors_under_json_print_the_json_error_too(seeded, args):
    """A bad option under --json printed nothing on stdout, while every other failure prints the JSON error."""
    result = seeded.cli(*args, "--json")
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["exit_code"] == 2 and error["type"] and error["error"]


def _as_on_a_terminal(monkeypatch, width: int = 100) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("NO_COLOR", "1")


def test_skill_show_on_a_terminal_lists_the_frontmatter_and_prints_the_skills_files(seeded, monkeypatch):
    """The frontmatter went through Markdown as one setext heading ("name: triage description: ..." in bold), and
    the extra files (an authored program's scripts/solve.py) were only in --json, though the footers said shown."""
    from protege.skills import SkillLibrary

    with Store(seeded.db) as store:
        lib = SkillLibrary(store)
        v1 = SkillLibrary.to_skill(lib.latest("triage"))
        files = {"scripts/solve.py": "def solve(ticket):\n    return {'queue': 'bug'}\n"}
        lib.add("triage", v1.model_copy(update={"files": files}), kind="authored")
    _as_on_a_terminal(monkeypatch)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", seeded.ok("skill", "show", "triage").stdout)  # bold stays, NO_COLOR or not
    lines = [line.rstrip() for line in shown.splitlines()]
    assert "name        triage" in lines and any(x.startswith("metadata    task=triage, kind=authored") for x in lines)
    assert any(x.startswith("description Route a support ticket") for x in lines)
    assert "files       scripts/solve.py" in lines and not any("name: triage" in x for x in lines)
    code = lines.index(next(x for x in lines if x.startswith("scripts/solve.py ─")))
    assert lines[code + 1 : code + 3] == ["def solve(ticket):", "    return {'queue': 'bug'}"]


def test_skill_import_refuses_skills_of_tasks_not_in_the_store(seeded, tmp_path):
    """A skill folder for a task the store does not know was imported, for replay never to use."""
    from protege.skills import Skill

    folder = tmp_path / "in" / "refunds"
    folder.mkdir(parents=True)
    skill = Skill(name="refunds", description="Decides refunds. Use for refunds.", body="# Refunds\n")
    (folder / "SKILL.md").write_text(skill.render())
    assert_one_line_error(
        seeded.cli("skill", "import", str(tmp_path / "in")),
        2,
        "is for task 'refunds', which is not in the store (tasks: triage); nothing was imported",
    )
    assert [s["task_name"] for s in seeded.json("skills")] == ["triage"]


def test_tasks_at_80_columns_keep_their_numbers_whole(seeded, monkeypatch):
    """Beside a long task name, `tasks` at 80 columns cut every column to fit (calls `10…`, valid `10…`): the
    optional columns go instead, and the skill column ends in … ."""
    with Store(seeded.db) as store:
        schema = {"type": "object", "properties": {"customer_support_ticket": {"type": "string"}}}
        name = "a_very_long_task_name_for_checking_truncation"
        store.register_task(name=name, contract_hash="h", input_schema=schema, output_schema={}, instructions="i")
    monkeypatch.setenv("COLUMNS", "80")
    lines = seeded.ok("tasks").stdout.splitlines()
    row = next(line for line in lines if line.lstrip().startswith("triage"))
    assert row.split()[1:5] == ["1", "3", "3", "100.0%"]
    assert all(len(line) <= 80 for line in lines)
