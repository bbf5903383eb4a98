"""Connection failures told apart in the error kind (refused, reset, closed, TLS, DNS), each with
the underlying reason in the message, through the real openai and httpx clients."""

import socket

import httpx
import pytest

from study_query_dagster.providers import ProviderFactory, error_from_httpx
from study_query_dagster.providers.base import ProviderError
from tests.support.fake_llm_server import Fault

KEY = "sk-connection-test-0123456789"


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(provider: str, url: str):
    base = f"{url}/v1" if provider == "openai" else url
    return ProviderFactory.create(provider, api_key=KEY, model="m", base_url=base, timeout=60)


async def failure(provider: str, url: str) -> ProviderError:
    async with client(provider, url) as p:
        with pytest.raises(ProviderError) as caught:
            await p.complete("hi")
    return caught.value


@pytest.mark.parametrize("provider", ["openai", "hyperbolic"])
async def test_refused_reset_closed_and_tls_are_told_apart(provider, llm_server):
    refused = await failure(provider, f"http://127.0.0.1:{closed_port()}")
    assert (refused.error_type, refused.retryable) == ("connection_refused", True)
    assert "refused" in refused.message.lower()

    llm_server.script(Fault(kind="reset"))
    reset = await failure(provider, llm_server.url)
    assert (reset.error_type, reset.retryable) == ("connection_reset", True)
    assert "reset" in reset.message

    llm_server.script(Fault(kind="drop"))
    closed = await failure(provider, llm_server.url)
    assert (closed.error_type, closed.retryable) == ("connection_closed", True)

    # TLS spoken to a plain-HTTP server: a certificate or protocol problem does not go away.
    tls = await failure(provider, llm_server.url.replace("http://", "https://"))
    assert (tls.error_type, tls.retryable) == ("tls_error", False)
    assert "TLS failed" in tls.message and "WRONG_VERSION_NUMBER" in tls.message
    assert KEY not in refused.message + reset.message + closed.message + tls.message


def test_a_dns_failure_is_its_own_kind():
    # A real resolver error, made without any lookup (a numeric-host-only query of a name).
    with pytest.raises(socket.gaierror) as resolver:
        socket.getaddrinfo("no-such-host.invalid", 443, flags=socket.AI_NUMERICHOST)
    try:
        raise httpx.ConnectError(str(resolver.value)) from resolver.value
    except httpx.ConnectError as exc:
        error = error_from_httpx(exc, "hyperbolic")
    assert error.error_type == "dns_error" and not error.retryable
    assert error.message.startswith("hyperbolic: DNS lookup failed:")
