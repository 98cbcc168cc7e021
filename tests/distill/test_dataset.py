"""The dataset builder on real stores: selection, dedup, redaction, split, formats, atomic writes, recorded counts."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from protege.agents.models.base import ToolSpec
from protege.agents.models.chat_format import compact_json, render_answer, render_tools
from protege.demo.workload import extract_order, load_examples
from protege.distill import dataset as dataset_mod
from protege.distill.dataset import build_dataset
from protege.distill.export import load_manifest
from protege.errors import UserError
from protege.store import Store
from protege.store.models import new_id
from protege.tasks import TaskSpec, input_hash

TASK = "extract_order"
INSTRUCTIONS = TaskSpec(extract_order).instructions
T0 = datetime(2025, 1, 1, tzinfo=UTC)
ANTHROPIC_KEY = "sk-ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0FeDcBa"
LOOKUP = {
    "name": "lookup_order",
    "description": "Look up an order by id",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}},
}
FINAL = {"name": "final_answer", "description": "", "parameters": {"type": "object"}}


@pytest.fixture(scope="module")
def examples() -> list[dict]:
    return load_examples()


@pytest.fixture
def db(sqlite_url):
    s = Store(sqlite_url)
    yield s
    s.close()


def trace(
    ex: dict,
    n: int,
    *,
    tier: str = "teacher",
    output: dict | None = None,
    valid: bool = True,
    messages: list | None = None,
    tools: list | None = None,
    task: str = TASK,
) -> dict:
    """A trace row for `ex`, created n minutes after T0 (so the order of traces is explicit)."""
    return {
        "id": new_id(),
        "task_name": task,
        "tier": tier,
        "model": f"{tier}-model",
        "valid": valid,
        "input": ex["input"],
        "input_hash": input_hash(ex["input"]),
        "output": output or ex["output"],
        "output_text": compact_json(output or ex["output"]),
        "messages": messages,
        "tools": tools,
        "created_at": T0 + timedelta(minutes=n),
    }


def build(store, tmp_path: Path, **kw):
    kw.setdefault("instructions", INSTRUCTIONS)
    kw.setdefault("out_dir", tmp_path / "datasets")
    return build_dataset(store, TASK, **kw)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def user_inputs(rows: list[dict]) -> list[dict]:
    return [json.loads(r["messages"][1]["content"]) for r in rows]


def test_build_writes_chat_rows_and_records_the_dataset(store, tmp_path, examples):
    """Plain traces become system/user/assistant rows in chat_format's exact text; the row and manifest agree."""
    store.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:60])])
    built = build(store, tmp_path)
    train, evals = read(built.train_path), read(built.eval_path)
    assert len(train) + len(evals) == 60 and train and evals
    by_hash = {input_hash(ex["input"]): ex for ex in examples[:60]}
    for row in train + evals:
        inp = json.loads(row["messages"][1]["content"])
        ex = by_hash[input_hash(inp)]
        assert row["messages"] == [
            {"role": "system", "content": INSTRUCTIONS},
            {"role": "user", "content": compact_json(ex["input"])},
            {"role": "assistant", "content": render_answer(ex["output"])},
        ]
    assert evals[0]["output"] == by_hash[evals[0]["input_hash"]]["output"] and evals[0]["reference"] is None
    assert read(built.openai_path) == train  # a task without tools: OpenAI rows are the same rows
    row = store.dataset(built.id)
    manifest = load_manifest(built.path)
    assert row.path == str(built.path) and row.content_hash == manifest["content_hash"]
    assert row.counts == manifest["counts"] == built.counts
    assert row.counts["selected"] == 60 and row.counts["train"] == len(train) and row.counts["eval"] == len(evals)
    assert row.params["redact"] == "secrets" and row.params["near_dup_threshold"] == 0.7
    assert manifest["params"]["tiers"] == ["teacher", "import"]  # the tiers selected from, not every tier


def test_the_manifest_names_the_tiers_the_dataset_was_selected_from(db, tmp_path, examples):
    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:10])])
    built = build(db, tmp_path, eval_fraction=0.3, tiers=("replay", "teacher"))
    assert load_manifest(built.path)["params"]["tiers"] == ["teacher", "replay"]


def test_exact_duplicates_keep_the_teacher_then_the_newest(db, tmp_path, examples):
    """For one input: teacher beats replay whatever the age; among teacher traces the newest wins."""
    ex, other = examples[0], examples[1]
    outs = [dict(ex["output"], quantity=q) for q in (91, 92, 93, 94)]
    db.insert_traces(
        [
            trace(ex, 1, tier="replay", output=outs[0]),
            trace(ex, 2, output=outs[1]),
            trace(ex, 3, output=outs[2]),
            trace(ex, 4, tier="replay", output=outs[3]),
            trace(other, 5),
        ]
    )
    built = build(db, tmp_path, eval_fraction=0, tiers=("teacher", "replay"))
    rows = read(built.train_path)
    assert len(rows) == 2
    kept = next(r for r in rows if json.loads(r["messages"][1]["content"]) == ex["input"])
    assert json.loads(kept["messages"][2]["content"])["quantity"] == 93
    assert built.counts["selected"] == 5 and built.counts["exact_dups"] == 3
    assert built.counts["exact_dup_conflicts"] == 3  # every later trace disagreed with the one kept before it


def test_only_valid_unrejected_teacher_import_traces_are_used(db, tmp_path, examples):
    """Invalid, student-tier, other-task and reviewer-rejected traces never reach a file; replay traces only when
    asked for (they are schema-valid, not known right)."""
    tiers = ["teacher", "replay", "import"] * 2
    good = [trace(ex, i, tier=tier) for i, (ex, tier) in enumerate(zip(examples[:6], tiers))]
    rejected = trace(examples[10], 20)
    db.insert_traces(
        good
        + [
            rejected,
            trace(examples[11], 21, valid=False),
            trace(examples[12], 22, tier="student"),
            trace(examples[13], 23, task="other_task"),
        ]
    )
    db.add_label(rejected["id"], "bad", reviewer="ana")
    built = build(db, tmp_path, eval_fraction=0.3)
    seen = user_inputs(read(built.train_path)) + [r["input"] for r in read(built.eval_path)]
    wanted = [ex for ex, tier in zip(examples[:6], tiers) if tier != "replay"]
    assert sorted(map(input_hash, seen)) == sorted(input_hash(ex["input"]) for ex in wanted)
    assert built.counts["selected"] == 4
    with_replay = build(db, tmp_path, eval_fraction=0.3, tiers=("teacher", "replay", "import"))
    assert with_replay.counts["selected"] == 6


def test_a_copy_of_an_answer_labelled_bad_is_left_out_too(db, tmp_path, examples):
    """A reviewer's "bad" judges that answer to that input: an identical imported copy of the trace was trained
    on. The same input with another answer stays."""
    judged = trace(examples[0], 1)
    copy = trace(examples[0], 2, tier="import")
    other_answer = trace(examples[0], 3, output={**examples[0]["output"], "urgency": "low"})
    db.insert_traces([judged, copy, trace(examples[1], 4)])
    db.add_label(judged["id"], "bad", reviewer="ana")
    assert build(db, tmp_path, eval_fraction=0.0).counts["selected"] == 1
    db.insert_traces([other_answer])
    assert build(db, tmp_path, eval_fraction=0.0).counts["selected"] == 2
    db.add_label(copy["id"], "good", reviewer="bo")  # a copy judged good: that answer is trained on after all
    assert build(db, tmp_path, eval_fraction=0.0).counts["selected"] == 3


def test_traces_of_an_older_contract_stay_only_while_their_output_still_validates(db, tmp_path, examples):
    """After a contract change (version 2), a version-1 trace whose output fits the new output model is kept (a
    schema change that leaves it valid); one whose output does not fit is left out and counted, and so is every
    trace of a version with other instructions."""
    from pydantic import BaseModel, ConfigDict

    class OrderV2(BaseModel):  # version 2 made the city required and dropped no field
        model_config = ConfigDict(extra="forbid")
        customer_name: str | None
        order_id: str | None
        product: str
        quantity: int
        deliver_by: str | None
        city: str
        contact_email: str | None
        urgency: str

    with_city = [ex for ex in examples if ex["output"]["city"]][:2]
    without_city = [ex for ex in examples if not ex["output"]["city"]][:2]
    rows = [trace(ex, i) | {"task_version": 1} for i, ex in enumerate(with_city + without_city)]
    db.insert_traces(rows + [trace(examples[-1], 9) | {"task_version": 2}])
    built = build(db, tmp_path, eval_fraction=0.0, contract=(2, OrderV2))
    assert built.counts["stale_contract"] == 2 and built.counts["selected"] == 3
    kept = {input_hash(i) for i in user_inputs(read(built.train_path))}
    assert kept == {input_hash(ex["input"]) for ex in [*with_city, examples[-1]]}
    assert build(db, tmp_path, eval_fraction=0.0).counts["selected"] == 5  # no contract given: every version
    # version 1 had other instructions ("write the city in upper case" added): none of its traces is kept
    other = build(db, tmp_path, eval_fraction=0.0, contract=(2, OrderV2), stale_versions=[1])
    assert other.counts["stale_contract"] == 4 and other.counts["selected"] == 1


def near_copy(ex: dict, *, suffix: str, output: dict | None = None) -> dict:
    """The same email with a line added (and a typo), as a repeated real email picks up."""
    ex = copy.deepcopy(ex)
    email = ex["input"]["email"]
    email["body"] = email["body"].replace("Thanks", "Thnaks", 1) + suffix
    if output is not None:
        ex["output"] = output
    return ex


def test_near_duplicates_are_dropped_unless_their_output_differs(db, tmp_path, examples):
    """Near-copies with the same output go; those with another output stay, always in their original's split."""
    base = examples[:40]
    same = [near_copy(ex, suffix="\n\nSent from my phone") for ex in base[:10]]
    originals = [ex for ex in base[10:20] if ex["output"]["urgency"] != "high"]
    variants = [
        near_copy(ex, suffix="\n\nThis is urgent.", output=dict(ex["output"], urgency="high")) for ex in originals
    ]
    db.insert_traces([trace(ex, i) for i, ex in enumerate(base + same + variants)])
    built = build(db, tmp_path, eval_fraction=0.5)
    assert built.counts["near_dups"] == 10 and built.counts["near_dup_variants"] == len(variants) > 5
    train = {input_hash(i) for i in user_inputs(read(built.train_path))}
    evals = {r["input_hash"] for r in read(built.eval_path)}
    assert not train & evals and len(train | evals) == 40 + len(variants)
    assert not {input_hash(ex["input"]) for ex in same} & (train | evals)
    for original, variant in zip(originals, variants):
        pair = {input_hash(original["input"]), input_hash(variant["input"])}
        assert pair <= train or pair <= evals


def test_split_is_disjoint_deterministic_and_stable_as_traces_arrive(db, tmp_path, examples):
    """No input in both files; the same traces give the same bytes; earlier inputs keep their side later."""
    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:200])])
    first = build(db, tmp_path)
    again = build(db, tmp_path)
    assert first.id != again.id and first.row.content_hash == again.row.content_hash
    before_eval = {r["input_hash"] for r in read(first.eval_path)}
    before_train = {input_hash(i) for i in user_inputs(read(first.train_path))}
    assert not before_eval & before_train and 25 <= len(before_eval) <= 55
    db.insert_traces([trace(ex, 200 + i) for i, ex in enumerate(examples[200:300])])
    later = build(db, tmp_path)
    later_eval = {r["input_hash"] for r in read(later.eval_path)}
    assert before_eval <= later_eval and not before_train & later_eval
    reseeded = build(db, tmp_path, seed=1)
    assert {r["input_hash"] for r in read(reseeded.eval_path)} != later_eval


def tool_transcript(ex: dict) -> list[dict]:
    """A teacher transcript: a tool round (its result leaks a key), retry feedback, then the forced final tool."""
    return [
        {"role": "system", "content": "teacher prompt with the skill"},
        {"role": "user", "content": compact_json(ex["input"])},
        {
            "role": "assistant",
            "content": "Checking the order.",
            "tool_calls": [{"id": "c1", "name": "lookup_order", "arguments": {"order_id": "ORD-123456"}}],
        },
        {
            "role": "tool",
            "tool_call_id": "c1",
            "name": "lookup_order",
            "content": json.dumps({"status": "shipped", "debug": f"auth={ANTHROPIC_KEY}"}),
        },
        {"role": "assistant", "content": "{not json"},
        {"role": "user", "content": "Your answer was not valid JSON; answer again."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "c2", "name": "final_answer", "arguments": ex["output"]}],
        },
    ]


def test_tool_traces_keep_their_tool_rounds_in_both_formats(db, tmp_path, examples):
    """Agentic rows: tools in the system prompt + text-protocol calls (TRL), native calls + "tools" (OpenAI)."""
    agentic, plain = examples[0], examples[1]
    db.insert_traces([trace(agentic, 0, messages=tool_transcript(agentic), tools=[LOOKUP, FINAL]), trace(plain, 1)])
    built = build(db, tmp_path, eval_fraction=0)
    trl = {input_hash(json.loads(r["messages"][1]["content"])): r for r in read(built.train_path)}
    oai = {input_hash(json.loads(r["messages"][1]["content"])): r for r in read(built.openai_path)}
    row = trl[input_hash(agentic["input"])]["messages"]
    assert row[0]["content"] == INSTRUCTIONS + "\n\n" + render_tools([ToolSpec(**LOOKUP)])
    assert [m["role"] for m in row] == ["system", "user", "assistant", "tool", "assistant"]
    assert row[2]["content"] == (
        'Checking the order.<tool_call>{"name":"lookup_order","arguments":{"order_id":"ORD-123456"}}</tool_call>'
    )
    assert "[REDACTED:api_key]" in row[3]["content"] and row[4]["content"] == render_answer(agentic["output"])
    native = oai[input_hash(agentic["input"])]
    assert native["tools"] == [{"type": "function", "function": LOOKUP}]
    assert native["messages"][0]["content"] == INSTRUCTIONS
    assert native["messages"][2]["tool_calls"][0]["function"] == {
        "name": "lookup_order",
        "arguments": '{"order_id": "ORD-123456"}',
    }
    assert native["messages"][3]["tool_call_id"] == "c1"
    assert "tools" not in oai[input_hash(plain["input"])]
    assert built.counts["tool_rows"] == 1


def test_a_tool_task_answer_without_tool_calls_still_shows_the_tools(db, tmp_path, examples):
    """The student is served with the task's tools in its prompt, so every row of a tool task is trained so."""
    ex = examples[3]
    db.insert_traces([trace(ex, 0, tools=[LOOKUP, FINAL])])
    built = build(db, tmp_path, eval_fraction=0)
    (row,) = read(built.train_path)
    assert row["messages"][0]["content"] == INSTRUCTIONS + "\n\n" + render_tools([ToolSpec(**LOOKUP)])
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    (native,) = read(built.openai_path)
    assert native["tools"] == [{"type": "function", "function": LOOKUP}]
    task_tools = build(db, tmp_path, eval_fraction=0, tools=[ToolSpec(name="search", description="s")])
    assert "search" in read(task_tools.train_path)[0]["messages"][0]["content"]


def with_secret(ex: dict) -> dict:
    ex = copy.deepcopy(ex)
    ex["input"]["email"]["body"] += (
        f"\n\nPS our integration key is {ANTHROPIC_KEY} and db postgres://app:pw123456@db:5432"
    )
    return ex


@pytest.mark.parametrize("mode", ["secrets", "pii"])
def test_redaction_reaches_every_output_file(db, tmp_path, examples, mode):
    """Secrets never reach any file in either mode; email addresses go only with mode='pii'."""
    secret_exs = [with_secret(ex) for ex in examples[:30]]
    tool_ex = examples[40]
    db.insert_traces(
        [trace(ex, i) for i, ex in enumerate(secret_exs)]
        + [trace(ex, 50 + i) for i, ex in enumerate(examples[30:40])]
        + [trace(tool_ex, 90, messages=tool_transcript(tool_ex), tools=[LOOKUP])]
    )
    refs = {input_hash(ex["input"]): dict(ex["output"], contact_email="ops@northwind.example") for ex in secret_exs}
    built = build(db, tmp_path, redact=mode, eval_fraction=0.4, references=refs)
    files = sorted(p for p in built.path.iterdir())
    names = ["eval.jsonl", "manifest.json", "openai.jsonl", "openai_eval.jsonl", "train.jsonl"]
    assert [p.name for p in files] == names
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert ANTHROPIC_KEY not in text and "Zx9Yw8Vu7Ts6" not in text and "pw123456" not in text, path.name
        if path.suffix == ".jsonl":
            emails_left = "@gmail.com" in text or "ops@northwind.example" in text or "@northwind-supply.com" in text
            assert emails_left == (mode == "secrets"), path.name
    assert built.counts["redacted_api_key"] >= 31 and built.counts["redacted_credentials"] == 30
    assert built.counts["redacted_rows"] >= 31
    evals = read(built.eval_path)
    with_ref = [r for r in evals if r["reference"] is not None]
    assert with_ref and all("[REDACTED:api_key]" in r["input"]["email"]["body"] for r in with_ref)


def test_references_are_carried_into_eval_rows_only(db, tmp_path, examples):
    """Known right answers (by input hash) ride along in eval rows; train rows stay plain chat."""
    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:50])])
    refs = {input_hash(ex["input"]): ex["output"] for ex in examples[:25]}
    built = build(db, tmp_path, references=refs)
    for row in read(built.eval_path):
        assert row["reference"] == refs.get(row["input_hash"])
    assert all(set(r) == {"messages"} for r in read(built.train_path))


def test_a_failure_mid_write_leaves_no_dataset(db, tmp_path, examples, monkeypatch):
    """An error while writing removes the half-written folder, and no DatasetRow is recorded."""
    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:40])])
    calls = {"n": 0}
    real = dataset_mod._Formatter.rows

    def failing(self, item, **kw):
        calls["n"] += 1
        if calls["n"] == 20:
            raise RuntimeError("disk full")
        return real(self, item, **kw)

    monkeypatch.setattr(dataset_mod._Formatter, "rows", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        build(db, tmp_path)
    task_dir = tmp_path / "datasets" / TASK
    assert list(task_dir.iterdir()) == [] and db.datasets(TASK) == []


def test_a_failed_store_write_removes_the_folder(db, tmp_path, examples, monkeypatch):
    """If the DatasetRow cannot be recorded, the finished folder goes too: no folder without its row."""
    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:10])])
    monkeypatch.setattr(db, "add_dataset", lambda row: (_ for _ in ()).throw(RuntimeError("db down")))
    with pytest.raises(RuntimeError, match="db down"):
        build(db, tmp_path)
    assert list((tmp_path / "datasets" / TASK).iterdir()) == []


CRASH_SCRIPT = """
import os, sys
from protege.distill import dataset, export
from protege.store import Store
real, n = export.JsonlWriter.write, [0]
def write(self, line):
    n[0] += 1
    if n[0] == 25:
        os._exit(3)  # the process dies mid-write: no cleanup code runs
    real(self, line)
export.JsonlWriter.write = write
dataset.build_dataset(Store(sys.argv[1]), "extract_order", instructions="Extract the order.", out_dir=sys.argv[2])
"""


def test_a_killed_build_leaves_nothing_that_looks_complete(sqlite_url, tmp_path, examples):
    """A process killed mid-write leaves only a hidden .tmp folder without manifest, and no DatasetRow."""
    store = Store(sqlite_url)
    store.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:60])])
    out = tmp_path / "datasets"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, sqlite_url, str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")},
    )
    assert proc.returncode == 3, proc.stderr
    leftovers = list((out / TASK).iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".") and leftovers[0].name.endswith(".tmp")
    assert not (leftovers[0] / "manifest.json").exists()
    with pytest.raises(UserError, match="not a complete protege dataset"):
        load_manifest(leftovers[0])
    assert store.datasets(TASK) == []
    assert build(store, tmp_path).counts["selected"] == 60  # the next build is unaffected
    store.close()


def test_progress_reports_each_stage(db, tmp_path, examples):
    """The callback hears select, near_dups and write, ending with done == total."""
    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:30])])
    calls = []
    build(db, tmp_path, progress=lambda stage, done, total: calls.append((stage, done, total)))
    assert [c[0] for c in calls] == ["select", "near_dups", "write"]
    assert calls[-1] == ("write", 30, 30)


def test_bad_arguments_and_empty_tasks_are_user_errors(db, tmp_path, examples):
    """Each misuse names the bad value; a task without traces says how to get some."""
    with pytest.raises(UserError, match="'extract_order'"):
        build(db, tmp_path)
    db.insert_traces([trace(examples[0], 0)])
    for kw, bad in [
        ({"eval_fraction": 1.0}, "1.0"),
        ({"redact": "all"}, "'all'"),
        ({"near_dup_threshold": 0.0}, "0.0"),
        ({"instructions": "  "}, "instructions"),
    ]:
        with pytest.raises(UserError, match=bad):
            build(db, tmp_path, **kw)


def test_field_kinds_are_learned_from_the_train_rows_the_pipeline_reads(db, tmp_path, examples):
    """Train rows carry only their chat; the distill pipeline learns the answer profile from them, so the input
    and output must be read back from the turns (a profile learned from nothing constrained nothing)."""
    from protege.demo.workload import Order
    from protege.distill.answer_kinds import learn_answer_profile

    db.insert_traces([trace(ex, i) for i, ex in enumerate(examples[:120])])
    built = build(db, tmp_path)
    train = read(built.train_path)
    assert "output" not in train[0]  # what makes the read-back necessary
    kinds = learn_answer_profile(train, Order.model_json_schema()).kinds()
    assert {"customer_name", "contact_email"} <= {k for k, v in kinds.items() if v == "copied"}
