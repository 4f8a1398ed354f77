from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from dspy_tiered_cache.codec import CorruptEntry, FrameCodec
from dspy_tiered_cache.testing.redis_server import LocalRedisCluster, LocalSentinel, RedisServer
from dspy_tiered_cache.tiers.redis import RedisTier

from .contract import TierContract, entry

CODEC = FrameCodec(secret=None, compression_threshold=1024, max_bytes=8 * 1024 * 1024)


class TestRedisTier(TierContract):
    @pytest.fixture
    def tier(self, redis_url: str) -> Iterator[RedisTier]:
        tier = RedisTier(redis_url, codec=CODEC)
        yield tier
        tier.close()


def test_clear_touches_only_our_prefix(redis_url: str) -> None:
    other = redis.Redis.from_url(redis_url)
    other.set("someone-elses-key", b"keep me")
    tier = RedisTier(redis_url, codec=CODEC)
    tier.set("dtc:e:default:0:mine", entry())
    tier.bump_generation("default")
    assert tier.clear() == 1
    assert other.get("someone-elses-key") == b"keep me"
    assert tier.get_generation("default") == 1


def test_native_ttl_matches_entry_lifetime(redis_url: str) -> None:
    tier = RedisTier(redis_url, codec=CODEC)
    tier.set("dtc:e:default:0:ttl", entry(ttl=30))
    tier.set("dtc:e:default:0:forever", entry())
    pttl = tier.client.pttl("dtc:e:default:0:ttl")
    assert 29_000 < pttl <= 30_000
    assert tier.client.pttl("dtc:e:default:0:forever") == -1


def test_foreign_value_raises_corrupt(redis_url: str) -> None:
    tier = RedisTier(redis_url, codec=CODEC)
    tier.client.set("dtc:e:default:0:foreign", b"\x80\x04\x95pickle-looking bytes")
    with pytest.raises(CorruptEntry):
        tier.get("dtc:e:default:0:foreign")


def test_refused_port_fails_fast() -> None:
    tier = RedisTier("redis://127.0.0.1:1", codec=CODEC, connect_timeout_ms=100, timeout_ms=100)
    started = time.perf_counter()
    with pytest.raises(redis.ConnectionError):
        tier.get("k")
    assert time.perf_counter() - started < 1.5  # no hidden retries with backoff (those take seconds)


def test_paused_server_times_out_within_operation_timeout(private_redis: RedisServer) -> None:
    tier = RedisTier(private_redis.url, codec=CODEC, timeout_ms=100)
    tier.set("dtc:e:default:0:p", entry())
    private_redis.pause()
    try:
        started = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            tier.get("dtc:e:default:0:p")
        assert time.perf_counter() - started < 1.0  # one 100 ms timeout, not a retry loop
    finally:
        private_redis.resume()


def test_health_reports_version(redis_url: str) -> None:
    health = RedisTier(redis_url, codec=CODEC).health()
    assert health.ok and health.version and health.latency_ms is not None


class TestRedisClusterTier(TierContract):
    """The same contract on a 3-master local Cluster: single-key commands only, no CROSSSLOT."""

    @pytest.fixture
    def tier(self, redis_cluster: LocalRedisCluster) -> Iterator[RedisTier]:
        redis_cluster.flushall()
        tier = RedisTier(redis_cluster.url, codec=CODEC, cluster=True)
        yield tier
        tier.close()

    def test_keys_spread_over_slots_and_clear_reaches_every_node(self, tier: RedisTier) -> None:
        keys = [f"dtc:e:default:0:{i}" for i in range(50)]
        for k in keys:
            tier.set(k, entry())
        slots = {tier.client.keyslot(k) for k in keys}
        assert len(slots) > 10
        assert tier.clear() == 50


class TestRedisSentinelTier(TierContract):
    @pytest.fixture
    def tier(self, redis_sentinel: LocalSentinel) -> Iterator[RedisTier]:
        tier = RedisTier(redis_sentinel.sentinel_url, codec=CODEC)
        tier.client.flushall()  # our own private master
        yield tier
        tier.close()
