"""The re-distillation benchmark's pure parts (bench/redistill.py): milestones, cost and the report, from made-up
calls, and the app module the auto-distill worker imports. No training here: `python -m bench --only redistill`
runs the real measurement."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `bench` is a top-level package beside src/, run as `python -m bench`
    sys.path.insert(0, str(ROOT))

from bench import redistill, redistill_app  # noqa: E402
from bench.__main__ import BENCHMARKS  # noqa: E402
from bench.drift_stream import make_input, truth  # noqa: E402


def calls(tiers: str, *, wrong: set[int] = frozenset(), student_id: str = "new") -> list[dict]:
    """One record per letter: t(eacher) or s(tudent), a second apart; teacher calls cost 0.01, student ones 0.0001."""
    return [
        {
            "i": i,
            "t": float(i + 1),
            "layout": "b",
            "tier": "teacher" if c == "t" else "student",
            "student_id": student_id if c == "s" else None,
            "right": i not in wrong,
            "student_right": (i not in wrong) if c == "s" else None,
            "cost_usd": 0.01 if c == "t" else 0.0001,
            "latency_s": 0.01,
        }
        for i, c in enumerate(tiers)
    ]


def test_summary_counts_milestones_after_the_shift_and_prices_the_stream_against_the_teacher():
    records = calls("ss" + "t" * 6 + "ssts", wrong={9})
    records[10].update(shadowed=True, shadow_usd=0.01)  # a shadow costs a teacher call, off the call's path
    events = {
        "demoted": {"call": 3, "t": 4.0},
        "promoted": {"call": 7, "t": 8.0, "student_id": "new"},
        "served": {"call": 8, "t": 9.0},
    }
    s = redistill.summarize(records, events, [], before=2)
    assert s["milestones"]["demoted"] == {"calls": 2, "seconds": 2.0}  # call 3 is the 2nd after the shift
    assert s["milestones"]["served"] == {"calls": 7, "seconds": 7.0}
    assert s["teacher_cost_per_call"] == pytest.approx(0.01)
    whole = s["cost"]["whole stream"]
    assert whole["calls"] == 12 and whole["teacher_only_usd"] == pytest.approx(0.12)
    assert whole["served_usd"] == pytest.approx(7 * 0.01 + 5 * 0.0001) and whole["shadows"] == 1
    assert whole["usd"] == pytest.approx(8 * 0.01 + 5 * 0.0001)
    assert s["cost"]["shift → promotion"]["calls"] == 6  # calls 2..7
    post = s["after_promotion"]  # calls 8..11: s s t s, call 9 wrong
    assert post["calls"] == 4 and post["student_share"] == 0.75 and post["served_quality"] == 0.75
    assert post["student_tried"] == 3 and post["student_quality"] == pytest.approx(2 / 3)


def test_a_stream_without_a_promotion_reports_never():
    records = calls("ss" + "t" * 5)
    s = redistill.summarize(records, {"demoted": {"call": 2, "t": 3.0}}, [{"started_at": 1.0, "pid": None}], before=2)
    s.update(evaluation=None, students={}, new_student=None, distill_cost_usd=0.0)
    assert s["after_promotion"] is None and s["cost"]["after the promotion"]["calls"] == 0
    result = redistill.build_result(s, records)
    assert result.headlines[0].value is None
    milestones = {row[0]: row[1] for row in result.tables[0].rows}
    assert milestones[redistill.MILESTONES["served"]] == "never"
    assert result.tables[1].rows[0][0] == "still running"


def test_the_report_names_each_distill_and_the_new_students_quality():
    records = calls("ss" + "ttt" + "sss")
    events = {
        "demoted": {"call": 2, "t": 3.0},
        "promoted": {"call": 4, "t": 5.0, "student_id": "new"},
        "served": {"call": 5, "t": 6.0},
    }
    distills = [
        {
            "started_at": 1.0,
            "outcome": "promoted",
            "student_id": "new",
            "wall_s": 300.0,
            "retention": 0.97,
            "verdict": "retention 0.970 ≥ 0.950",
        }
    ]
    s = redistill.summarize(records, events, distills, before=2)
    s.update(
        evaluation={"n": 100, "quality": 0.93, "invalid": 0.0},
        new_student="new",
        distill_cost_usd=0.0074,
        students={"new": {"train_rows": 130, "train_s": 120.4}},
    )
    result = redistill.build_result(s, records)
    assert [h.value for h in result.headlines[:3]] == [4, 0.93, 1.0]  # served after 4 calls; all 3 calls after
    assert result.tables[1].rows[0][:6] == ["promoted", "new", "300", 130, "120", "97.0%"]
    assert result.tables[2].rows[0][1:3] == ["93.0% of 100", "0.0%"]
    assert result.tables[3].rows[-1][4] == "0.0074"
    assert len(result.notes) == 1  # no drift alert on the new student: no note about it
    s["drift_after_promotion"] = {"alerts": 1, "last_alert": "confidence (KS 0.71)", "state": "promoted"}
    s["students"]["new"]["eval_confidence_p50"], s["after_promotion"]["confidence_p50"] = 0.9968, 0.9992
    note = redistill.build_result(s, records).notes[-1]
    assert "confidence (KS 0.71)" in note and "0.9992 serving vs 0.9968" in note and "still promoted" in note


def test_call_record_keeps_the_students_own_answer_even_when_the_call_escalated():
    from bench.drift_stream import Order
    from protege.agents.results import Attempt, RunResult

    inp = make_input("b", random.Random(0))
    right = truth(inp)
    wrong = {**right, "quantity": right["quantity"] + 1}
    res = RunResult(
        output=Order(**right),
        tier="teacher",
        model="t",
        cost_usd=0.01,
        latency_s=0.1,
        run_id="r",
        trace_ids=["a", "b"],
        attempts=[
            Attempt(
                tier="student",
                model="local:x",
                valid=True,
                text=Order(**wrong).model_dump_json(),
                trace_id="a",
                student_id="x",
            ),
            Attempt(tier="teacher", model="t", valid=True, text="", trace_id="b"),
        ],
    )
    record = redistill.call_record(3, 4.0, inp, res)
    assert record["tier"] == "teacher" and record["right"] and record["student_right"] is False
    assert record["student_id"] is None and record["layout"] == "b"
    assert redistill.answer_right("not json", inp) is False


def test_the_worker_builds_the_same_app_from_the_environment(tmp_path, monkeypatch):
    """`--app bench.redistill_app:app` in the worker: the app over the folder the benchmark named, with the task and
    its auto_distill policy."""
    monkeypatch.setenv(redistill_app.FOLDER_ENV, str(tmp_path))
    monkeypatch.setattr(redistill_app, "_app", None)
    app = redistill_app.app
    try:
        assert redistill_app.app is app and str(tmp_path) in app.store.url
        policy = app.handle(redistill_app.TASK).spec.policy
        assert policy.auto_distill and policy.min_traces == policy.auto_distill_traces == redistill_app.MIN_TRACES
    finally:
        app.close()
    with pytest.raises(AttributeError):
        redistill_app.nothing  # noqa: B018
    assert BENCHMARKS.index("redistill") == BENCHMARKS.index("drift") + 1
