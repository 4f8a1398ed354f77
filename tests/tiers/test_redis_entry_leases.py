"""Leases on the entry keys (Redis 7): ``SET <key> <lease> NX GET PX`` is the lookup and the claim, the answer's
SET ends the lease. Every test runs against real private redis-server processes; on a server before Redis 7 (CI
runs these on Redis 6.2 too) the tests of the entry-key lease skip, and the separate lease key is tested for real."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dspy_tiered_cache import CacheCore, flights
from dspy_tiered_cache.cli import main
from dspy_tiered_cache.fleet import read_fleet
from dspy_tiered_cache.testing.redis_server import RedisServer
from dspy_tiered_cache.tiers.redis import RedisTier
from dspy_tiered_cache.tiers.redis_leases import LEASE_MARK, _version, is_lease


def _core(url: str, **extra: Any) -> CacheCore:
    settings: dict[str, Any] = {"redis_url": url, "disk": False, "fleet": False, "lock_poll_s": 0.02}
    settings.update(extra)
    return CacheCore(**settings)


def _tier(core: CacheCore) -> RedisTier:
    tier = core.claims.tier
    assert isinstance(tier, RedisTier)
    return tier


#: What opening a connection sends (redis-py's handshake): a pool may open one at any time, so it is not counted.
_HANDSHAKE = frozenset({"hello", "client|setinfo", "auth", "select"})


def _commands(raw: redis.Redis) -> dict[str, int]:
    stats = raw.info("commandstats")
    # The test's own CONFIG RESETSTAT: "config|resetstat" on Redis 7, plain "config" before it.
    calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if "config" not in k}
    return {name: n for name, n in calls.items() if name not in _HANDSHAKE}


def _until(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return bool(check())


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.mark.usefixtures("entry_leases")
def test_a_miss_costs_three_commands_and_the_other_process_none(redis_url: str, raw: redis.Redis) -> None:
    leader, other = _core(redis_url), _core(redis_url)
    warm = leader.key_for({"q": "warm"})
    key = leader.key_for({"q": "counted"})
    assert other.key_for({"q": "counted"}) == key
    leader.get_or_compute(warm, lambda: {"a": 0})  # once per process: the server's version, the dictionary check
    assert other._bus is not None and other._bus.wait_connected(5.0)
    raw.config_resetstat()
    value, level = leader.get_or_compute(key, lambda: {"a": 1})
    assert (value, level) == ({"a": 1}, "miss")
    assert _commands(raw) == {"set": 2, "publish": 1}  # SET NX GET (lookup + lease), then SET + PUBLISH
    assert raw.get(key)[:1] == b"\xd7"  # the answer replaced the lease: a frame, nothing to delete
    assert other.memory is not None and _until(lambda: other.memory.get(key) is not None)  # type: ignore[union-attr]
    before = _commands(raw)  # (this INFO and the GET above are the test's own)
    assert other.get_or_compute(key, lambda: {"a": 2}) == ({"a": 1}, "l1")
    assert _commands(raw) == {**before, "info": before["info"] + 1}  # an L1 hit: no command at all
    assert other.stats.snapshot()["shared_taken"] == 2 and other.stats.snapshot()["shared_rejected"] == 0
    leader.close()
    other.close()


@pytest.mark.usefixtures("entry_leases")
def test_a_waiting_process_gets_the_holders_answer_and_one_upstream_call(redis_url: str) -> None:
    leader, waiter = _core(redis_url), _core(redis_url, invalidation_pubsub=False)  # the waiter polls
    key = leader.key_for({"q": "wait"})
    waiter.key_for({"q": "wait"})
    assert leader.get(key) is None
    claim = leader.claim(key)
    assert claim.leads and claim.token and claim.on_entry
    calls: list[int] = []
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(waiter.get_or_compute(key, lambda: calls.append(1))))
    thread.start()
    time.sleep(0.1)  # the waiter found the lease and polls
    leader.fulfil(claim, {"answer": 42})
    thread.join(10)
    assert results == [({"answer": 42}, "l2")] and calls == []
    leader.close()
    waiter.close()


@pytest.mark.usefixtures("entry_leases")
def test_an_abandoned_lease_is_deleted_and_the_waiter_leads_at_once(redis_url: str, raw: redis.Redis) -> None:
    holder, other = _core(redis_url), _core(redis_url)
    key = holder.key_for({"q": "abandon"})
    other.key_for({"q": "abandon"})
    holder.get(key)
    claim = holder.claim(key)
    assert is_lease(raw.get(key))
    holder.abandon(claim)
    assert raw.get(key) is None  # compare-and-delete: it was still ours
    began = time.monotonic()
    assert other.get_or_compute(key, lambda: {"b": 1}) == ({"b": 1}, "miss")
    assert time.monotonic() - began < 2.0
    holder.close()
    other.close()


def test_a_lease_marker_is_never_a_value_on_any_read_path(
    redis_url: str, raw: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    core = _core(redis_url, write_behind=False, single_flight=False)  # plain GETs
    key = core.key_for({"q": "marker"})
    stored = core.key_for({"q": "stored"})
    core.set(stored, {"s": 1})
    marker = LEASE_MARK + b"0123456789abcdef0123456789abcdef"
    raw.set(key, marker, px=30_000)
    assert core.get(key) is None
    assert core.stats.tiers["l2"].corrupt == 0 and raw.get(key) == marker  # a miss, not a corrupt entry to delete
    tier = _tier(core)
    assert [k for k, _ in tier.scan_prefix(f"{core.settings.key_prefix}:e:")] == [stored]  # exports skip it
    assert tier.storage_sample()["sampled"] == 1
    assert not is_lease(raw.get(stored)) and raw.get(stored)[:1] == b"\xd7"
    code = main(["--redis-url", redis_url, "stats", "--format", "json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["tiers"][0]["namespaces"][0]["entries"] == 1
    core.close()


@pytest.mark.usefixtures("entry_leases")
def test_a_foreign_type_under_the_key_is_a_miss_and_nobody_waits(redis_url: str, raw: redis.Redis) -> None:
    """WRONGTYPE takes no lease: every caller computes at once instead of waiting for a lease nobody holds."""
    slow_one, other = _core(redis_url, single_flight_timeout=30), _core(redis_url, single_flight_timeout=30)
    key = slow_one.key_for({"q": "hash"})
    other.key_for({"q": "hash"})
    raw.hset(key, "foreign", "value")
    started = threading.Event()
    results: list[Any] = []

    def slow() -> dict[str, int]:
        started.set()
        time.sleep(0.5)
        return {"slow": 1}

    thread = threading.Thread(target=lambda: results.append(slow_one.get_or_compute(key, slow)))
    thread.start()
    assert started.wait(5)
    began = time.monotonic()
    assert other.get_or_compute(key, lambda: {"fast": 1}) == ({"fast": 1}, "miss")
    assert time.monotonic() - began < 0.4  # did not wait for the slow caller, nor for any timeout
    thread.join(10)
    assert results == [({"slow": 1}, "miss")]
    assert raw.type(key) == b"string" and raw.get(key)[:1] == b"\xd7"  # the answer replaced the foreign value
    slow_one.close()
    other.close()


@pytest.mark.usefixtures("entry_leases")
def test_a_lease_that_expired_before_the_answer_still_gets_the_answer_written(redis_url: str, raw: redis.Redis) -> None:
    slow, other = _core(redis_url, lock_lease_s=0.2), _core(redis_url, lock_lease_s=0.2)
    key = slow.key_for({"q": "expired"})
    other.key_for({"q": "expired"})
    slow.get(key)
    claim = slow.claim(key)
    assert claim.on_entry
    assert _until(lambda: raw.get(key) is None)  # the lease expired: the upstream call is slow
    other.get(key)
    theirs = other.claim(key)  # another process takes the lease now
    assert theirs.leads and is_lease(raw.get(key))
    slow.abandon(claim)  # an abandon now must not delete *their* lease
    assert raw.get(key) == LEASE_MARK + theirs.token.encode()
    other.fulfil(theirs, {"late": 1})
    assert raw.get(key)[:1] == b"\xd7" and slow.get(key) is not None
    # The slow holder's answer lands even though its lease is gone: a plain SET, not XX.
    late = slow.key_for({"q": "late"})
    slow.get(late)
    mine = slow.claim(late)
    assert _until(lambda: raw.get(late) is None)
    slow.fulfil(mine, {"late": 2})
    assert raw.get(late)[:1] == b"\xd7" and other.get(late) is not None
    slow.close()
    other.close()


@pytest.mark.usefixtures("entry_leases")
def test_a_release_that_fails_on_a_hung_redis_is_kept_until_it_goes_through() -> None:
    with RedisServer() as server:
        core = _core(server.url, lock_lease_s=30, redis_timeout_ms=100, breaker_reset_s=0.2)
        key = core.key_for({"q": "hung"})
        core.get(key)
        claim = core.claim(key)
        tier = _tier(core)
        assert tier.holds_entry_lease(key, claim.token)
        server.pause()
        try:
            token = claim.token
            core.abandon(claim)  # the compare-and-delete times out: the writer retries it
            assert tier.holds_entry_lease(key, token)  # bookkeeping kept until a release goes through
        finally:
            server.resume()
        client = server.client()
        assert _until(lambda: client.get(key) is None, timeout=10)
        assert _until(lambda: not tier.holds_entry_lease(key, token))
        other = _core(server.url)
        began = time.monotonic()
        assert other.get_or_compute(key, lambda: {"c": 1}) == ({"c": 1}, "miss")
        assert time.monotonic() - began < 2.0
        other.close()
        core.close()


@pytest.mark.usefixtures("entry_leases")
def test_a_lease_a_lookup_took_for_no_claim_is_given_back(
    redis_url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lookup about to claim takes the lease; a caller that never claims (a stream) does not strand it."""
    monkeypatch.setattr(flights, "REAP_S", 0.2)
    core = _core(redis_url)
    key = core.key_for({"q": "no claim"})
    assert core.get(key) is None
    assert is_lease(raw.get(key))
    assert _until(lambda: raw.get(key) is None)
    core.close()


def test_async_callers_share_one_computation_across_instances(redis_url: str) -> None:
    first, second = _core(redis_url), _core(redis_url)
    key = first.key_for({"q": "async"})
    second.key_for({"q": "async"})
    calls: list[int] = []

    async def compute() -> dict[str, int]:
        calls.append(1)
        await asyncio.sleep(0.3)
        return {"d": 1}

    async def both() -> list[Any]:
        return list(await asyncio.gather(first.aget_or_compute(key, compute), second.aget_or_compute(key, compute)))

    results = asyncio.run(both())
    assert [value for value, _ in results] == [{"d": 1}, {"d": 1}] and calls == [1]
    assert sorted(level for _, level in results)[0] == "l1" or "l2" in {level for _, level in results}
    first.close()
    second.close()


def test_servers_before_redis_7_keep_the_separate_lease_key(
    redis_url: str, raw: redis.Redis, redis_server_version: tuple[int, int]
) -> None:
    core = _core(redis_url)
    tier = _tier(core)
    key = core.key_for({"q": "old"})  # the client is built (a new client asks the server's version again)
    real_old_server = redis_server_version < (7, 0)
    if real_old_server:
        core.get_or_compute(core.key_for({"q": "warm"}), lambda: {"e": 0})  # the first lease asks the version
        assert tier.entry_leases() is False  # detected from the server's own INFO
    else:
        tier._entry_leases = False  # as detected on Redis 6
    raw.config_resetstat()
    assert core.get_or_compute(key, lambda: {"e": 1}) == ({"e": 1}, "miss")
    commands = _commands(raw)
    assert commands.get("del") == 1 and commands.get("get", 0) >= 2  # GET, SET NX lease key, GET, SET, DEL
    if real_old_server:  # exactly what a miss costs there: the two extra round trips entry leases save
        assert commands == {"get": 2, "set": 2, "del": 1, "publish": 1}
    assert raw.get(key)[:1] == b"\xd7" and not raw.keys("*lock*")  # the answer stored, the lease key gone
    core.close()


def test_a_server_refusing_nx_get_falls_back_to_lease_keys(
    redis_url: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = _core(redis_url)
    tier = _tier(core)
    key = core.key_for({"q": "refused"})
    real_set = tier.client.set

    def old_set(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("get") and kwargs.get("nx"):
            raise redis.ResponseError("ERR syntax error")
        return real_set(*args, **kwargs)

    client, run = tier._runner()

    def old_server(command: bytes) -> Any:  # the tier's own read of a plain client (tiers/redis_direct.py)
        if command.startswith(b"*7\r\n$3\r\nSET\r\n") and b"\r\nNX\r\n$3\r\nGET\r\n" in command:
            raise redis.ResponseError("ERR syntax error")
        assert run is not None
        return run(command)

    monkeypatch.setattr(tier.client, "set", old_set)
    monkeypatch.setattr(tier, "_runner", lambda: (client, old_server if run is not None else None))
    assert core.get_or_compute(key, lambda: {"f": 1}) == ({"f": 1}, "miss")
    assert tier.entry_leases() is False and raw.get(key)[:1] == b"\xd7"
    core.close()


def test_versions_are_read_from_every_node() -> None:
    assert _version({"redis_version": "7.0.15"}) == (7, 0)
    assert _version({"a:1": {"redis_version": "7.2.4"}, "b:2": {"redis_version": "6.2.14"}}) == (6, 2)
    assert _version({"redis_version": "unknown"}) is None


def _two_cores_on(topology: str, request: pytest.FixtureRequest, prefix: str) -> tuple[CacheCore, CacheCore]:
    """Two processes' cores on the session's local Cluster or Sentinel, under a key prefix of the test's own."""
    if topology == "cluster":
        url = request.getfixturevalue("redis_cluster").url
        extra: dict[str, Any] = {"redis_cluster": True, "key_prefix": f"{prefix}-cluster"}
    else:
        url = request.getfixturevalue("redis_sentinel").sentinel_url
        extra = {"key_prefix": f"{prefix}-sentinel"}
    return _core(url, **extra), _core(url, **extra)


@pytest.mark.usefixtures("entry_leases")
@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_entry_leases_on_cluster_and_sentinel(topology: str, request: pytest.FixtureRequest) -> None:
    first, second = _two_cores_on(topology, request, "lease")
    key = first.key_for({"topology": topology, "t": time.time()})
    second.key_for({"topology": topology, "t": 0})
    assert first.get(key) is None
    claim = first.claim(key)
    assert claim.on_entry and _tier(first).entry_leases() is True
    waiter_result: list[Any] = []
    thread = threading.Thread(target=lambda: waiter_result.append(second.get_or_compute(key, lambda: {"no": 1})))
    thread.start()
    time.sleep(0.1)
    first.fulfil(claim, {"g": topology})
    thread.join(10)
    assert waiter_result and waiter_result[0][0] == {"g": topology}
    first.close()
    second.close()


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_async_callers_find_the_server_version_on_cluster_and_sentinel(
    topology: str, request: pytest.FixtureRequest, redis_server_version: tuple[int, int]
) -> None:
    """The async client asks INFO its own way (a Cluster answers per node, or from one node): the async path must
    reach the same verdict as the sync one, and two async processes still share one computation."""
    first, second = _two_cores_on(topology, request, "alease")
    key = first.key_for({"topology": topology, "async": time.time()})
    second.key_for({"topology": topology, "async": 0})
    calls: list[int] = []

    async def compute() -> dict[str, str]:
        calls.append(1)
        await asyncio.sleep(0.3)
        return {"a": topology}

    async def both() -> list[Any]:
        return list(await asyncio.gather(first.aget_or_compute(key, compute), second.aget_or_compute(key, compute)))

    assert _tier(first).entry_leases() is None and _tier(second).entry_leases() is None
    results = asyncio.run(both())
    assert [value for value, _ in results] == [{"a": topology}] * 2 and calls == [1]
    assert _tier(first).entry_leases() is (redis_server_version >= (7, 0))  # unknown before: async calls only
    first.close()
    second.close()


def test_fleet_batches_are_one_command_and_old_buckets_still_read(redis_url: str, raw: redis.Redis) -> None:
    core = CacheCore(redis_url=redis_url, disk=False, fleet_flush_s=3600)
    key = core.key_for({"q": "fleet"})
    core.get_or_compute(key, lambda: {"h": 1})
    core.get(key)
    assert core.fleet is not None and core.fleet.flush()  # the first batch of the hour: HSET + EXPIRE
    core.get(key)
    raw.config_resetstat()
    assert core.fleet.flush()
    assert _commands(raw) == {"hset": 1}
    bucket = int(time.time() // 3600)
    raw.hset(f"{{dtc:fleet}}:h:{bucket}", "n\tdefault\th", 5)  # written by a release before this one
    fleet = read_fleet(core)
    assert fleet is not None and fleet["hits"] == core.stats.hits + 5
    assert fleet["shared_taken"] == 0 and "shared_rejected" in fleet
    core.close()


def test_threads_of_one_process_never_wait_on_their_own_lease(redis_url: str) -> None:
    """Six threads look up at once: the first lookup takes the lease, the others see it. Whichever thread leads the
    process's flight uses that lease; its failure lets another lead at once, never after the lease's lifetime."""
    core = _core(redis_url, lock_lease_s=30)
    key = core.key_for({"q": "threads"})
    barrier = threading.Barrier(6)
    calls: list[int] = []

    def compute() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.1)
        if len(calls) == 1:
            raise RuntimeError("the first leader fails")
        return {"t": 1}

    def call() -> Any:
        barrier.wait()
        try:
            return core.get_or_compute(key, compute)[0]
        except RuntimeError as exc:
            return exc

    began = time.monotonic()
    pool = [threading.Thread(target=lambda: outcomes.append(call())) for _ in range(6)]
    outcomes: list[Any] = []
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join(40)
    assert time.monotonic() - began < 5
    assert sum(isinstance(o, RuntimeError) for o in outcomes) == 1 and len(calls) == 2
    assert [o for o in outcomes if not isinstance(o, RuntimeError)] == [{"t": 1}] * 5
    core.close()


def test_stats_show_the_answers_shared_between_processes(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    writer, reader = _core(redis_url, fleet=True, fleet_flush_s=3600), _core(redis_url, fleet=True, fleet_flush_s=3600)
    key = writer.key_for({"q": "shared"})
    reader.key_for({"q": "shared"})
    assert reader._bus is not None and reader._bus.wait_connected(5.0)
    writer.get_or_compute(key, lambda: {"s": 1})
    assert _until(lambda: reader.stats.shared_taken == 1)
    snapshot = reader.stats.snapshot()
    assert (snapshot["shared_taken"], snapshot["shared_rejected"]) == (1, 0)
    writer.close()
    reader.close()  # the last fleet batch
    assert main(["--redis-url", redis_url, "stats", "--format", "json"]) == 0
    fleet = json.loads(capsys.readouterr().out)["fleet"]
    assert (fleet["shared_taken"], fleet["shared_rejected"]) == (1, 0)
    assert main(["--redis-url", redis_url, "stats"]) == 0
    assert "answers shared between processes: 1 taken into memory tiers, 0 refused" in capsys.readouterr().out
