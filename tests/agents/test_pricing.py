"""Prices per model, cost of a usage record, and user overrides."""

from __future__ import annotations

import json
import warnings

import pytest

from protege.agents import FunctionModel, ReferenceModel, Usage
from protege.agents.pricing import Price, cost_of, load_prices
from protege.errors import UserError

# (input, output, cache_read, cache_write) in USD per million tokens, as published.
EXPECTED = {
    "anthropic:claude-opus-4-5": (5, 25, 0.5, 6.25),
    "anthropic:claude-sonnet-4-5": (3, 15, 0.3, 3.75),
    "anthropic:claude-haiku-4-5": (1, 5, 0.1, 1.25),
    "anthropic:claude-opus-4-1": (15, 75, 1.5, 18.75),
    "anthropic:claude-3-5-haiku": (0.8, 4, 0.08, 1.0),
    "openai:gpt-4o": (2.5, 10, 1.25, 2.5),
    "openai:gpt-4o-mini": (0.15, 0.6, 0.075, 0.15),
    "openai:gpt-4.1": (2, 8, 0.5, 2),
    "openai:gpt-4.1-mini": (0.4, 1.6, 0.1, 0.4),
    "openai:gpt-5": (1.25, 10, 0.125, 1.25),
    "openai:gpt-5-mini": (0.25, 2, 0.025, 0.25),
}


@pytest.mark.parametrize("model, expected", EXPECTED.items())
def test_packaged_prices_match_the_published_ones(model, expected):
    """Each packaged model carries its published input/output/cache prices."""
    price = load_prices().price(model)
    assert price is not None
    assert (price.input, price.output, price.cache_read, price.cache_write) == pytest.approx(expected)


def test_table_says_when_its_prices_were_taken():
    """The packaged table has an as_of date, so stale prices are visible."""
    assert load_prices().as_of.startswith("20")


@pytest.mark.parametrize(
    "name, base",
    [
        ("claude-haiku-4-5", "anthropic:claude-haiku-4-5"),
        ("anthropic:claude-haiku-4-5-20251001", "anthropic:claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "anthropic:claude-3-5-haiku"),
        ("openai:gpt-4o-2024-08-06", "openai:gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "openai:gpt-4o-mini"),
    ],
)
def test_bare_names_and_dated_snapshots_find_their_base_price(name, base):
    """Bare names and dated snapshots resolve to the base model's price (and gpt-4o-mini is not gpt-4o)."""
    table = load_prices()
    assert table.price(name) == table.price(base)


def test_cost_adds_input_output_and_cache_at_their_own_prices():
    """Anthropic haiku: uncached input, output, cache reads (0.1x) and writes (1.25x) each priced separately."""
    usage = Usage(input_tokens=1_000, output_tokens=200, cache_read_tokens=10_000, cache_write_tokens=4_000)
    expected = (1_000 * 1 + 200 * 5 + 10_000 * 0.1 + 4_000 * 1.25) / 1e6
    assert load_prices().cost("anthropic:claude-haiku-4-5", usage) == pytest.approx(expected)


def test_openai_cached_input_is_priced_at_its_discount():
    """gpt-4.1 cached input costs a quarter of fresh input."""
    table = load_prices()
    fresh = table.cost("openai:gpt-4.1", Usage(input_tokens=1_000_000))
    cached = table.cost("openai:gpt-4.1", Usage(cache_read_tokens=1_000_000))
    assert fresh == pytest.approx(2.0) and cached == pytest.approx(0.5)


@pytest.mark.parametrize("model", ["local:student-3", "function:oracle", "scripted", "reference:teacher"])
def test_local_and_test_models_are_free_and_silent(model):
    """Models that run here cost nothing and raise no 'unknown price' warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_prices().cost(model, Usage(input_tokens=10**6, output_tokens=10**6)) == 0.0


def test_unknown_paid_model_costs_zero_and_warns_once():
    """An unpriced Anthropic model counts as $0 with a single warning that says how to add a price."""
    table = load_prices()
    usage = Usage(input_tokens=1000)
    with pytest.warns(UserWarning, match=r"no price for model 'anthropic:claude-future-9'.*load_prices"):
        assert table.cost("anthropic:claude-future-9", usage) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert table.cost("anthropic:claude-future-9", usage) == 0.0


def test_dict_overrides_add_models_and_patch_known_ones():
    """A dict override adds a new model and, by bare name, changes one field of a packaged price."""
    table = load_prices({"openai:my-vllm": {"input": 0.0, "output": 0.0}, "claude-haiku-4-5": {"output": 4.0}})
    assert table.price("openai:my-vllm") == Price(input=0, output=0, cache_read=0, cache_write=0)
    haiku = table.price("anthropic:claude-haiku-4-5")
    assert (haiku.input, haiku.output, haiku.cache_read) == (1, 4.0, 0.1)
    assert load_prices().price("claude-haiku-4-5").output == 5  # the packaged table is untouched


def test_json_and_toml_files_override_prices(tmp_path):
    """Price files in JSON (packaged layout) and TOML (bare table) both merge over the packaged table."""
    json_file = tmp_path / "prices.json"
    json_file.write_text(json.dumps({"as_of": "2030-01-01", "models": {"openai:gpt-4o": {"input": 1, "output": 2}}}))
    toml_file = tmp_path / "prices.toml"
    toml_file.write_text('["anthropic:claude-opus-4-5"]\ninput = 4.0\noutput = 20.0\n')
    from_json = load_prices(json_file)
    assert from_json.as_of == "2030-01-01"
    assert from_json.cost("openai:gpt-4o", Usage(input_tokens=10**6, output_tokens=10**6)) == pytest.approx(3.0)
    assert load_prices(str(toml_file)).price("claude-opus-4-5").input == 4.0


def test_bad_overrides_are_user_errors_naming_the_problem(tmp_path):
    """A missing file, an unreadable file, or a negative price is a UserError naming what is wrong."""
    with pytest.raises(UserError, match="does not exist"):
        load_prices(tmp_path / "nope.toml")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(UserError, match="not valid"):
        load_prices(broken)
    with pytest.raises(UserError, match="'openai:x'"):
        load_prices({"openai:x": {"input": -1, "output": 1}})


def test_cost_of_prices_a_stand_in_as_the_model_it_stands_for():
    """A FunctionModel with price_as is charged at that model's prices; a plain one is free."""
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000)
    assert cost_of(FunctionModel(lambda r: "x", price_as="anthropic:claude-opus-4-5"), usage) == pytest.approx(7.5)
    assert cost_of(FunctionModel(lambda r: "x"), usage) == 0.0
    assert cost_of(ReferenceModel([], price_as=""), usage) == 0.0


@pytest.mark.parametrize("rate", [float("inf"), float("nan"), -1.0])
def test_a_machine_price_that_is_not_a_finite_amount_is_refused(rate):
    """`PROTEGE_LOCAL_COST_PER_HOUR=inf` priced one call at inf and every ledger after it at -inf savings."""
    from protege.agents.pricing import load_prices

    with pytest.raises(UserError, match="local_cost_per_hour"):
        load_prices(local_cost_per_hour=rate)


def test_a_token_price_that_is_not_finite_is_refused():
    from pydantic import ValidationError

    from protege.agents.pricing import Price

    with pytest.raises(ValidationError):
        Price(input=float("inf"), output=1.0)
