"""Drift: the sequential agreement test and the early signal, on a synthetic shift (tests/drift_support.py)."""

from __future__ import annotations

import json
import random

from drift_support import Email, Order, eval_confidences, make_input, student, teacher

from protege import Policy, Protege
from protege.agents import FunctionModel
from protege.services.drift import build_reference, ks_statistic, shifts
from protege.services.sequential import below_bar, first_alarm
from protege.store import StudentRow


def bernoulli(p: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


def test_sequential_test_alarms_fast_below_the_bar_and_not_above_it():
    assert first_alarm([0.0] * 10, bar=0.9) == 4  # four straight disagreements
    assert first_alarm([1.0, 0.0, 1.0, 0.0], bar=0.9) is None  # one miss now and then is not evidence
    assert first_alarm(bernoulli(0.3, 200, seed=1), bar=0.9) <= 15
    assert not below_bar(bernoulli(0.97, 2000, seed=2), bar=0.9)
    assert first_alarm([1.0] * 300 + [0.0] * 10, bar=0.9) == 304  # a long good stretch is forgotten (CUSUM)


def test_ks_statistic():
    assert ks_statistic([1, 2, 3], [1, 2, 3]) == 0
    assert ks_statistic([1, 2, 3], [10, 11, 12]) == 1
    assert ks_statistic([1, 2, 3], [10, 11, 12], side=-1) == 0  # b rose: not a fall
    assert ks_statistic([10, 11, 12], [1, 2, 3], side=-1) == 1
    assert ks_statistic([1, 2, 3], [10, 11, 12], side=1) == 1


def test_early_signal_fires_on_the_shifted_layout_and_not_on_more_of_the_same():
    rng = random.Random(0)
    ref = build_reference([make_input("a", rng) for _ in range(200)], eval_confidences(), coverage=None)

    def observed(layout: str, confidences: tuple[float, float], escalated: bool = False) -> list:
        return [ref.observe(make_input(layout, rng), rng.uniform(*confidences), escalated) for _ in range(20)]

    for _ in range(20):  # 20 windows of more of the same: none fires
        assert shifts(ref, observed("a", (0.93, 0.99))) == []
    moved = " ".join(shifts(ref, observed("b", (0.93, 0.99))))
    assert "input length" in moved and "unseen words" in moved and "inputs with unseen fields 100%" in moved
    assert shifts(ref, observed("a", (0.5, 0.8))) == ["confidence (KS 1.00)"]
    assert shifts(ref, observed("a", (0.999, 1.0))) == []  # surer than at promotion: no reason for shadows
    assert shifts(ref, observed("a", (0.93, 0.99), escalated=True)) == ["escalated 100% vs 0%"]


def test_a_student_judged_on_few_eval_answers_still_has_its_confidence_watched():
    """A reference of 12 eval confidences (a student promoted by hand after a small eval split) left the
    confidence test off for good: it needed 20. A large fall is still told apart; more of the same is not."""
    rng = random.Random(2)
    few = [rng.uniform(0.85, 0.95) for _ in range(12)]
    ref = build_reference([make_input("a", rng) for _ in range(200)], few, coverage=None)
    recent = [ref.observe(make_input("a", rng), rng.uniform(0.02, 0.1), False) for _ in range(20)]
    assert shifts(ref, recent) == ["confidence (KS 1.00)"]
    for _ in range(20):
        same = [ref.observe(make_input("a", rng), rng.uniform(0.85, 0.95), False) for _ in range(20)]
        assert shifts(ref, same) == []


def make_app(tmp_path, student_fn=student, **policy) -> tuple[Protege, object, StudentRow]:
    """An app whose task has 60 teacher traces of layout a and a promoted student (a FunctionModel)."""
    from protege.distill.pipeline import promote

    app = Protege(
        db=f"sqlite:///{tmp_path / 'd.db'}", seed=3, teacher=FunctionModel(teacher), replay=FunctionModel(teacher)
    )

    @app.task(policy=Policy(program=False, **policy))
    def extract(email: Email) -> Order:
        """The item and quantity ordered."""

    rng = random.Random(1)
    for _ in range(60):
        app.run("extract", make_input("a", rng))
    app.wait()
    row = app.store.add_student(
        StudentRow(task_name="extract", base="b", adapter_path="a", metrics={"confidences": eval_confidences()})
    )
    promote(app.store, row.id)
    app.tiers._models[f"local:{row.id}"] = FunctionModel(student_fn, name=f"local:{row.id}")
    app.tiers.invalidate("extract")
    return app, extract, row


def stream(app, n_before: int, n_after: int) -> list[tuple[str, bool]]:
    """(tier, served answer right) per call: layout a, then layout b."""
    from drift_support import truth

    rng, out = random.Random(7), []
    for i in range(n_before + n_after):
        inp = make_input("a" if i < n_before else "b", rng)
        res = app.run("extract", inp)
        app.wait()
        out.append((res.tier, res.output.model_dump() == truth(inp)))
    return out


def test_a_shift_is_noticed_and_the_student_falls_back_within_tens_of_calls(tmp_path):
    """With the usual 5% shadow rate, the early signal raises shadowing when layout b arrives, and the sequential
    test demotes the student after a handful of shadowed wrong answers."""
    app, _, row = make_app(tmp_path, shadow_rate=0.05, demote_below=0.9)
    calls = stream(app, 40, 60)
    assert all(tier == "student" for tier, _ in calls[:40])
    status = app.lifecycle.drift.status("extract")
    assert status["alerts"] == 1 and "unseen fields" in status["last_alert"]
    fallback = next(i for i, (tier, _) in enumerate(calls) if tier != "student")
    wrong_served = sum(1 for tier, right in calls[40:fallback] if tier == "student" and not right)
    assert 40 < fallback <= 40 + 15  # measured: 47 (alert after 4 shifted calls, 4 shadows of disagreement)
    assert wrong_served <= 10
    assert app.store.student(row.id).state == "demoted"
    assert "sequential test" in app.store.student(row.id).metrics["demoted_reason"]
    app.close()


def test_without_the_early_signal_the_window_rule_lets_the_wrong_answers_run(tmp_path):
    """The comparison: drift_shadow_rate=0 is today's behaviour; after 60 shifted calls the student still serves."""
    app, _, row = make_app(tmp_path, shadow_rate=0.05, demote_below=0.9, drift_shadow_rate=0.0)
    calls = stream(app, 40, 60)
    assert app.lifecycle.drift.status("extract") is None
    assert sum(1 for tier, right in calls[40:] if tier == "student" and not right) > 40
    app.close()


def test_one_field_growing_unsure_raises_shadowing_though_the_answer_looks_sure(tmp_path):
    """The reference holds the gate's confidences (least-sure field); calls are watched by the same figure. A
    student sure of the answer overall (mean 0.97) but unsure of one field (0.5–0.7) on inputs of the same layout
    raises the alarm on confidence; the answer's mean alone would not."""
    from drift_support import truth

    from protege.agents.models.base import ModelResponse

    def unsure_of_quantity(req):
        rng = random.Random(json.dumps(req.task_input, sort_keys=True))
        fields = {"item": rng.uniform(0.93, 0.99), "quantity": rng.uniform(0.5, 0.7)}
        return ModelResponse(text=json.dumps(truth(req.task_input)), confidence=0.97, field_confidences=fields)

    app, _, _ = make_app(tmp_path, student_fn=unsure_of_quantity, shadow_rate=0.0, min_confidence=0.1)
    stream(app, 40, 0)
    status = app.lifecycle.drift.status("extract")
    assert status is not None and status["alerts"] >= 1 and "confidence" in status["last_alert"]
    app.close()


def test_a_benign_shift_is_checked_once_then_learned(tmp_path):
    """A student that stays right on layout b: one alert, a boost of shadows that agree, no demotion; the new
    inputs join the reference, so more of layout b does not fire again."""
    from drift_support import truth

    def steady(req):
        from protege.agents.models.base import ModelResponse

        return ModelResponse(
            text=json.dumps(truth(req.task_input)), confidence=random.Random(str(req.task_input)).uniform(0.93, 0.99)
        )

    app, _, row = make_app(tmp_path, student_fn=steady, shadow_rate=0.0, drift_shadow_calls=30)
    calls = stream(app, 40, 100)
    assert all(tier == "student" and right for tier, right in calls)
    assert app.lifecycle.drift.status("extract")["alerts"] == 1
    assert app.store.student(row.id).state == "promoted"
    assert len(app.store.shadow_scores("extract", "student")) == 30  # the boost, and nothing else
    app.close()
