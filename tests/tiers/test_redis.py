from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis

from dspy_tiered_cache import dictionary
from dspy_tiered_cache.codec import CorruptEntry, Entry, FrameCodec, encode_value
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.dictionary import Dictionary
from dspy_tiered_cache.testing.redis_server import LocalRedisCluster, LocalSentinel, RedisServer
from dspy_tiered_cache.tiers.redis import RedisTier
from dspy_tiered_cache.tiers.redis_direct import adirect, direct, get_command, lease_get_command

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


def test_the_direct_read_gives_every_connection_back(private_redis: RedisServer) -> None:
    """The hit's read sends its command on the pool itself (tiers/redis_direct.py): an error reply leaves the
    connection usable, a timeout drops it, and either way it goes back to the pool."""
    tier = RedisTier(private_redis.url, codec=CODEC, timeout_ms=100)
    pool = tier.client.connection_pool
    assert tier._runner()[1] is not None
    tier.set("dtc:e:default:0:d", entry())
    tier.client.rpush("dtc:e:default:0:list", b"x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        tier.get("dtc:e:default:0:list")
    assert tier.get("dtc:e:default:0:d") is not None
    private_redis.pause()
    try:
        with pytest.raises(redis.TimeoutError):
            tier.get("dtc:e:default:0:d")
    finally:
        private_redis.resume()
    assert tier.get("dtc:e:default:0:d") is not None
    assert not pool._in_use_connections and len(pool._available_connections) == 1


async def test_the_async_direct_read_gives_every_connection_back(private_redis: RedisServer) -> None:
    """The asyncio read sends its command on the pool itself too: an error reply leaves the connection usable, a
    timeout drops it, and either way it goes back to the pool."""
    tier = RedisTier(private_redis.url, codec=CODEC, timeout_ms=100)
    try:
        assert (await tier._arunner())[1] is not None
        pool = tier.aclient.connection_pool
        await tier.aset("dtc:e:default:0:d", entry())
        await tier.aclient.rpush("dtc:e:default:0:list", b"x")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await tier.aget("dtc:e:default:0:list")
        assert await tier.aget("dtc:e:default:0:d") is not None
        private_redis.pause()
        try:
            with pytest.raises(redis.TimeoutError):
                await tier.aget("dtc:e:default:0:d")
        finally:
            private_redis.resume()
        assert await tier.aget("dtc:e:default:0:d") is not None
        assert not pool._in_use_connections and len(pool._available_connections) == 1
    finally:
        await tier.aclose()


async def test_a_cancelled_async_read_leaves_no_reply_behind(private_redis: RedisServer) -> None:
    """A lookup cancelled while its reply is outstanding (a caller's own timeout) must not leave that reply on a
    pooled connection, where the next read would take it for its own: the connection is dropped instead.

    How the cancelled read ends is redis-py's and Python's: ``CancelledError`` at once, or (redis-py 5.0 on Python
    3.10, whose ``async_timeout`` holds the cancellation until the socket timeout) redis-py's ``TimeoutError``,
    the same through ``client.get()``. Either way the connection was dropped, which is what is asserted."""
    tier = RedisTier(private_redis.url, codec=CODEC, timeout_ms=1000)
    try:
        pool = (await tier._ac()).connection_pool
        await tier.aset("dtc:e:default:0:one", entry(payload=b"one"))
        await tier.aset("dtc:e:default:0:two", entry(payload=b"two"))
        private_redis.pause()
        try:
            task = asyncio.create_task(tier.aget("dtc:e:default:0:one"))
            for _ in range(10_000):  # until the command is on the wire and its reply awaited
                lent = list(pool._in_use_connections)
                if lent and lent[0]._reader is not None and lent[0]._reader._waiter is not None:
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError("the read never waited for its reply")
            task.cancel()
            with pytest.raises((asyncio.CancelledError, redis.TimeoutError)):
                await task
        finally:
            private_redis.resume()
        second = await tier.aget("dtc:e:default:0:two")
        assert second is not None and second.payload == b"two"
        assert not pool._in_use_connections
    finally:
        await tier.aclose()


def test_only_a_plain_client_is_read_directly(redis_url: str) -> None:
    plain = redis.Redis.from_url(redis_url)
    assert direct(plain) is not None
    assert direct(redis.Redis.from_url(redis_url, single_connection_client=True)) is None
    assert direct(redis.Redis.from_url(redis_url, encoding="latin-1")) is None
    assert adirect(redis.asyncio.Redis.from_url(redis_url)) is not None
    assert adirect(redis.asyncio.Redis.from_url(redis_url, single_connection_client=True)) is None
    assert adirect(redis.asyncio.Redis.from_url(redis_url, encoding="latin-1")) is None
    assert adirect(plain) is None and direct(redis.asyncio.Redis.from_url(redis_url)) is None
    conn = plain.connection_pool.make_connection()
    key = "dtc:e:caf\u00e9:3:" + "a" * 40
    assert [get_command(key)] == conn.pack_command("GET", key)
    lease = lease_get_command(key, b"dtc-lease:0f", 30_000)
    assert [lease] == conn.pack_command("SET", key, b"dtc-lease:0f", "NX", "GET", "PX", 30_000)


def test_health_reports_version(redis_url: str) -> None:
    health = RedisTier(redis_url, codec=CODEC).health()
    assert health.ok and health.version and health.latency_ms is not None


class TestRedisClusterTier(TierContract):
    """The same contract on a 3-master local Cluster: single-key commands only, no CROSSSLOT."""

    @pytest.fixture
    def tier(self, redis_cluster: LocalRedisCluster) -> Iterator[RedisTier]:
        redis_cluster.flushall()
        # The contract, not the first-call latency (the fault tests bound that): building a Cluster client reads
        # the command table, which on redis-py 5.0 and a loaded 2-core box can take longer than the 250 ms default.
        tier = RedisTier(redis_cluster.url, codec=CODEC, cluster=True, connect_timeout_ms=3000)
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


# -- failing open in every topology (issue 12) ---------------------------------------------------------------


@pytest.mark.parametrize("topology", ["standalone", "sentinel", "cluster"])
def test_construction_never_touches_the_network(topology: str) -> None:
    """A hung deployment at start: building the cache (tier, breaker, invalidation bus) is instant and opens no
    connection; the first call pays one timeout and is a counted miss, the next ones are skipped by the breaker."""
    from dspy_tiered_cache.core import CacheCore
    from dspy_tiered_cache.testing.redis_server import SilentPort

    with SilentPort() as hung:
        url = f"redis+sentinel://{hung.host}:{hung.port}/mymaster" if topology == "sentinel" else hung.url
        started = time.perf_counter()
        core = CacheCore(redis_url=url, redis_cluster=topology == "cluster", disk=False, memory=False,
                         redis_timeout_ms=100, redis_connect_timeout_ms=100)  # fmt: skip
        assert time.perf_counter() - started < 0.05
        tier = core.tiers[-1]
        assert isinstance(tier, RedisTier) and tier._client is None and tier._building is None
        try:
            started = time.perf_counter()
            assert core.get(core.key_for({"q": 1})) is None
            first = time.perf_counter() - started
            started = time.perf_counter()
            for i in range(20):
                assert core.get(core.key_for({"q": i})) is None
            steady = (time.perf_counter() - started) / 20
            assert first < 0.4  # one 100 ms timeout, generous bound for a loaded machine
            assert steady < 0.005
            assert core.breakers["l2"].state in ("open", "half-open")
            assert core.stats.tiers["l2"].errors >= 1
        finally:
            core.close()


def test_breaker_probes_in_the_background_until_redis_returns(private_redis: RedisServer) -> None:
    """No caller is the probe: calls stay misses at once while it is down, and it closes by itself when back."""
    from dspy_tiered_cache.core import CacheCore

    core = CacheCore(redis_url=private_redis.url, disk=False, memory=False, breaker_reset_s=0.1,
                     redis_timeout_ms=100, redis_connect_timeout_ms=100)  # fmt: skip
    try:
        key = core.key_for({"q": "probe"})
        private_redis.kill()
        for _ in range(3):
            assert core.get(key) is None
        breaker = core.breakers["l2"]
        assert breaker.state != "closed"
        deadline = time.monotonic() + 5
        while breaker.probes < 2 and time.monotonic() < deadline:  # probes keep failing while it is down
            time.sleep(0.02)
        assert breaker.probes >= 2 and breaker.state != "closed"
        private_redis.start()
        while breaker.state != "closed" and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        assert breaker.state == "closed"
        core.set(key, {"back": True})
        core.flush()
        assert core.get(key) is not None
    finally:
        core.close()


def test_cluster_url_may_name_several_seed_nodes(redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.flushall()
    tier = RedisTier(redis_cluster.seeds_url, codec=CODEC, cluster=True)
    try:
        tier.set("dtc:e:default:0:seeds", entry())
        assert tier.get("dtc:e:default:0:seeds") is not None
        assert len(tier.client.get_nodes()) == len(redis_cluster.nodes)
    finally:
        tier.close()


# -- trained dictionaries shared through Redis ---------------------------------------------------------
def _trained() -> Dictionary:
    texts = [f"answer {i}: " + "tiered caches share answers " * (i % 9 + 2) for i in range(150)]
    samples = [encode_value({"choices": [{"message": {"content": text}}]}, 10**6) for text in texts]
    return dictionary.train(samples, size=4096)


def _payload() -> bytes:
    return encode_value({"choices": [{"message": {"content": "tiered caches share answers " * 30}}]}, 10**6)


def test_trained_dictionary_reaches_other_processes_through_redis(redis_url: str) -> None:
    trained = _trained()
    writer = RedisTier(redis_url, codec=FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6))
    reader = RedisTier(redis_url, codec=FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6))
    try:
        writer.store_dictionary(trained)
        assert writer.adopted_dictionary() == trained.id
        writer.set("dtc:e:default:0:trained", Entry(_payload(), time.time()))
        assert int.from_bytes(writer.client.get("dtc:e:default:0:trained")[3:7], "big") == trained.id
        got = reader.get("dtc:e:default:0:trained")  # fetches the dictionary once, validates it, then decodes
        assert got is not None and got.payload == _payload()
        assert reader.codec.has_dictionary(trained.id)
        storage = writer.storage()
        assert storage["writes"] == 1 and storage["compression_ratio"] > 2
    finally:
        writer.close()
        reader.close()


FOREIGN_DICTIONARY = b"DTCZDICT1\n\x80\x00\x00\x01" + b"\x37\xa4\x30\xec" + b"x" * 200


@pytest.mark.parametrize("stored", [None, b"garbage", FOREIGN_DICTIONARY])
def test_missing_corrupt_or_foreign_dictionary_is_a_miss_not_an_exception(redis_url: str, stored: bytes | None) -> None:
    trained = _trained()
    writer_codec = FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6, dictionary=trained)
    key = "dtc:e:default:0:needs-dict"
    with CacheCore(redis_url=redis_url, memory=False, disk=False, fleet=False, write_behind=False) as core:
        client = redis.Redis.from_url(redis_url)
        client.set(key, writer_codec.dumps(Entry(_payload(), time.time())))
        dict_key = f"dtc:zdict:{trained.id:08x}"
        if stored is None:
            client.delete(dict_key)
        else:
            client.set(dict_key, stored)
        assert core.get(key) is None  # a counted miss, never an exception
        assert core.stats.tiers["l2"].corrupt == 1
        client.close()


def test_adopted_dictionary_is_taken_up_by_writers(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    trained = _trained()
    fresh = FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6)
    RedisTier(redis_url, codec=fresh).store_dictionary(trained, adopt=True)
    monkeypatch.setattr("dspy_tiered_cache.tiers.stored_dictionaries.ADOPT_CHECK_S", 0.0)
    other = RedisTier(redis_url, codec=FrameCodec(secret=None, compression_threshold=256, max_bytes=10**6))
    try:
        other.set("dtc:e:default:0:adopted", Entry(_payload(), time.time()))
        assert int.from_bytes(other.client.get("dtc:e:default:0:adopted")[3:7], "big") == trained.id
    finally:
        other.close()


def test_lease_release_deletes_only_our_own_lease(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tier = RedisTier(redis_url, codec=CODEC)
    try:
        assert tier.acquire_lock("dtc:lock:fresh", "mine", 30.0)
        assert not tier.acquire_lock("dtc:lock:fresh", "theirs", 30.0)
        tier.release_lock("dtc:lock:fresh", "mine")  # fresh lease: one DEL
        assert tier.client.get("dtc:lock:fresh") is None
        # A lease past half its lifetime may have expired and been taken by another process: checked release.
        assert tier.acquire_lock("dtc:lock:old", "mine", 30.0)
        monkeypatch.setitem(tier._leases, "mine", 0.0)  # as if half the lifetime had passed
        tier.client.set("dtc:lock:old", "theirs")  # ... and the lease had expired and been taken by another
        tier.release_lock("dtc:lock:old", "mine")
        assert tier.client.get("dtc:lock:old") == b"theirs"
    finally:
        tier.close()
