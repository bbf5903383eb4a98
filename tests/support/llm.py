"""Fixtures for the loopback fake LLM server (one per test session, reset before each test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .fake_llm_server import FakeLLMServer


@pytest.fixture(scope="session")
def _fake_llm_session() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def llm_server(_fake_llm_session) -> Iterator[FakeLLMServer]:
    """The fake server with no faults, no latency and an empty request log."""
    _fake_llm_session.reset()
    yield _fake_llm_session
    _fake_llm_session.reset()
