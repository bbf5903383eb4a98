"""The provider registry: one row per provider, and everything else reads it. A provider added
as one row plus its client class is configurable, buildable and nameable everywhere."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from study_query_dagster.config import Settings
from study_query_dagster.providers import registry
from study_query_dagster.providers.registry import (
    CHAT_PROVIDERS,
    EMBEDDING_PROVIDERS,
    PROVIDERS,
    ProviderSpec,
    Variable,
    table,
)
from study_query_dagster.resources.providers import LLMProvidersResource, ProviderSettings

PACKAGE = Path(registry.__file__).resolve().parents[1]


def test_names_for_the_prompt_set_schema():
    assert CHAT_PROVIDERS == ("azure", "openai", "hyperbolic", "offline")
    assert EMBEDDING_PROVIDERS == ("azure", "openai", "offline", "wordllama")


def test_each_row_names_its_clients_and_settings_consistently():
    for name, row in PROVIDERS.items():
        if row.chat:
            assert row.chat.provider_name == name
        if row.embedding:
            assert row.embedding.name == name
        for variable in row.variables.values():
            field = Settings.model_fields[variable.field]
            assert field.alias == variable.name
        if row.limits:
            for limit in registry.LIMITS:
                assert Settings.model_fields[row.limit_field(limit)].alias.startswith(row.limits)
        # A section in the resource for every row with something to configure.
        section = LLMProvidersResource.model_fields.get(name)
        if row.variables or row.limits:
            assert section is not None and section.annotation is ProviderSettings


def test_a_malformed_row_is_refused_when_the_table_is_built():
    offline = PROVIDERS["offline"]
    with pytest.raises(ValueError, match=r"\['offline'\] appear more than once"):
        table(offline, offline)
    with pytest.raises(ValueError, match="neither a chat nor an embedding client"):
        table(ProviderSpec(name="nothing"))
    no_variable = ProviderSpec(name="x", chat=offline.chat, required=("api_key",))
    with pytest.raises(ValueError, match=r"required arguments without a variable \['api_key'\]"):
        table(no_variable)
    typo = ProviderSpec(name="x", chat=offline.chat, variables={"api_kee": Variable("X_KEY")})
    with pytest.raises(ValueError, match=r"variables no constructor takes \['api_kee'\]"):
        table(typo)


ECHO_MODULE = '''
"""A provider added by the registry test: a chat client and an embedding-only client."""

from .embeddings import OfflineEmbeddingProvider
from .offline import OfflineProvider


class EchoProvider(OfflineProvider):
    provider_name = "echo"

    def __init__(self, api_key, model="echo-1", *, base_url=None, timeout=60.0):
        super().__init__(model)
        self.api_key, self.base_url, self.timeout = api_key, base_url, timeout


class HashEmbedder(OfflineEmbeddingProvider):
    name = "hashy"
'''

ROWS = """
    ProviderSpec(
        name="echo",
        chat=EchoProvider,
        variables={
            "api_key": Variable("ECHO_API_KEY", secret=True),
            "base_url": Variable("ECHO_BASE_URL", "http://echo.invalid"),
        },
        required=("api_key",),
        limits="ECHO",
    ),
    ProviderSpec(name="hashy", embedding=HashEmbedder),
"""

CHECKS = """
import asyncio

import dagster as dg

from study_query_dagster.config import Settings
from study_query_dagster.providers import ProviderFactory
from study_query_dagster.providers.echo import HashEmbedder
from study_query_dagster.providers.embeddings import (
    create_embedding_provider,
    embedding_provider_from_env,
)
from study_query_dagster.providers.registry import CHAT_PROVIDERS, EMBEDDING_PROVIDERS
from study_query_dagster.resources import build_resources
from study_query_dagster.resources.embeddings import EmbeddingResource
from study_query_dagster.resources.providers import LLMProvidersResource

assert "echo" in CHAT_PROVIDERS and "echo" not in EMBEDDING_PROVIDERS
assert "hashy" in EMBEDDING_PROVIDERS and "hashy" not in CHAT_PROVIDERS

settings = Settings(_env_file=None)  # ECHO_API_KEY and ECHO_MAX_CONCURRENCY are set
assert settings.echo_api_key.get_secret_value() == "echo-SECRET-1"
assert settings.echo_max_concurrency == 2 and settings.echo_base_url == "http://echo.invalid"

provider = ProviderFactory.from_env("echo")
assert (provider.api_key, provider.base_url) == ("echo-SECRET-1", "http://echo.invalid")
assert ProviderFactory.required_env_vars("echo") == ["ECHO_API_KEY"]

resources = build_resources(settings)
section = resources["llm"].echo
assert isinstance(section.api_key, dg.EnvVar) and section.api_key.env_var_name == "ECHO_API_KEY"
assert "echo-SECRET-1" not in repr(resources)

llm = resources["llm"].process_config_and_initialize()  # resolves the EnvVar, as a run does
assert llm.missing_env_vars("echo") == []
assert llm.provider_limits("echo").max_concurrency == 2
reply = asyncio.run(llm.create_provider("echo", "echo-2").complete("ping"))
assert reply.provider == "echo" and reply.model == "echo-2" and "ping" in reply.text

assert isinstance(create_embedding_provider("hashy"), HashEmbedder)
assert isinstance(embedding_provider_from_env("hashy", settings), HashEmbedder)
assert "echo" in LLMProvidersResource.model_fields  # hashy has nothing to configure
assert "hashy" not in LLMProvidersResource.model_fields
embedding = EmbeddingResource(llm=llm, provider="hashy")
assert embedding.missing_env_vars() == []
from study_query_dagster.services import prompt_sets

assert "echo" in prompt_sets.PROVIDERS and "hashy" in prompt_sets.EMBED_PROVIDERS
print("ok")
"""


def test_a_provider_is_one_row_plus_its_client_class(tmp_path):
    """Copy the package, add a client module and two rows to the registry (a chat provider with
    a key, base URL and limits, and an embedding-only provider), and nothing else: the settings,
    the factory, the resources and the name tuples all know them."""
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "providers" / "echo.py").write_text(ECHO_MODULE)
    source = (copy / "providers" / "registry.py").read_text()
    start = source.index("PROVIDERS: dict[str, ProviderSpec] = table(")
    end = source.index("\n)\n", start)
    source = source[:end] + ROWS.rstrip() + source[end:]
    client = "from .echo import EchoProvider, HashEmbedder\n"
    source = source.replace("from .offline import", client + "from .offline import", 1)
    (copy / "providers" / "registry.py").write_text(source)

    env = {"PATH": "/usr/bin:/bin", "ECHO_API_KEY": "echo-SECRET-1", "ECHO_MAX_CONCURRENCY": "2"}
    done = subprocess.run(
        [sys.executable, "-c", CHECKS], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "ok"
    assert "echo-SECRET-1" not in done.stdout + done.stderr
