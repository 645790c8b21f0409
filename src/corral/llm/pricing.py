"""What a call cost: a shipped table of list prices (USD per million tokens) for the
common models, overridable and extendable with `pricing:` in the config.

Lookup, in order: the alias (a config override keyed by alias), the upstream model id,
the id without a ``provider/`` or ``accounts/.../`` prefix, then the longest known
prefix (so ``gpt-4o-2024-08-06`` is priced as ``gpt-4o`` and ``gpt-4o-mini-2024-07-18``
as ``gpt-4o-mini``). Unknown models cost 0 and are reported by `unknown()`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from corral.config.schema import PriceConfig
from corral.llm.types import Usage


@dataclass(frozen=True, slots=True)
class Price:
    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Usage) -> float:
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        total = (usage.input_tokens - cached) * self.input + cached * cached_rate + usage.output_tokens * self.output
        return total / 1_000_000


def shipped_prices() -> dict[str, Price]:
    raw = json.loads(resources.files("corral.llm").joinpath("data/pricing.json").read_text())
    return {name: Price(*values) for name, values in raw.items() if not name.startswith("_")}


class PricingTable:
    def __init__(self, overrides: Mapping[str, PriceConfig] | None = None,
                 base: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(shipped_prices() if base is None else base)
        for name, price in (overrides or {}).items():
            self._prices[name] = Price(price.input, price.output, price.cached_input)
        # Longest first, so the most specific prefix wins.
        self._prefixes = sorted(self._prices, key=len, reverse=True)
        self._cache: dict[str, Price | None] = {}
        self._unknown: set[str] = set()

    def price(self, model: str | None) -> Price | None:
        if not model:
            return None
        if model in self._cache:
            return self._cache[model]
        found = self._lookup(model)
        self._cache[model] = found
        if found is None:
            self._unknown.add(model)
        return found

    def _lookup(self, model: str) -> Price | None:
        candidates = [model, model.rsplit("/", 1)[-1]]
        for name in candidates:
            if name in self._prices:
                return self._prices[name]
        for name in candidates:
            for known in self._prefixes:
                if name.startswith(known) and name[len(known):len(known) + 1] in ("-", "@", ":", "."):
                    return self._prices[known]
        return None

    def cost(self, usage: Usage, *models: str | None) -> float:
        """Cost of `usage`, priced as the first of `models` (alias, upstream id...) that is known."""
        for model in models:
            price = self.price(model)
            if price is not None:
                return price.cost(usage)
        return 0.0

    def unknown(self) -> list[str]:
        return sorted(self._unknown)
