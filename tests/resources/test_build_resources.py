"""`build_resources(settings)`: every resource from one `Settings`; what the environment supplies
reaches Dagster as the variable's name (`dg.EnvVar`), never as its value."""

import json

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from pydantic import ValidationError

from study_query_dagster.config import Settings
from study_query_dagster.providers import PROVIDER_ENV_VARS
from study_query_dagster.resources import build_resources
from study_query_dagster.resources.providers import LLMProvidersResource
from tests.support.pipeline import SettingsForTest

KEY = "sk-build-SECRET-4c2a9e81"
AZURE_KEY = "az-build-SECRET-0b7d51f3"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The process environment without the variables these tests set, no `.env` in reach, and
    everything a test (or `load_dotenv`) sets undone afterwards."""
    monkeypatch.chdir(tmp_path)
    names = {name for mapping in PROVIDER_ENV_VARS.values() for name in mapping.values()}
    names |= {"DATABASE_URL", "LEGACY_DATABASE_URL", "LLM_TIMEOUT_S", "OPENAI_MAX_CONCURRENCY"}
    for name in names:
        monkeypatch.setenv(name, "")  # remembers the original value, restored at teardown
        monkeypatch.delenv(name)
    return monkeypatch


def snapshot(resources: dict) -> RepositorySnap:
    """What the code location sends the UI about its resources."""
    return RepositorySnap.from_def(dg.Definitions(resources=resources).get_repository_def())


def configured(snap: RepositorySnap, resource: str) -> dict:
    [res] = [r for r in snap.resources if r.name == resource]
    return {  # an EnvVar at the top level is a snap of its own, one inside a section JSON
        k: json.loads(v) if isinstance(v, str) else {"env": v.name}
        for k, v in res.configured_values.items()
    }


def test_what_the_environment_supplies_is_shown_by_name_only(env):
    url = "sqlite:////tmp/secret-password-in-url.db"
    env.setenv("OPENAI_API_KEY", KEY)
    env.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    env.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    env.setenv("DATABASE_URL", url)
    resources = build_resources(Settings(_env_file=None))

    llm = resources["llm"]
    assert isinstance(llm.openai.api_key, dg.EnvVar)
    assert llm.openai.api_key.env_var_name == "OPENAI_API_KEY"
    assert isinstance(resources["database"].url, dg.EnvVar)
    snap = snapshot(resources)
    assert configured(snap, "llm")["openai"]["api_key"] == {"env": "OPENAI_API_KEY"}
    assert configured(snap, "llm")["azure"]["api_key"] == {"env": "AZURE_OPENAI_API_KEY"}
    assert configured(snap, "database")["url"] == {"env": "DATABASE_URL"}
    text = serialize_value(snap) + repr(resources)
    for secret in (KEY, AZURE_KEY, "secret-password"):
        assert secret not in text

    # Unset: the defaults, as plain values; no EnvVar that would fail when a run starts.
    assert llm.hyperbolic.api_key is None
    assert llm.azure.api_version == "2024-10-21"


def test_the_environment_value_reaches_the_run(env):
    env.setenv("OPENAI_API_KEY", KEY)
    resources = build_resources(Settings(_env_file=None))

    @dg.asset
    def key_seen(llm: LLMProvidersResource) -> None:
        assert llm.openai.api_key == KEY

    result = dg.materialize([key_seen], resources={"llm": resources["llm"]})
    assert result.success


def test_a_value_only_the_settings_hold_is_passed_as_it_is(env):
    # Tests (and notebooks) build their own Settings: nothing in the environment to name.
    env.setenv("OPENAI_API_KEY", "sk-some-other-key-value")
    resources = build_resources(SettingsForTest(OPENAI_API_KEY=KEY, DATABASE_URL="sqlite:///t.db"))
    assert resources["llm"].openai.api_key == KEY
    assert not isinstance(resources["llm"].openai.api_key, dg.EnvVar)
    assert resources["database"].url == "sqlite:///t.db"


def test_every_setting_reaches_its_resource(env, tmp_path):
    settings = SettingsForTest(
        DATABASE_URL="sqlite:///app.db",
        LEGACY_DATABASE_URL="sqlite:///v1.db",
        PROMPT_SETS_DIR=tmp_path / "sets",
        EXPORTS_DIR=tmp_path / "out",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        OPENAI_ORGANIZATION="org-1",
        OPENAI_MAX_CONCURRENCY=3,
        AZURE_OPENAI_TOKENS_PER_MINUTE=9000,
        HYPERBOLIC_REQUESTS_PER_MINUTE=30,
        LLM_TIMEOUT_S=7.5,
        EMBEDDING_PROVIDER="openai",
        EMBEDDING_MODEL="text-embedding-3-large",
    )
    resources = build_resources(settings, llm={"max_retries": 0}, embedding={"batch_size": 8})
    llm = resources["llm"]
    assert (llm.openai.base_url, llm.openai.organization) == ("http://127.0.0.1:9/v1", "org-1")
    assert llm.provider_limits("openai").max_concurrency == 3
    assert llm.azure.tokens_per_minute == 9000 and llm.hyperbolic.requests_per_minute == 30
    assert (llm.timeout_s, llm.max_retries) == (7.5, 0)
    embedding = resources["embedding"]
    assert (embedding.provider, embedding.model, embedding.batch_size) == (
        "openai",
        "text-embedding-3-large",
        8,
    )
    assert resources["database"].url == "sqlite:///app.db"
    assert resources["legacy_database"].url == "sqlite:///v1.db"
    assert resources["prompt_sets"].directory == str(tmp_path / "sets")
    assert resources["exports"].directory == str(tmp_path / "out")
    assert llm.missing_env_vars("openai") == ["OPENAI_API_KEY"]
    assert embedding.missing_env_vars() == ["OPENAI_API_KEY"]


def test_a_bad_timeout_is_refused_naming_the_variable(env):
    env.setenv("LLM_TIMEOUT_S", "0")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert "LLM_TIMEOUT_S" in str(caught.value) and "greater than 0" in str(caught.value)
    env.setenv("LLM_TIMEOUT_S", "soon")
    with pytest.raises(ValidationError, match=r"LLM_TIMEOUT_S\n.*valid number"):
        Settings(_env_file=None)


def test_an_empty_variable_counts_as_unset(env):
    # `NAME=` lines copied from .env.example: the default, not an error or an empty value.
    env.setenv("LLM_TIMEOUT_S", "")
    env.setenv("OPENAI_MAX_CONCURRENCY", "")
    env.setenv("OPENAI_API_KEY", "")
    settings = Settings(_env_file=None)
    assert (settings.llm_timeout_s, settings.openai_max_concurrency) == (60.0, 16)
    assert settings.openai_api_key is None
    assert build_resources(settings)["llm"].openai.api_key is None


def test_dotenv_is_read_once_into_the_environment(env, tmp_path):
    """`get_settings` loads `.env` as `dagster dev` does, so what it holds is named too."""
    from study_query_dagster.config import get_settings

    (tmp_path / ".env").write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_MAX_CONCURRENCY=5\n")
    env.setenv("OPENAI_MAX_CONCURRENCY", "4")  # the environment wins
    get_settings.cache_clear()
    try:
        settings = get_settings()
        resources = build_resources(settings)
    finally:
        get_settings.cache_clear()
    assert settings.openai_max_concurrency == 4
    assert resources["llm"].openai.api_key.env_var_name == "OPENAI_API_KEY"
