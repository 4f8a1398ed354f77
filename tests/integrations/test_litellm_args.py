"""``TieredCache(...)`` takes ``litellm.Cache(...)``'s arguments with the same meaning, or refuses them in one line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import litellm
import pytest

from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.settings import ConfigError
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

if TYPE_CHECKING:  # the pytest script does not put the checkout on sys.path (the matrix runs it so)
    from tests.integrations.conftest import MakeCache


def _ask(provider: StandInProvider, text: str, **extra: object) -> litellm.ModelResponse:
    return litellm.completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": text}],
                              api_base=provider.base_url, api_key="sk-test", num_retries=0, **extra)  # fmt: skip


def test_ttl_zero_is_accepted_and_serves_nothing(provider: StandInProvider, make_cache: MakeCache) -> None:
    """As ``litellm.Cache(ttl=0)``: every entry is dead on arrival; a per-call ttl still wins."""
    make_cache(type="local", ttl=0)
    _ask(provider, "zero")
    _ask(provider, "zero")
    assert provider.count("chat") == 2
    _ask(provider, "per call", cache={"ttl": 60})
    _ask(provider, "per call", cache={"ttl": 60})
    assert provider.count("chat") == 3


def test_type_local_is_memory_only(make_cache: MakeCache) -> None:
    cache = make_cache(type="local", default_in_memory_ttl=5)
    assert [tier.name for tier in cache.core.tiers] == ["l1"]
    assert cache.core.settings.ttl == cache.core.settings.memory_ttl == 5


def test_type_disk_is_memory_and_the_disk_tier_in_disk_cache_dir(tmp_path: Path) -> None:
    cache = TieredCache(type="disk", disk_cache_dir=str(tmp_path / "litellm_cache"))
    try:
        assert [tier.name for tier in cache.core.tiers] == ["l1", "disk"]
        assert cache.core.settings.disk_path == tmp_path / "litellm_cache" / "cache.sqlite3"
    finally:
        cache.close()


def test_type_redis_with_host_and_port(provider: StandInProvider, make_cache: MakeCache) -> None:
    with RedisServer(password="s3cret pass") as server:
        parts = urlsplit(server.url)
        cache = make_cache(type="redis", host=parts.hostname, port=parts.port, password="s3cret pass")
        assert [tier.name for tier in cache.core.tiers] == ["l1", "l2"]
        _ask(provider, "via redis")
        cache.flush()
        cache.core.tiers[0].clear()  # the answer must come back from Redis
        _ask(provider, "via redis")
        assert provider.count("chat") == 1
        assert cache.stats()["tiers"]["l2"]["hits"] == 1
        cache.close()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        ({"type": "s3", "s3_bucket_name": "b"}, "use litellm.Cache(type='s3')"),
        ({"gcs_bucket_name": "b"}, "use litellm.Cache(type='gcs')"),
        ({"type": "qdrant-semantic"}, "pass semantic=True"),
        ({"redis_semantic_cache_index_name": "i"}, "pass semantic=True"),
        ({"gcp_service_account": "sa"}, "pass redis_url="),
        ({"_backend": object()}, "drop _backend="),
        ({"type": "redis"}, "needs host= and port="),
        ({"ttl": "soon"}, "number of seconds"),
    ],
)
def test_refused_arguments_say_what_to_use_in_one_line(
    arguments: dict[str, object], says: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("REDIS_URL", "REDIS_HOST"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as refused:
        TieredCache(**arguments)  # type: ignore[arg-type]
    message = str(refused.value)
    assert says in message
    assert "\n" not in message


def test_litellm_defaults_of_refused_arguments_are_accepted(make_cache: MakeCache) -> None:
    cache = make_cache(type="local", s3_use_ssl=True, semantic_cache_scope="key", redis_flush_size=100)
    assert [tier.name for tier in cache.core.tiers] == ["l1"]


def test_an_argument_neither_knows_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected arguments: colour"):
        TieredCache(colour="blue")  # type: ignore[arg-type]
