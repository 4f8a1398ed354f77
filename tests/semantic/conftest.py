"""A private Redis with vector search for the semantic tier's shared-index tests (skipped only where none runs)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_search import SearchUnavailable, start_search_server
from dspy_tiered_cache.testing.redis_server import RedisServer
from tests.integrations.conftest import MakeCache, make_cache  # noqa: F401  (the door tests' LiteLLM cache fixture)


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


def semantic_settings(provider: StandInProvider, **extra: Any) -> dict[str, Any]:
    """The tier on, embedding with the stand-in provider's bag-of-words model over HTTP (whose cosines run lower than a
    sentence model's: paraphrases here score 0.8-0.95, hence its own threshold)."""
    return {
        "semantic": True,
        "semantic_threshold": 0.7,
        "semantic_embedding_model": "openai/bag-of-words",
        "semantic_embedding_api_base": provider.base_url,
        "semantic_embedding_api_key": "sk-test",
        **extra,
    }


@pytest.fixture(params=["disk", "redis"])
def semantic_cache(
    request: pytest.FixtureRequest,
    make_cache: MakeCache,  # noqa: F811 (the imported fixture)
    provider: StandInProvider,
    tmp_path: Path,
) -> Any:
    if request.param == "disk":
        return make_cache(disk=True, disk_path=tmp_path / "c.sqlite3", **semantic_settings(provider))
    url = request.getfixturevalue("search_url")
    return make_cache(redis_url=url, **semantic_settings(provider))
