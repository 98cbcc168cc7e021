"""Every table round-trips through the Store on SQLite and PostgreSQL: values, JSON, NULLs and aware UTC times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import select

from protege.errors import UserError
from protege.store import BudgetHold, DatasetRow, RunRow, ShadowRow, SkillRow, StudentRow, TraceRow
from protege.store.models import BudgetHoldRow, BudgetRow

IST = timezone(timedelta(hours=5, minutes=30))
WHEN = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=IST)  # not UTC on purpose: it must come back as UTC
NESTED = {"ünïcode": "✓ ok", "list": [1, 2.5, None, True, {"deep": ["x"]}], "big": 2**53, "empty": {}}


def _fields(row) -> dict:
    return {name: getattr(row, name) for name in type(row).model_fields}


def _assert_same(got, want) -> None:
    assert got is not None
    assert _fields(got) == _fields(want)
    for name, value in _fields(got).items():
        if isinstance(value, datetime):
            assert value.utcoffset() == timedelta(0), f"{name} came back as {value!r}, not UTC"


def test_task_round_trip(store):
    """A registered task comes back with its schemas, instructions, policy and an aware creation time."""
    row = store.register_task(
        name="triage",
        contract_hash="c1",
        input_schema=NESTED,
        output_schema={"type": "object"},
        instructions="Route tickets.\nCarefully.",
        policy={"min_traces": 200},
    )
    _assert_same(store.task("triage"), row)
    assert store.task("triage").created_at.tzinfo == UTC


def test_run_round_trip(store):
    """A run and its finish fields come back unchanged, times normalized to UTC."""
    run = RunRow(task_name="triage", task_version=2, input=NESTED, input_hash="h", created_at=WHEN)
    store.insert_run(run)
    store.finish_run(
        run.id,
        status="ok",
        tier="replay",
        output={"queue": "bug"},
        cost_usd=0.25,
        latency_s=1.5,
        error="none",
        finished_at=WHEN + timedelta(seconds=3),
    )
    got = store.run(run.id)
    expected = run.model_copy(
        update={
            "status": "ok",
            "tier": "replay",
            "output": {"queue": "bug"},
            "cost_usd": 0.25,
            "latency_s": 1.5,
            "error": "none",
            "finished_at": WHEN + timedelta(seconds=3),
        }
    )
    _assert_same(got, expected)
    assert got.created_at == WHEN and got.created_at.tzinfo == UTC


def test_trace_round_trip(store):
    """Every trace field, JSON transcripts included, survives the trip."""
    trace = TraceRow(
        run_id="r1",
        task_name="triage",
        task_version=3,
        tier="teacher",
        model="anthropic:claude-opus-4-5",
        attempt=2,
        shadow=True,
        skill_version=4,
        student_id="s1",
        input=NESTED,
        input_hash="h",
        messages=[{"role": "user", "content": 'hi \x01 "quoted"'}],
        tools=[{"name": "lookup"}],
        output={"queue": "bug", "priority": 1},
        output_text='{"queue": "bug"}',
        valid=True,
        errors=["e1"],
        input_tokens=10,
        output_tokens=20,
        cache_read_tokens=30,
        cache_write_tokens=40,
        cost_usd=0.125,
        latency_s=0.5,
        confidence=-0.25,
        raw=[{"id": "msg_1"}],
        created_at=WHEN,
    )
    store.insert_trace(trace)
    _assert_same(store.trace(trace.id), trace)


def test_json_none_is_sql_null(store):
    """A None JSON field is stored as SQL NULL (not the JSON text 'null'), so IS NULL filters find it."""
    store.insert_trace(TraceRow(task_name="t", tier="teacher"))
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM trace WHERE tools IS NULL AND output IS NULL")).scalar() == 1
    assert store.traces("t")[0].tools is None


def test_skill_label_dataset_student_shadow_round_trip(store):
    """Skills, labels, datasets, students and shadows come back as written."""
    skill = store.add_skill(
        SkillRow(
            task_name="triage",
            name="triage",
            description="d",
            text="# body",
            files={"examples.md": "x"},
            source_trace_ids=["a"],
            author_model="m",
            evidence={"agreement": 0.9},
            reviewed_by="ann",
            reviewed_at=WHEN,
            review_note="fine",
            created_at=WHEN,
        )
    )
    _assert_same(store.skill("triage"), skill)
    store.insert_trace(trace := TraceRow(task_name="triage", tier="teacher"))
    label = store.add_label(trace.id, "bad", reviewer="ann", note="wrong queue")
    _assert_same(store.labels(trace.id)[0], label)
    ds = store.add_dataset(
        DatasetRow(
            task_name="triage", path="/d", content_hash="sha", counts={"train": 9}, params={"seed": 1}, created_at=WHEN
        )
    )
    _assert_same(store.dataset(ds.id), ds)
    assert [d.id for d in store.datasets("triage")] == [ds.id] and store.datasets("other") == []
    st = store.add_student(
        StudentRow(
            task_name="triage",
            base="smollm2-135m",
            adapter_path="/a",
            adapter_hash="x",
            dataset_id=ds.id,
            metrics={"retention": 0.97},
            params={"r": 16},
            state="promoted",
            promoted_at=WHEN,
        )
    )
    _assert_same(store.student(st.id), st)
    sh = store.add_shadow(
        ShadowRow(
            task_name="triage",
            run_id="r",
            tier="student",
            trace_id="t",
            teacher_trace_id="tt",
            agreement=0.5,
            created_at=WHEN,
        )
    )
    with store.session() as s:
        _assert_same(s.get(ShadowRow, sh.id), sh)


def test_budget_round_trip(store):
    """A reservation creates the day's budget row and its hold row; `spent` reads back what counts."""
    assert isinstance(store.reserve_budget(0.75, {"triage": 10.0}, day="2025-01-01"), BudgetHold)
    assert store.spent("triage", day="2025-01-01") == pytest.approx(0.75)
    with store.session() as s:
        row = s.exec(select(BudgetRow)).one()
        hold = s.exec(select(BudgetHoldRow)).one()
    assert (row.task_name, row.day, row.spent_usd, row.reserved_usd) == ("triage", "2025-01-01", 0.0, 0.75)
    assert (hold.task_name, hold.day, hold.amount_usd) == ("triage", "2025-01-01", 0.75)


def test_naive_datetimes_are_refused(store):
    """Naive datetimes are ambiguous: shadow_agreement and bulk ingest refuse them with a UserError."""
    with pytest.raises(UserError, match="no timezone"):
        store.shadow_agreement("t", "student", since=datetime(2025, 1, 1))
    with pytest.raises(UserError, match="no timezone"):
        store.insert_traces([{"task_name": "t", "tier": "import", "created_at": datetime(2025, 1, 1)}])


@pytest.mark.parametrize("big", [2**63, -(2**63) - 1, 2**64 + 1, 10**30])
def test_integers_past_64_bits_survive_json_columns(store, big):
    """JSON columns keep integers orjson cannot hold (past 64 bits) exact, on write and on read."""
    store.insert_trace(row := TraceRow(task_name="t", tier="teacher", input={"id": big, "f": 0.1}, output=[big]))
    got = store.trace(row.id)
    assert (got.input, got.output) == ({"id": big, "f": 0.1}, [big])


def test_nul_characters_never_lose_an_attempt(store):
    """NUL in a trace's text becomes U+FFFD (PostgreSQL text refuses NUL) while JSON columns keep it exactly."""
    msg = [{"role": "assistant", "content": "a\x00b"}]
    row = TraceRow(task_name="t", tier="teacher", model="m\x00", output_text="x\x00y", messages=msg)
    store.insert_trace(row)
    store.insert_traces([{"task_name": "t", "tier": "import", "output_text": "\x00"}])
    run = RunRow(task_name="t", error="boom\x00")
    store.insert_run(run)
    store.finish_run(run.id, status="failed", error="bad\x00")
    got = store.trace(row.id)
    assert (got.model, got.output_text, got.messages) == ("m\ufffd", "x\ufffdy", msg)
    assert store.traces("t", tier="import")[0].output_text == "\ufffd"
    assert store.run(run.id).error == "bad\ufffd"


def test_in_memory_store_is_shared_by_threads():
    """An in-memory SQLite store is one database for every thread (not an empty one per thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from protege.store import Store

    with Store("sqlite://") as store:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: store.insert_trace(TraceRow(task_name="t", tier="teacher")), range(20)))
        assert store.count_traces("t") == 20


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"a": [1, {"b": 18446744073709551616}]}', {"a": [1, {"b": 2**64}]}),
        ("[-9223372036854775809, 0.5]", [-(2**63) - 1, 0.5]),
        ('{"n": 1e300, "id": 9223372036854775807}', {"n": 1e300, "id": 2**63 - 1}),
        ('{"digits": "12345678901234567890123"}', {"digits": "12345678901234567890123"}),
        ("[NaN]", None),
    ],
)
def test_json_reader_is_exact(text, expected):
    """The store's JSON reader gives what json gives: huge integers exact (orjson alone makes them floats), long
    digit strings untouched, NaN read."""
    import json
    import math

    from protege.store.engine import json_loads

    for form in (text, text.encode(), memoryview(text.encode())):
        got = json_loads(form)
        if expected is None:
            assert math.isnan(got[0])
        else:
            assert got == expected == json.loads(text)
            assert [type(v) for v in _leaves(got)] == [type(v) for v in _leaves(json.loads(text))]


def _leaves(value):
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def test_a_store_url_for_another_database_is_refused_without_its_password():
    """MySQL and the like are not stores protege supports: a UserError that says which are (not the driver's
    'No module named MySQLdb'), with the URL's password masked."""
    from protege.store import Store

    with pytest.raises(UserError, match=r"is a mysql database; protege stores in SQLite .* or PostgreSQL") as caught:
        Store("mysql://ann:s3cret@db.example/app")
    assert "s3cret" not in str(caught.value) and "ann:***@db.example" in str(caught.value)


def test_a_rows_repr_cuts_long_texts_and_counts_json_columns():
    """`print(app.skill("t"))` must not pour a whole SKILL.md and its files onto the screen."""
    skill = SkillRow(
        task_name="t", version=2, text="# Skill\n" + "step\n" * 3000, files={f"f{i}": "x" * 99 for i in range(9)}
    )
    shown = repr(skill)
    assert len(shown) < 700 and "(15,008 chars)" in shown and "<9 keys: f0, f1, f2, f3, f4, f5, …>" in shown
    student = StudentRow(task_name="t", base="b", adapter_path="/a", metrics={"retention": 0.9, "scores": [1.0] * 80})
    assert "<2 keys: retention, scores>" in str(student) and "1.0, 1.0" not in str(student)
    assert "version=2" in shown and "task_name='t'" in shown  # the short fields as they are
