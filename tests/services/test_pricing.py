import json

import pytest

from study_query_dagster.config import get_settings
from study_query_dagster.providers import OfflineProvider
from study_query_dagster.services import InferenceService
from study_query_dagster.services.pricing import PriceTable, get_price_table


def test_shipped_prices_and_lookups():
    table = PriceTable.load()
    assert table.cost("openai", "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    # dated snapshots price like their family; Azure falls back to OpenAI's price
    assert table.lookup("openai", "gpt-4o-2024-08-06") == table.lookup("openai", "gpt-4o")
    assert table.lookup("azure", "gpt-4o") == table.lookup("openai", "gpt-4o")
    assert table.cost("offline", "anything", 500, 500) == 0.0


def test_the_original_tools_provider_names_price_as_their_provider():
    # v1 rows name a provider with its deployment ("azure_openai_<deployment>").
    table = PriceTable.load()
    assert table.lookup("azure_openai_gpt4o-prod", "gpt-4o") == table.lookup("openai", "gpt-4o")
    assert table.lookup("openai-compatible", "gpt-4o") == table.lookup("openai", "gpt-4o")
    assert table.lookup("azurex", "gpt-4o") is None  # a prefix must end at a separator


def test_unknown_model_or_tokens_cost_none_not_zero():
    table = PriceTable.load()
    assert table.cost("openai", "my-finetune", 100, 100) is None
    assert table.cost("hyperbolic", None, 100, 100) is None
    assert table.cost("openai", "gpt-4o", None, None) is None


def test_user_file_overrides_and_extends(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": {"openai": {"gpt-4o": {"input": 1, "output": 2},
                                                      "my-ft": {"input": 3, "output": 4}}}}))  # fmt: skip
    table = get_price_table(path)
    assert table.cost("openai", "gpt-4o", 1_000_000, 0) == 1.0
    assert table.cost("openai", "my-ft", 0, 1_000_000) == 4.0
    assert table.lookup("openai", "gpt-4o-mini").input_per_1m == 0.15  # shipped entry kept


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"prices": {"openai": {"x": {"input": "cheap"}}}}', r"prices.openai.x needs numeric"),
        ('{"prices": []}', "'prices' must be an object"),
    ],
)
def test_bad_user_file_names_file_and_field(tmp_path, content, message):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as caught:
        PriceTable.load(path)
    assert str(path) in str(caught.value)


def test_a_bad_pricing_file_fails_when_the_service_is_built(tmp_path, monkeypatch):
    """Not after the first paid answer, when its cost is estimated."""
    path = tmp_path / "prices.json"
    path.write_text("{")
    monkeypatch.setenv("PRICING_FILE", str(path))
    get_settings.cache_clear()
    try:
        with pytest.raises(ValueError, match="not valid JSON"):
            InferenceService(OfflineProvider())
    finally:
        monkeypatch.delenv("PRICING_FILE")
        get_settings.cache_clear()
