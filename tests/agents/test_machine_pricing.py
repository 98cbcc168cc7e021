"""Local tiers cost their machine time: wall time x a machine price per hour, so savings are not flattered."""

from __future__ import annotations

import pytest

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
