"""Local tiers cost their machine time: wall time x a machine price per hour, so savings are not flattered."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from protege import Protege
from protege.agents import Usage
from protege.agents.pricing import CPU_INSTANCE_PER_HOUR, GPU_INSTANCE_PER_HOUR, load_prices
from protege.errors import UserError


def test_a_local_call_costs_its_compute_time_at_the_machine_price():
    """An hour of local compute costs the configured hourly price; tokens alone cost nothing locally."""
    table = load_prices(local_cost_per_hour=2.0)
    assert table.cost("local:student-1", Usage(compute_s=1800)) == pytest.approx(1.0)
    assert table.cost("local:student-1", Usage(input_tokens=10_000, output_tokens=500)) == 0.0


def test_the_default_machine_is_a_two_vcpu_instance_without_cuda():
    """Without a setting, a CPU-only process prices local compute as the documented 2-vCPU instance."""
    table = load_prices()
    expected = (
        GPU_INSTANCE_PER_HOUR if table.machine_price_per_hour() == GPU_INSTANCE_PER_HOUR else CPU_INSTANCE_PER_HOUR
    )
    assert table.cost("local:x", Usage(compute_s=3600)) == pytest.approx(expected)
    assert 0.05 < CPU_INSTANCE_PER_HOUR < GPU_INSTANCE_PER_HOUR


def test_compute_time_adds_up_over_an_agent_loop():
    """A multi-step answer's usage sums the machine time of every step."""
    assert (Usage(compute_s=0.25) + Usage(compute_s=0.5)).compute_s == pytest.approx(0.75)


def test_code_and_data_models_stay_free():
    """function:/reference: models answer from code or labels: no machine worth pricing."""
    table = load_prices(local_cost_per_hour=5.0)
    assert table.cost("function:f", Usage(compute_s=100)) == 0.0
    assert table.cost("reference:r", Usage(compute_s=100)) == 0.0


def test_a_negative_machine_price_is_a_user_error(tmp_path, monkeypatch):
    """A negative price names the value and says what a price looks like, from the env var too."""
    with pytest.raises(UserError, match=r"local_cost_per_hour=-1\.0"):
        load_prices(local_cost_per_hour=-1.0)
    monkeypatch.setenv("PROTEGE_LOCAL_COST_PER_HOUR", "-0.5")
    with pytest.raises(UserError, match="USD per hour"):
        Protege(project_dir=tmp_path)


def test_the_app_reads_the_machine_price_from_the_environment(tmp_path, monkeypatch):
    """PROTEGE_LOCAL_COST_PER_HOUR sets the price every local call of the app is charged at."""
    monkeypatch.setenv("PROTEGE_LOCAL_COST_PER_HOUR", "3.6")
    app = Protege(project_dir=tmp_path)
    try:
        assert app.prices.cost("local:s", Usage(compute_s=10)) == pytest.approx(0.01)
    finally:
        app.close()


def test_a_real_local_model_reports_its_machine_time(tiny_base):
    """The torch engine's answers carry their wall time, shared across a batch, so the tier is priced."""
    from protege.agents.models.base import Message, ModelRequest
    from protege.agents.models.local import LocalModel

    model = LocalModel(tiny_base)
    req = ModelRequest(messages=[Message(role="user", content="hi")], max_tokens=4)
    one = model.generate(req)
    batch = model.generate_batch([req, req, req])
    assert one.usage.compute_s > 0
    assert all(r.usage.compute_s > 0 for r in batch)
    assert load_prices(local_cost_per_hour=1.0).cost(model.name, one.usage) > 0


def test_a_local_model_that_fails_still_costs_the_time_it_ran(tmp_path, monkeypatch):
    """A student attempt that ran 12 s and failed (no answer, so no usage reported) was recorded at $0: its
    machine time is charged all the same, and the run's cost is the sum of its attempts, rounded to 1e-10."""
    import json
    import time

    from protege.agents import FunctionModel
    from protege.errors import ModelError

    monkeypatch.setenv("PROTEGE_LOCAL_COST_PER_HOUR", "3600")  # $1 a second

    def stuck(req):
        time.sleep(0.05)
        raise ModelError("no token of the vocabulary can continue the answer")

    app = Protege(
        db=f"sqlite:///{tmp_path}/p.db",
        teacher=FunctionModel(lambda req: json.dumps({"label": "ok"}), price_as="anthropic:claude-opus-4-5"),
        replay=FunctionModel(stuck, price_as="local:student"),
        project_dir=tmp_path / ".p",
    )
    try:

        @app.task
        def label(text: str) -> Out:
            """Label the text."""

        result = app.run("label", {"text": "x"}, tier="replay")
        failed, served = result.attempts
        assert failed.tier == "replay" and not failed.valid and failed.cost_usd >= 0.05
        assert result.cost_usd == round(failed.cost_usd + served.cost_usd, 10)
    finally:
        app.close()


class Out(BaseModel):
    label: str


class _Engine:
    """A stand-in engine: loads for `load_s`, then answers every job of a call after `pass_s`, concurrent callers'
    jobs in the same pass (as the real engines batch them)."""

    load_s, pass_s = 0.0, 0.3

    def __init__(self, *args):
        time.sleep(self.load_s)

    def job(self, messages, grammar, max_tokens, draft=True):
        return SimpleNamespace(grammar=grammar, max_tokens=max_tokens)

    def run(self, jobs, batch_size=None):
        time.sleep(self.pass_s)
        return [_generation() for _ in jobs]


def _generation():
    from protege.agents.models.local_engine import Generation

    return Generation(
        text="ok",
        prompt_tokens=3,
        output_tokens=1,
        reused_tokens=0,
        forced_tokens=0,
        model_tokens=1,
        confidence=0.9,
        stop_reason="end_turn",
        drafted_tokens=0,
        min_prob=0.9,
    )


@pytest.fixture
def fake_engine(tmp_path, monkeypatch):
    """A LocalModel whose engine is `_Engine` (a fresh engine cache, so each test loads its own)."""
    from protege.agents.models import local, local_engine

    monkeypatch.setattr(local, "_ENGINES", {})
    monkeypatch.setattr(local_engine, "Engine", _Engine)
    (tmp_path / "config.json").write_text("{}")
    return local.LocalModel(tmp_path)


def _request():
    from protege.agents.models.base import Message, ModelRequest

    return ModelRequest(messages=[Message(role="user", content="hi")], max_tokens=4)


def test_concurrent_answers_share_the_machine_time_they_used(fake_engine):
    """Each caller was charged its whole wait while the engine answered all of them in the same passes: 8
    concurrent calls were billed 15.4 machine-seconds for 2.85 s of wall time. Together they cost the wall time."""
    import threading

    fake_engine.generate(_request())  # loaded before the clock starts
    callers, start = 4, threading.Barrier(4)
    charged: list[float] = []

    def call():
        start.wait()
        charged.append(fake_engine.generate(_request()).usage.compute_s)

    began = time.perf_counter()
    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    assert len(charged) == callers
    assert _Engine.pass_s * 0.9 < sum(charged) <= wall + 0.01  # the time used, not 4 x the pass
    assert max(charged) < _Engine.pass_s * 0.75  # each its share, not the whole pass


def test_one_call_at_a_time_is_charged_its_own_time(fake_engine):
    first, second = fake_engine.generate(_request()), fake_engine.generate(_request())
    assert first.usage.compute_s == pytest.approx(_Engine.pass_s, abs=0.05)
    assert second.usage.compute_s == pytest.approx(_Engine.pass_s, abs=0.05)


def test_loading_the_model_is_charged_to_no_call(fake_engine, monkeypatch):
    """The first call was charged the model's load (4 s of a llama.cpp student) as if it were its answer."""
    monkeypatch.setattr(_Engine, "load_s", 0.5)
    first = fake_engine.generate(_request())
    assert first.usage.compute_s == pytest.approx(_Engine.pass_s, abs=0.05)


def test_machine_share_splits_overlapping_time_evenly():
    """Two answers in flight together for 2 s share it (1 s each); one alone for 3 s pays all 3 s."""
    from protege.agents.models.local import MachineShare

    now = [0.0]
    share = MachineShare(clock=lambda: now[0])
    a = share.start()
    now[0] = 1.0
    b = share.start()
    now[0] = 3.0
    assert share.stop(b) == pytest.approx(1.0)
    now[0] = 4.0
    assert share.stop(a) == pytest.approx(1.0 + 1.0 + 1.0)  # alone, together, alone
    batch = share.start(answers=3)
    now[0] = 7.0
    assert share.stop(batch, answers=3) == pytest.approx(1.0)  # one call of 3 answers: a third each
