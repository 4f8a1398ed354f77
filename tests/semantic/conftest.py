"""A private Redis with vector search for the semantic tier's shared-index tests (skipped only where none runs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dspy_tiered_cache.testing.redis_search import SearchUnavailable, start_search_server
from dspy_tiered_cache.testing.redis_server import RedisServer
from tests.integrations.conftest import make_cache  # noqa: F401  (the door tests' LiteLLM cache fixture)


@pytest.fixture(scope="session")
def search_server() -> Iterator[RedisServer]:
    try:
        server = start_search_server()
    except SearchUnavailable as exc:
        pytest.skip(f"no Redis with the Query Engine can run here: {exc}")
    with server:
        yield server


@pytest.fixture
def search_url(search_server: RedisServer) -> str:
    search_server.flushall()
    return search_server.url
