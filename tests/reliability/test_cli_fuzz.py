"""The CLI under fuzzed input: random `import-traces` files and random argument lists end in exit 0, 1 or 2 with
one error line — never an unexpected exception — and a refused import writes nothing."""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import event
from hypothesis import strategies as st
from typer.testing import CliRunner

from protege import Protege
from protege.agents import FunctionModel
from protege.cli import app as cli
from protege.store import Store

from .common import GOOD, OPUS, oracle, register_triage
from .fuzzing import fuzz


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project dir (the cwd) whose store has the triage task, a few runs, and a draft skill."""
    monkeypatch.chdir(tmp_path)
    for var in ("PROTEGE_APP", "PROTEGE_DB", "PROTEGE_PROJECT_DIR", "PROTEGE_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    url = f"sqlite:///{tmp_path}/cli.db"
    app = Protege(db=url, teacher=FunctionModel(oracle, price_as=OPUS), project_dir=tmp_path / ".protege")
    register_triage(app)
    for subject in ("refund", "crash", "refund twice"):
        app.run("triage", {"ticket": {"subject": subject}})
    app.close()
    return url


UNEXPECTED = re.compile(r"error: unexpected \w+")  # how the CLI reports an exception outside protege's families


def invoke(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output)
    assert not UNEXPECTED.search(result.output) and "Traceback" not in result.output, result.output
    return result


def count_imported(url: str, task: str) -> int:
    with Store(url) as store:
        return store.count_traces(task, tier="import")


# -- import-traces ---------------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
valid_ticket = st.builds(lambda s: json.dumps({"ticket": {"subject": s}}), st.text(max_size=20))
user_contents = st.one_of(
    valid_ticket,
    valid_ticket,
    valid_ticket,
    st.text(max_size=30),
    st.builds(lambda s: json.dumps({"subject": s}), st.text(max_size=20)),
    json_values.map(json.dumps),
    st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=10)}),
        max_size=2,
    ),
)
answers = st.one_of(
    st.just(json.dumps(GOOD)),
    st.just(json.dumps(GOOD)),
    st.just(json.dumps(GOOD)),
    st.builds(
        lambda q, p: json.dumps({"queue": q, "priority": p}),
        st.sampled_from(["billing", "bug", "account", "other", "sales", ""]),
        st.integers(-3, 3) | st.text(max_size=3),
    ),
    st.text(max_size=20),
    json_values.map(json.dumps),
    st.none(),
)
tool_calls = st.lists(
    st.fixed_dictionaries(
        {
            "id": st.text(max_size=5),
            "type": st.just("function"),
            "function": st.fixed_dictionaries(
                {
                    "name": st.text(max_size=6) | st.none(),
                    "arguments": st.text(max_size=10) | json_values.map(json.dumps),
                }
            ),
        }
    ),
    max_size=2,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])
messages = st.one_of(
    st.tuples(st.just("system"), st.just("Route tickets.")).map(lambda t: {"role": t[0], "content": t[1]}),
    st.fixed_dictionaries(
        {"role": roles},
        optional={
            "content": user_contents | st.none(),
            "tool_calls": tool_calls,
            "tool_call_id": st.text(max_size=4),
            "name": st.text(max_size=4),
        },
    ),
)
chat_lines = st.builds(
    lambda pre, user, answer, extra: json.dumps(
        {"messages": [*pre, {"role": "user", "content": user}, {"role": "assistant", "content": answer}], **extra}
    ),
    st.lists(messages, max_size=3),
    user_contents,
    answers,
    st.fixed_dictionaries(
        {},
        optional={
            "model": st.text(max_size=8) | json_values,
            "tools": st.lists(json_values, max_size=2) | st.text(max_size=5),
        },
    ),
)
lines = st.lists(
    st.one_of(
        chat_lines,
        chat_lines,
        json_values.map(json.dumps),
        st.text(
            alphabet=st.characters(
                blacklist_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029", blacklist_categories=("Cs",)
            ),  # a file holds no lone surrogate
            max_size=40,
        ),
    ),
    min_size=1,
    max_size=5,
)


@fuzz(
    quick=20, soak=300, file_lines=lines, skip_bad=st.booleans(), task=st.sampled_from(["triage", "unregistered_task"])
)
def test_fuzzed_import_traces_file_is_all_or_nothing(project, tmp_path, file_lines, skip_bad, task):
    """import-traces on random JSONL (chat-shaped or not, valid or not, for a registered task checked against its
    stored schema or an unregistered one): exit 0 with the good lines imported (but those already imported), or
    exit 2 with nothing imported."""
    path = tmp_path / "import.jsonl"
    path.write_text("\n".join(file_lines) + "\n", encoding="utf-8")
    before = count_imported(project, task)
    result = invoke("--db", project, "import-traces", path, "--task", task, "--json", *(["--skip-bad"] * skip_bad))
    after = count_imported(project, task)
    if result.exit_code == 0:
        report = json.loads(result.stdout)
        assert after - before == report["imported"]  # lines imported by an earlier example are not imported again
        assert report["imported"] + report["already_imported"] >= 1
        kept_out = report["already_imported"] + report["duplicates"]  # earlier imports; repeats within the file
        assert report["imported"] + kept_out + len(report["skipped"]) == report["lines"]
        event("imported" if not report["skipped"] else "imported some")
    else:
        assert result.exit_code == 2 and after == before
        event("refused")


test_soak_fuzzed_import_traces_file = test_fuzzed_import_traces_file_is_all_or_nothing.soak


@pytest.mark.parametrize("tools", [True, 5, "lookup", {"name": "lookup"}])
def test_import_line_with_non_list_tools_is_a_bad_line(project, tmp_path, tools):
    """A line whose "tools" is not a list is a bad line (exit 2, nothing imported), not an unexpected error."""
    path = tmp_path / "import.jsonl"
    line = {
        "messages": [{"role": "user", "content": "refund"}, {"role": "assistant", "content": json.dumps(GOOD)}],
        "tools": tools,
    }
    path.write_text(json.dumps(line) + "\n", encoding="utf-8")
    result = invoke("--db", project, "import-traces", path, "--task", "unregistered_task")
    assert result.exit_code == 2 and '"tools" must be a list' in result.output, result.output
    assert count_imported(project, "unregistered_task") == 0


def test_import_line_with_a_lone_surrogate_is_refused_cleanly(project, tmp_path):
    """A line whose input holds a lone surrogate escape (not valid Unicode) is a bad line (exit 2), not a crash."""
    path = tmp_path / "import.jsonl"
    user = '{"ticket": {"subject": "refund \\ud800"}}'  # JSON text whose string decodes to a lone surrogate
    turns = [{"role": "user", "content": user}, {"role": "assistant", "content": json.dumps(GOOD)}]
    line = json.dumps({"messages": turns})
    path.write_text(line + "\n", encoding="utf-8")
    result = invoke("--db", project, "import-traces", path, "--task", "triage")
    assert result.exit_code == 2 and count_imported(project, "triage") == 0


# -- arguments -------------------------------------------------------------------------------------------------------

COMMANDS = [
    ["tasks"],
    ["traces"],
    ["trace"],
    ["stats"],
    ["skills"],
    ["students"],
    ["promote"],
    ["demote"],
    ["skill", "show"],
    ["skill", "approve"],
    ["skill", "reject"],
    ["skill", "export"],
    ["skill", "import"],
    ["dataset", "build"],
    ["import-traces"],
    ["run"],
    ["nonsense"],
    [],
]
TOKENS = [
    "triage",
    "unregistered",
    "--json",
    "--limit",
    "--tier",
    "teacher",
    "replay",
    "--task",
    "--version",
    "0",
    "-1",
    "99999999999999999999",
    "--reviewer",
    "--note",
    "--full",
    "--skip-bad",
    "--trust",
    "--input",
    "{}",
    '{"ticket": {}}',
    "--out",
    ".",
    "..",
    "/",
    "--help",
    "--valid",
    "--invalid",
    "--redact",
    "pii",
    "--seed",
]
GLOBAL = st.sampled_from(
    [
        [],
        ["--json"],
        ["--app", "nope_module:app"],
        ["--app", "os:getcwd"],
        ["--app", ":"],
        ["--db", "not a url"],
        ["--db", "mysql://u@h/db"],
        ["--db", "sqlite:///relative/x.db"],
        ["--project-dir", "pdir"],
    ]
)
ARGS = st.lists(
    st.sampled_from(TOKENS) | st.text(alphabet=string.printable.strip(), max_size=10) | st.integers(-5, 10**6).map(str),
    max_size=5,
)


@fuzz(quick=20, soak=300, global_opts=GLOBAL, command=st.sampled_from(COMMANDS), args=ARGS)
def test_fuzzed_arguments_end_in_a_clean_exit(project, global_opts, command, args):
    """Any mix of the store-reading and reviewing commands with random arguments and global options exits 0, 1 or
    2 with a one-line error, never with an unexpected exception."""
    db = [] if "--db" in global_opts else ["--db", project]
    result = invoke(*db, *global_opts, *command, *args)
    event(f"exit {result.exit_code}")


test_soak_fuzzed_arguments = test_fuzzed_arguments_end_in_a_clean_exit.soak


def test_app_target_that_is_not_a_factory_is_a_usage_error(project):
    """--app pointing at a callable that is no Protege factory is a usage error (exit 2), not an internal one."""
    result = CliRunner().invoke(cli, ["--db", project, "--app", "json:loads", "dataset", "build", "triage"])
    assert result.exit_code == 2 and not UNEXPECTED.search(result.output), result.output
    assert "'json:loads'" in result.output, result.output
