"""What a call cost: a price table per model (packaged `prices.json`, user-overridable) and usage -> dollars.

Prices are USD per million tokens. `Usage.input_tokens` counts *uncached* input only (Anthropic's convention;
the OpenAI adapter subtracts cached tokens to match), so a call's cost is simply
input x input price + output x output price + cache reads x cache_read price + cache writes x cache_write price.

Models that run on our own hardware (`local:` students and base models, and a student on a self-hosted server,
which prices itself as `local:`) cost their machine time: `Usage.compute_s` x the machine's price per hour
(`local_cost_per_hour`; by default a 2-vCPU cloud instance, or a GPU instance when the model ran on CUDA).
Counting them at $0 would flatter every saving the cheaper tiers claim.
"""

from __future__ import annotations

import json
import math
import re
import sys
import tomllib
import warnings
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from protege.agents.models.base import Model, Usage
from protege.errors import UserError

FREE_PROVIDERS = frozenset({"function", "reference", "scripted"})
"""Models that answer from data or code: their calls cost nothing."""

MACHINE_PRICED_PROVIDERS = frozenset({"local"})
"""Models that run on our own hardware: their calls cost machine time (`Usage.compute_s`)."""

CPU_INSTANCE_PER_HOUR = 0.0893
"""USD per hour of a 2-vCPU cloud instance: AWS c7i.large (2 vCPU, 4 GiB), on-demand, us-east-1, 2025 list price."""

GPU_INSTANCE_PER_HOUR = 0.805
"""USD per hour of a one-GPU cloud instance: AWS g6.xlarge (1x NVIDIA L4, 4 vCPU), on-demand, us-east-1, 2025."""

PRICED_PROVIDERS = frozenset({"anthropic", "openai"})

# Dated snapshots and aliases share their base model's price: claude-haiku-4-5-20251001, gpt-4o-2024-08-06,
# claude-3-5-haiku-latest, claude-sonnet-4-5@20250929 (Vertex naming).
_SNAPSHOT_SUFFIX = re.compile(r"(-\d{8}|@\d{8}|-\d{4}-\d{2}-\d{2}|-latest)$")
_LOOKS_PRICED = re.compile(r"^(claude|gpt|o\d|chatgpt)", re.IGNORECASE)


class Price(BaseModel):
    """USD per million tokens; a missing cache price defaults to the input price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, allow_inf_nan=False)
    output: float = Field(ge=0, allow_inf_nan=False)
    cache_read: float = Field(ge=0, allow_inf_nan=False)
    cache_write: float = Field(ge=0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _cache_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and "input" in data:
            data = {"cache_read": data["input"], "cache_write": data["input"], **data}
        return data

    def cost(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        ) / 1_000_000


class PriceTable:
    """Prices by model name: "provider:model" keys, found by full spec, bare name or dated snapshot."""

    def __init__(self, prices: dict[str, Price], *, as_of: str = "", local_cost_per_hour: float | None = None):
        if local_cost_per_hour is not None and not 0 <= local_cost_per_hour < math.inf:  # nan fails too
            raise UserError(
                f"local_cost_per_hour={local_cost_per_hour!r} must be a finite price in USD per hour >= 0, e.g. "
                f"{CPU_INSTANCE_PER_HOUR} for a 2-vCPU instance or {GPU_INSTANCE_PER_HOUR} for a GPU one"
            )
        self.prices = dict(prices)
        self.as_of = as_of
        self.local_cost_per_hour = local_cost_per_hour
        self._by_bare = {_bare(key): p for key, p in self.prices.items()}
        self._warned: set[str] = set()

    def price(self, model: str) -> Price | None:
        """The price of `model` ("anthropic:claude-haiku-4-5", "claude-haiku-4-5", dated snapshots), or None."""
        provider = _provider(model)
        name = _bare(model)
        for candidate in (name, _SNAPSHOT_SUFFIX.sub("", name)):
            if provider and f"{provider}:{candidate}" in self.prices:
                return self.prices[f"{provider}:{candidate}"]
            if candidate in self._by_bare:
                return self._by_bare[candidate]
        return None

    def cost(self, model: str, usage: Usage) -> float:
        """Dollars for `usage` on `model`: machine time for local models, 0 for free ones, tokens x price for the
        rest (an unpriced paid model costs 0, with a one-time warning)."""
        provider = _provider(model)
        if provider in MACHINE_PRICED_PROVIDERS:
            return usage.compute_s * self.machine_price_per_hour() / 3600
        if provider in FREE_PROVIDERS:
            return 0.0
        price = self.price(model)
        if price is not None:
            return price.cost(usage)
        if _looks_priced(model) and model not in self._warned:
            self._warned.add(model)
            warnings.warn(
                f"no price for model {model!r}: its calls are counted as $0. Add one with "
                f"load_prices({{{model!r}: {{'input': ..., 'output': ...}}}}) (USD per million tokens) "
                f"or a JSON/TOML file named by PROTEGE_PRICES.",
                stacklevel=2,
            )
        return 0.0

    def machine_price_per_hour(self) -> float:
        """The configured machine price, else the GPU instance's when torch runs on CUDA here, else the CPU one's."""
        if self.local_cost_per_hour is not None:
            return self.local_cost_per_hour
        return GPU_INSTANCE_PER_HOUR if _on_gpu() else CPU_INSTANCE_PER_HOUR


def _on_gpu() -> bool:
    """Whether local models run on CUDA; asked only once torch is loaded (a local model loads it), never importing
    it."""
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_available())
    except Exception:  # a broken CUDA install: price as the CPU it falls back to
        return False


def load_prices(
    overrides: dict[str, Any] | str | Path | None = None, *, local_cost_per_hour: float | None = None
) -> PriceTable:
    """The packaged price table, with `overrides` (a dict, or a JSON/TOML file) merged over it field by field.

    Overrides look like the packaged file — {"models": {"openai:my-model": {"input": 0.2, "output": 0.8}}} —
    or leave out the "models" level. A bare name ("claude-haiku-4-5") overrides the packaged entry it names.
    """
    packaged = json.loads(files("protege.agents").joinpath("prices.json").read_text(encoding="utf-8"))
    raw: dict[str, dict[str, Any]] = {k: dict(v) for k, v in packaged["models"].items()}
    as_of = packaged.get("as_of", "")
    if overrides is not None:
        extra, where = _read_overrides(overrides)
        as_of = str(extra.pop("as_of", as_of))
        _merge(raw, _models_of(extra, where))
    prices: dict[str, Price] = {}
    for name, fields in raw.items():
        try:
            prices[name] = Price.model_validate(fields)
        except ValidationError as exc:
            raise UserError(
                f"bad price for model {name!r}: {exc.errors()[0]['msg']}; a price is "
                f"{{'input': <USD per 1M tokens>, 'output': ..., 'cache_read': ..., 'cache_write': ...}}"
            ) from exc
    return PriceTable(prices, as_of=as_of, local_cost_per_hour=local_cost_per_hour)


@lru_cache(maxsize=1)
def default_table() -> PriceTable:
    """The packaged table, loaded once."""
    return load_prices()


def cost_of(model: Model, usage: Usage, table: PriceTable | None = None) -> float:
    """Dollars for one response of `model`, priced as `model.price_as` when set (e.g. a reference teacher)."""
    return (table or default_table()).cost(model.price_as or model.name, usage)


def _provider(model: str) -> str:
    provider, sep, _ = model.partition(":")
    if sep:
        return provider
    return "scripted" if model == "scripted" else ""


def _bare(model: str) -> str:
    return model.partition(":")[2] or model


def _looks_priced(model: str) -> bool:
    provider = _provider(model)
    return provider in PRICED_PROVIDERS or (not provider and bool(_LOOKS_PRICED.match(model)))


def _read_overrides(overrides: dict[str, Any] | str | Path) -> tuple[dict[str, Any], str]:
    if isinstance(overrides, dict):
        return dict(overrides), "the overrides dict"
    path = Path(overrides)
    if not path.is_file():
        raise UserError(f"price file {str(path)!r} does not exist; give a JSON or TOML file of prices per model")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"price file {str(path)!r} is not valid {path.suffix or 'JSON'}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"price file {str(path)!r} must hold a table of models, got {type(data).__name__}")
    return data, repr(str(path))


def _models_of(extra: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    models = extra.get("models", {k: v for k, v in extra.items() if k not in ("currency", "unit", "note")})
    for name, fields in models.items():
        if not isinstance(fields, dict):
            raise UserError(f"price of {name!r} in {where} must be a table like {{'input': 1.0, 'output': 5.0}}")
    return models


def _merge(raw: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> None:
    """Field-wise merge; a bare override name updates the packaged "provider:name" entry it matches."""
    bare_to_key = {_bare(key): key for key in raw}
    for name, fields in extra.items():
        key = name if ":" in name or name in raw else bare_to_key.get(name, name)
        raw[key] = {**raw.get(key, {}), **fields}
