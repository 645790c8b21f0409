import pytest

from corral.config.schema import PriceConfig
from corral.llm.pricing import PricingTable
from corral.llm.types import Usage


def test_cost_of_known_model_counts_cached_input_at_its_own_rate() -> None:
    table = PricingTable()
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_input_tokens=400_000)
    # gpt-4o-mini: 0.15 in, 0.60 out, 0.075 cached (per million)
    assert table.cost(usage, "gpt-4o-mini") == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.5 * 0.60)


def test_dated_and_prefixed_ids_match_the_most_specific_known_model() -> None:
    table = PricingTable()
    assert table.price("gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini")
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert table.price("openai/gpt-4o") == table.price("gpt-4o")
    assert table.price("claude-3-5-haiku-20241022") == table.price("claude-3-5-haiku")
    assert table.price("gpt-4o-mini") != table.price("gpt-4o")
    assert table.price("gpt-4omega") is None


def test_config_overrides_win_and_unknown_models_cost_zero_and_are_reported() -> None:
    table = PricingTable({"fast": PriceConfig(input=1.0, output=2.0), "gpt-4o": PriceConfig(input=0, output=0)})
    usage = Usage(input_tokens=2_000_000, output_tokens=1_000_000)
    assert table.cost(usage, "fast", "gpt-4o-mini") == 4.0  # alias override first
    assert table.cost(usage, "gpt-4o") == 0.0
    assert table.cost(usage, "my-local-model") == 0.0
    assert table.unknown() == ["my-local-model"]
