"""Local tiers cost their machine time: wall time x a machine price per hour, so savings are not flattered."""

from __future__ import annotations

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
