"""Tasks, runs and traces: contract versioning, filters, paging, counts, dataset selection and bulk ingest."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError

from protege.errors import UserError
from protege.store import RunRow, TraceRow

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _register(store, contract: str, policy: dict | None = None):
    return store.register_task(
        name="triage",
        contract_hash=contract,
        input_schema={"c": contract},
        output_schema={},
        instructions=f"v {contract}",
        policy=policy,
    )


def test_same_contract_returns_same_row_and_changed_contract_is_new_version(store):
    """Re-registering an unchanged contract returns the same row; a changed one becomes version 2."""
    first = _register(store, "aaa")
    again = _register(store, "aaa")
    assert (again.id, again.version) == (first.id, 1)
    second = _register(store, "bbb")
    assert (second.version, second.id != first.id) == (2, True)
    assert store.task("triage").contract_hash == "bbb"
    assert store.task("triage", version=1).contract_hash == "aaa"
    assert [(t.name, t.version) for t in store.tasks()] == [("triage", 2)]


def test_reflowed_instructions_keep_the_version_and_new_words_or_paragraphs_do_not(store):
    """A docstring re-wrapped or re-indented is the same contract (its student and skill stay in service); a word
    changed, or a paragraph split (the student's prompt is the first paragraph), is a new version."""

    def register(contract: str, text: str):
        return store.register_task(
            name="t", contract_hash=contract, input_schema={}, output_schema={"o": 1}, instructions=text
        )

    first = register("h1", "Read the order.\nWrite the city as given.\n\nNever guess.")
    reflowed = register("h2", "Read the order. Write the city\n   as given.\n \n  Never  guess. ")
    assert (reflowed.id, reflowed.version, reflowed.contract_hash) == (first.id, 1, "h1")
    split = register("h3", "Read the order.\n\nWrite the city as given.\n\nNever guess.")
    assert split.version == 2
    assert register("h4", "Read the order.\n\nWrite the city in capitals.\n\nNever guess.").version == 3
    schema_changed = store.register_task(
        name="t", contract_hash="h5", input_schema={}, output_schema={"o": 2}, instructions=split.instructions
    )
    assert schema_changed.version == 4


def test_concurrent_registration_of_one_contract_makes_one_row(store):
    """Eight threads registering the same contract at once all get the same version-1 row."""
    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(lambda _: _register(store, "same"), range(8)))
    assert {(r.id, r.version) for r in rows} == {(rows[0].id, 1)}
    assert len(store.tasks()) == 1


def test_policy_change_updates_in_place(store):
    """A new policy on the same contract updates the row without a new version."""
    _register(store, "aaa", policy={"min_traces": 10})
    row = _register(store, "aaa", policy={"min_traces": 50})
    assert row.version == 1 and store.task("triage").policy == {"min_traces": 50}


def _seed(store) -> list[TraceRow]:
    rows = []
    for i in range(30):
        rows.append(
            TraceRow(
                task_name="a" if i % 3 else "b",
                tier=("teacher", "replay", "student")[i % 3],
                valid=i % 2 == 0,
                shadow=i % 5 == 0,
                run_id=f"r{i % 4}",
                created_at=T0 + timedelta(minutes=i),
                cost_usd=0.01 * i,
            )
        )
    for row in rows:
        store.insert_trace(row)
    return rows


def test_trace_filters_paging_and_counts(store):
    """traces() filters by task/tier/valid/run/shadow, pages newest first, and count_traces agrees."""
    rows = _seed(store)

    def want(pred):
        return sorted((r for r in rows if pred(r)), key=lambda r: r.created_at, reverse=True)

    cases = [
        ({}, lambda r: True),
        ({"task": "a"}, lambda r: r.task_name == "a"),
        ({"task": "a", "tier": "replay"}, lambda r: r.task_name == "a" and r.tier == "replay"),
        ({"valid": True}, lambda r: r.valid),
        ({"valid": False, "shadow": True}, lambda r: not r.valid and r.shadow),
        ({"run_id": "r1"}, lambda r: r.run_id == "r1"),
    ]
    for kw, pred in cases:
        expected = [r.id for r in want(pred)]
        assert [t.id for t in store.traces(**kw, limit=None)] == expected, kw
        assert store.count_traces(**kw) == len(expected), kw
    everything = [t.id for t in store.traces(limit=None)]
    pages = [t.id for off in range(0, 30, 7) for t in store.traces(limit=7, offset=off)]
    assert pages == everything
    assert [t.id for t in store.traces(limit=5, oldest_first=True)] == everything[::-1][:5]


def test_dataset_traces_selects_valid_unrejected_work(store):
    """dataset_traces keeps valid teacher/import traces (shadow ones too; replay on request), drops invalid,
    student, other-task and reviewer-rejected traces; a later 'good' label restores a rejected trace."""

    def add(**kw) -> TraceRow:
        row = TraceRow(
            task_name=kw.pop("task", "t"),
            tier=kw.pop("tier", "teacher"),
            valid=kw.pop("valid", True),
            created_at=T0 + timedelta(seconds=len(added)),
            **kw,
        )
        store.insert_trace(row)
        added.append(row)
        return row

    added: list[TraceRow] = []
    keep = [add(), add(tier="import"), add(shadow=True)]
    replay = add(tier="replay")
    add(valid=False)
    add(tier="student")
    add(task="other")
    rejected = add()
    store.add_label(rejected.id, "bad", reviewer="ann")
    restored = add()
    store.add_label(restored.id, "bad", reviewer="ann")
    store.add_label(restored.id, "good", reviewer="bob")
    store.add_label(keep[0].id, "good")
    got = list(store.dataset_traces("t"))
    assert [d["id"] for d in got] == [r.id for r in keep + [restored]]
    assert set(got[0]) >= {"id", "tier", "input", "messages", "output", "output_text", "input_hash", "created_at"}
    assert [d["id"] for d in store.dataset_traces("t", tiers=("replay",))] == [replay.id]


def test_add_label_checks_verdict_and_trace(store):
    """Labels take only good/bad and only for a stored trace."""
    store.insert_trace(row := TraceRow(task_name="t", tier="teacher"))
    with pytest.raises(UserError, match="'meh'"):
        store.add_label(row.id, "meh")
    with pytest.raises(UserError, match="'nope'"):
        store.add_label("nope", "good")


def test_runs_are_listed_newest_first_and_finished(store):
    """runs() pages a task's runs newest first; finish_run stamps an aware finish time."""
    for i in range(5):
        store.insert_run(RunRow(id=f"run{i}", task_name="t" if i < 4 else "u", created_at=T0 + timedelta(hours=i)))
    store.finish_run("run2", status="ok", tier="teacher")
    assert [r.id for r in store.runs("t", limit=2)] == ["run3", "run2"]
    assert store.runs(limit=10)[0].id == "run4"
    done = store.run("run2")
    assert done.status == "ok" and done.finished_at.tzinfo is not None


def test_bulk_ingest_of_20k_traces(store):
    """insert_traces stores 20,000 dict and row traces intact, with defaults filled in, in batches."""
    dicts = [
        {
            "task_name": "bulk",
            "tier": "import",
            "input": {"i": i},
            "output": {"o": i},
            "valid": i % 10 != 0,
            "created_at": T0 + timedelta(microseconds=i),
        }
        for i in range(15_000)
    ]
    rows = [
        TraceRow(
            task_name="bulk",
            tier="import",
            input={"i": i},
            valid=True,
            created_at=T0 + timedelta(seconds=1, microseconds=i),
        )
        for i in range(15_000, 20_000)
    ]
    assert store.insert_traces(dicts) == 15_000
    assert store.insert_traces(rows, batch=999) == 5_000
    assert store.count_traces("bulk") == 20_000
    assert store.count_traces("bulk", valid=False) == 1_500
    oldest = store.traces("bulk", limit=3, oldest_first=True)
    assert [t.input for t in oldest] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert len({t.id for t in store.traces("bulk", limit=None)}) == 20_000
    assert oldest[0].model == "" and oldest[0].errors is None and oldest[0].attempt == 0


def test_bulk_rows_are_stored_as_single_inserts_store_them(store):
    """insert_traces (executemany on SQLite, COPY on PostgreSQL) writes every column exactly as insert_trace does:
    JSON with quotes, tabs, newlines, backslashes and unicode, SQL NULL for None, NUL made U+FFFD, bools, floats,
    aware datetimes."""
    trace = {
        "task_name": "t\tab",
        "tier": "import",
        "input": {"text": 'a "quoted"\tvalue\nover lines \\ é 🙂', "n": [1, 2.5, None, True]},
        "output": {"x": "\x00kept in JSON"},
        "output_text": "line\\N\nnext\x00",
        "messages": None,
        "valid": True,
        "shadow": False,
        "confidence": 0.125,
        "latency_s": 1e-7,
        "created_at": datetime(2025, 3, 4, 5, 6, 7, 89, tzinfo=UTC),
    }
    store.insert_trace({**trace, "id": "single"})
    store.insert_traces([{**trace, "id": "bulk"}, TraceRow(**{**trace, "id": "bulk-row"})])
    columns = [c for c in TraceRow.model_fields if c != "id"]
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"SELECT id, {', '.join(columns)} FROM trace ORDER BY id").all()
    stored = {row[0]: tuple(row[1:]) for row in rows}
    assert stored["bulk"] == stored["single"] and stored["bulk-row"] == stored["single"]
    back = store.trace("bulk")
    assert back.input == trace["input"] and back.output == trace["output"] and back.messages is None
    assert back.output_text == "line\\N\nnext\ufffd" and back.created_at == trace["created_at"]


def test_bulk_ingest_of_a_taken_id_fails_whole(store):
    """A batch holding an id already stored fails as an IntegrityError and stores none of its rows."""
    store.insert_trace({"id": "taken", "task_name": "t", "tier": "import"})
    with pytest.raises(IntegrityError):
        store.insert_traces(
            [{"id": "new", "task_name": "t", "tier": "import"}, {"id": "taken", "task_name": "t", "tier": "import"}]
        )
    assert store.count_traces("t") == 1
    assert store.insert_traces([{"id": "new", "task_name": "t", "tier": "import"}]) == 1


def test_dict_rows_are_checked(store):
    """A dict row with an unknown field or without a required one is a UserError, not a silently dropped value."""
    with pytest.raises(UserError, match="'bogus'"):
        store.insert_traces([{"task_name": "t", "tier": "import", "bogus": 1}])
    with pytest.raises(UserError, match="'tier'"):
        store.insert_trace({"task_name": "t"})
    with pytest.raises(UserError, match="'task_name'"):
        store.insert_run({"input": {}})
    assert store.count_traces() == 0 and store.runs() == []


def test_dict_rows_on_the_hot_path(store):
    """insert_run and insert_trace take plain dicts, filling defaults like the models do."""
    store.insert_run({"id": "r1", "task_name": "t", "input": {"x": 1}})
    store.insert_trace({"run_id": "r1", "task_name": "t", "tier": "teacher", "valid": True})
    run, trace = store.run("r1"), store.traces(run_id="r1")[0]
    assert (run.status, run.input, run.created_at.tzinfo is not None) == ("running", {"x": 1}, True)
    assert (trace.valid, trace.attempt, trace.messages, len(trace.id)) == (True, 0, None, 32)


def test_record_attempt_writes_run_trace_and_outcome_in_one_transaction(store):
    """A call's first attempt carries its run row, its last the outcome; a refused trace takes its run with it."""
    run = {"id": "r1", "task_name": "t", "input": {"x": 1}, "input_hash": "h"}
    store.record_attempt({"id": "a0", "run_id": "r1", "task_name": "t", "tier": "replay", "valid": False}, run=run)
    assert store.run("r1").status == "running"
    store.record_attempt(
        {"id": "a1", "run_id": "r1", "task_name": "t", "tier": "teacher", "valid": True},
        finish={"status": "ok", "tier": "teacher", "output": {"y": 2}, "cost_usd": 0.5},
    )
    done = store.run("r1")
    assert (done.status, done.tier, done.output, done.cost_usd) == ("ok", "teacher", {"y": 2}, 0.5)
    assert done.finished_at is not None
    assert sorted(t.id for t in store.traces("t", run_id="r1")) == ["a0", "a1"]
    with pytest.raises(IntegrityError):  # the trace id already exists: the run row must not land without it
        store.record_attempt(
            {"id": "a1", "run_id": "r2", "task_name": "t", "tier": "teacher"},
            run={"id": "r2", "task_name": "t", "input": {}, "input_hash": "h2"},
        )
    assert store.run("r2") is None
