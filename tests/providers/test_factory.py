"""ProviderFactory: by name, from explicit config or the environment, with clear errors."""

import pytest

from study_query_dagster.providers import (
    PROVIDER_ENV_VARS,
    AzureOpenAIProvider,
    HyperbolicProvider,
    OfflineProvider,
    OpenAIProvider,
    ProviderConfigError,
    ProviderFactory,
)

ALL_VARS = [v for mapping in PROVIDER_ENV_VARS.values() for v in mapping.values()]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_available_and_env_var_mapping():
    assert ProviderFactory.get_available_providers() == ["azure", "hyperbolic", "offline", "openai"]
    assert PROVIDER_ENV_VARS["azure"] == {
        "api_key": "AZURE_OPENAI_API_KEY",
        "endpoint": "AZURE_OPENAI_ENDPOINT",
        "deployment_name": "AZURE_OPENAI_DEPLOYMENT",
        "api_version": "AZURE_OPENAI_API_VERSION",
    }
    assert PROVIDER_ENV_VARS["openai"]["base_url"] == "OPENAI_BASE_URL"
    assert PROVIDER_ENV_VARS["hyperbolic"]["model"] == "HYPERBOLIC_MODEL"
    assert ProviderFactory.required_env_vars("azure") == [
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_DEPLOYMENT",
    ]
    assert ProviderFactory.required_env_vars("offline") == []


async def test_create_each_provider(llm_server):
    made = [
        ProviderFactory.create("azure", api_key="k", endpoint=llm_server.url, deployment_name="d"),
        ProviderFactory.create("OpenAI", api_key="k", base_url=llm_server.openai_base_url),
        ProviderFactory.create("hyperbolic", api_key="k", base_url=llm_server.url),
        ProviderFactory.create("offline"),
    ]
    types = [AzureOpenAIProvider, OpenAIProvider, HyperbolicProvider, OfflineProvider]
    for provider, kind in zip(made, types, strict=True):
        assert isinstance(provider, kind)
        reply = await provider.complete("hello")
        assert reply.text
        await provider.aclose()
    assert llm_server.count("/chat/completions") == 3


def test_unknown_name_and_missing_settings_are_named():
    with pytest.raises(ProviderConfigError, match="unknown provider 'claude'.*azure"):
        ProviderFactory.create("claude")
    with pytest.raises(ProviderConfigError) as caught:
        ProviderFactory.create("azure", api_key="k")
    assert "endpoint (set AZURE_OPENAI_ENDPOINT)" in str(caught.value)
    assert caught.value.env_vars == ["AZURE_OPENAI_ENDPOINT", "AZURE_OPENAI_DEPLOYMENT"]
    with pytest.raises(ProviderConfigError, match="bad configuration"):
        ProviderFactory.create("offline", colour="blue")


def test_from_env_reads_settings(clean_env, llm_server):
    with pytest.raises(ProviderConfigError, match="set HYPERBOLIC_API_KEY"):
        ProviderFactory.from_env("hyperbolic")
    assert ProviderFactory.missing_env_vars("openai") == ["OPENAI_API_KEY"]
    clean_env.setenv("OPENAI_API_KEY", "sk-from-env-123456")
    clean_env.setenv("OPENAI_BASE_URL", llm_server.openai_base_url)
    clean_env.setenv("OPENAI_MODEL", "gpt-4.1-mini")
    clean_env.setenv("LLM_TIMEOUT_S", "7")
    assert ProviderFactory.missing_env_vars("openai") == []
    provider = ProviderFactory.from_env("openai")
    assert isinstance(provider, OpenAIProvider)
    assert provider.model == "gpt-4.1-mini"
    assert provider.base_url.startswith(llm_server.openai_base_url)
    assert provider._client.timeout == 7.0
    assert ProviderFactory.from_env("openai", model="gpt-4o").model == "gpt-4o"

    clean_env.setenv("AZURE_OPENAI_API_KEY", "az-key-123456")
    clean_env.setenv("AZURE_OPENAI_ENDPOINT", llm_server.url)
    with pytest.raises(ProviderConfigError) as caught:
        ProviderFactory.from_env("azure")
    assert caught.value.env_vars == ["AZURE_OPENAI_DEPLOYMENT"]
    clean_env.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-4o-mini")
    azure = ProviderFactory.from_env("azure")
    assert azure.deployment_name == "gpt-4o-mini" and azure.api_version == "2024-10-21"
    assert isinstance(ProviderFactory.from_env("offline"), OfflineProvider)
