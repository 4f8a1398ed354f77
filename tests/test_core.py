from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dspy_tiered_cache import CacheCore, CallOptions, UncacheableRequest
from dspy_tiered_cache.testing.redis_server import RedisServer

REQUEST = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "What is 2+2?"}]}
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "4"}}], "usage": {"prompt_tokens": 9}}


_OPEN: list[CacheCore] = []


@pytest.fixture(autouse=True)
def _close_cores() -> Iterator[None]:
    """Every core a test builds with :func:`core_with` is closed after it: no writer or bus thread outlives it."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def core_with(redis_url: str | None, disk_path: Path | None = None, **kw: Any) -> CacheCore:
    core = CacheCore(redis_url=redis_url, disk=disk_path is not None, disk_path=disk_path or Path("unused"), **kw)
    _OPEN.append(core)
    return core


# -- the cascade -------------------------------------------------------------------------------------
def test_miss_then_write_through_to_every_tier(redis_url: str, disk_path: Path) -> None:
    core = core_with(redis_url, disk_path)
    key = core.key_for(REQUEST)
    assert core.get(key) is None
    assert core.set(key, ANSWER)
    hit = core.get(key)
    assert hit is not None and hit.level == "l1" and hit.value == ANSWER
    assert core.flush()
    assert [t.name for t in core.tiers] == ["l1", "disk", "l2"]
    assert all(t.get(key) is not None for t in core.tiers)


def test_lower_hit_is_promoted_with_remaining_lifetime(redis_url: str) -> None:
    writer = core_with(redis_url, ttl=100)
    key = writer.key_for(REQUEST)
    writer.set(key, ANSWER)
    writer.flush()
    time.sleep(0.3)
    reader = core_with(redis_url, ttl=100)  # another process: empty L1
    hit = reader.get(key)
    assert hit is not None and hit.level == "l2"
    promoted = reader.tiers[0].get(key)
    assert promoted is not None
    assert promoted.expires_at == pytest.approx(hit.expires_at, abs=0.01)  # not a fresh 100 s
    assert promoted.created_at == pytest.approx(hit.created_at, abs=0.01)
    assert reader.get(key).level == "l1"  # type: ignore[union-attr]


def test_memory_tier_cap_shortens_only_memory(redis_url: str) -> None:
    core = core_with(redis_url, ttl=60, memory_ttl=0.2)
    key = core.key_for(REQUEST)
    core.set(key, ANSWER)
    core.flush()
    time.sleep(0.3)
    hit = core.get(key)
    assert hit is not None and hit.level == "l2"


def test_hits_are_fresh_objects() -> None:
    core = core_with(None)
    key = core.key_for(REQUEST)
    core.set(key, ANSWER)
    first = core.get(key)
    assert first is not None
    first.value["choices"].clear()
    assert core.get(key).value == ANSWER  # type: ignore[union-attr]


def test_read_after_write_hits_without_memory_tier(redis_url: str) -> None:
    core = core_with(redis_url, memory=False)
    key = core.key_for(REQUEST)
    core.set(key, ANSWER)
    hit = core.get(key)  # possibly before the background write landed
    assert hit is not None and hit.value == ANSWER


# -- per-call controls -------------------------------------------------------------------------------
def test_ttl_default_per_call_and_no_expiry(disk_path: Path) -> None:
    core = core_with(None, disk_path, ttl=0.2)
    short, forever, custom = (core.key_for({**REQUEST, "n": i}) for i in range(3))
    core.set(short, ANSWER)
    core.set(forever, ANSWER, options=CallOptions(ttl=None))
    core.set(custom, ANSWER, options=CallOptions(ttl=30))
    core.flush()
    assert core.get(custom).expires_at == pytest.approx(time.time() + 30, abs=1)  # type: ignore[union-attr]
    time.sleep(0.3)
    assert core.get(short) is None
    hit = core.get(forever)
    assert hit is not None and hit.expires_at is None


def test_jitter_spreads_expiries() -> None:
    core = core_with(None, ttl=100, ttl_jitter=0.5)
    expiries = set()
    for i in range(20):
        key = core.key_for({**REQUEST, "seed": i})
        core.set(key, ANSWER)
        hit = core.get(key)
        assert hit is not None and hit.expires_at is not None
        assert time.time() + 49 <= hit.expires_at <= time.time() + 100.5
        expiries.add(round(hit.expires_at))
    assert len(expiries) > 5


def test_bypass_read_bypass_write_and_max_age() -> None:
    core = core_with(None)
    key = core.key_for(REQUEST)
    core.set(key, ANSWER)
    assert core.get(key, options=CallOptions(bypass_read=True)) is None
    assert core.set(key, {"new": 1}, options=CallOptions(bypass_write=True)) is False
    assert core.get(key).value == ANSWER  # type: ignore[union-attr]
    time.sleep(0.15)
    assert core.get(key, options=CallOptions(max_age=0.1)) is None
    assert core.get(key, options=CallOptions(max_age=10)) is not None
    assert core.stats.bypasses == 1


def test_disabled_cache_never_stores() -> None:
    core = core_with(None, enabled=False)
    key = core.key_for(REQUEST)
    assert core.set(key, ANSWER) is False
    assert core.get(key) is None


# -- invalidation ------------------------------------------------------------------------------------
def test_namespaces_are_isolated_and_invalidated_in_o1(redis_url: str) -> None:
    core = core_with(redis_url)
    a = core.key_for(REQUEST, namespace="prompt-v1")
    b = core.key_for(REQUEST, namespace="prompt-v2")
    assert a != b
    core.set(a, ANSWER)
    core.set(b, ANSWER)
    core.flush()
    commands_before = core.tiers[-1].client.info("stats")["total_commands_processed"]  # type: ignore[attr-defined]
    assert core.invalidate_namespace("prompt-v1") == 1
    commands = core.tiers[-1].client.info("stats")["total_commands_processed"] - commands_before  # type: ignore[attr-defined]
    assert commands <= 3  # INCR (+ the INFO itself), not a scan of the namespace
    assert core.get(core.key_for(REQUEST, namespace="prompt-v1")) is None
    assert core.get(core.key_for(REQUEST, namespace="prompt-v2")) is not None


def test_other_processes_see_a_namespace_invalidation(redis_url: str) -> None:
    mine = core_with(redis_url, generation_refresh_s=0.1)
    theirs = core_with(redis_url, generation_refresh_s=0.1)
    key = mine.key_for(REQUEST)
    mine.set(key, ANSWER)
    mine.flush()
    assert theirs.get(theirs.key_for(REQUEST)) is not None  # now in their L1 too
    mine.invalidate_namespace()
    time.sleep(0.15)
    assert theirs.get(theirs.key_for(REQUEST)) is None


def test_delete_and_clear(redis_url: str, disk_path: Path) -> None:
    core = core_with(redis_url, disk_path)
    keys = [core.key_for({**REQUEST, "seed": i}) for i in range(5)]
    for k in keys:
        core.set(k, ANSWER)
    core.flush()
    core.delete(keys[0])
    assert core.get(keys[0]) is None and core.get(keys[1]) is not None
    core.clear()
    assert all(core.get(k) is None for k in keys)


def test_bad_namespace_is_uncacheable() -> None:
    with pytest.raises(UncacheableRequest, match="namespace"):
        core_with(None).key_for(REQUEST, namespace="bad namespace!")


# -- bad values and corrupt entries -----------------------------------------------------------------
def test_unserializable_and_oversized_values_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    core = core_with(None, max_value_bytes=1000)
    key = core.key_for(REQUEST)
    with caplog.at_level(logging.WARNING, "dspy_tiered_cache"):
        assert core.set(key, {"obj": object()}) is False
        assert core.set(key, "x" * 5000) is False
    assert core.get(key) is None
    assert core.stats.store_skipped == 2
    assert "MAX_VALUE_BYTES" in caplog.text and "plain JSON" in caplog.text


def test_corrupt_remote_entry_is_a_counted_miss_and_is_removed(redis_url: str) -> None:
    core = core_with(redis_url, memory=False)
    key = core.key_for(REQUEST)
    raw = redis.Redis.from_url(redis_url)
    raw.set(key, b"\xd7\x01\x00garbage that is not a frame")
    assert core.get(key) is None
    assert core.stats.tiers["l2"].corrupt == 1
    assert raw.get(key) is None


def test_entry_of_a_newer_format_is_a_miss_left_in_place(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A rolling upgrade: a newer release's frame is not ours to judge; deleting it would undo its writes."""
    core = core_with(redis_url, memory=False)
    key = core.key_for(REQUEST)
    raw = redis.Redis.from_url(redis_url)
    newer = b"\xd7\x63"  # format 99: its header may be of any length
    raw.set(key, newer)
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"):
        assert core.get(key) is None
        assert core.get(key) is None
    assert core.stats.tiers["l2"].corrupt == 0 and core.stats.tiers["l2"].misses == 2
    assert raw.get(key) == newer
    assert caplog.text.count("frame format 99 is newer than this release reads") == 1  # once, not per read


def test_entry_from_another_secret_is_a_miss(redis_url: str) -> None:
    a = core_with(redis_url, key_secret="secret-a", memory=False)
    key = a.key_for(REQUEST)
    a.set(key, ANSWER)
    a.flush()
    b = core_with(redis_url, key_secret="secret-b", memory=False)
    assert b.key_for(REQUEST) != key  # keyed hashing: different secrets, different keys
    assert b.get(key) is None and b.stats.tiers["l2"].corrupt == 1


# -- failing open ------------------------------------------------------------------------------------
def test_killed_redis_is_a_miss_within_the_timeout(private_redis: RedisServer) -> None:
    core = core_with(private_redis.url, redis_timeout_ms=100, breaker_reset_s=60)
    key = core.key_for(REQUEST)
    core.set(key, ANSWER)
    core.flush()
    core.memory.clear()  # type: ignore[union-attr]
    private_redis.kill()
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        assert core.get(key) is None
        timings.append(time.perf_counter() - started)
    assert max(timings) < 1.0  # one refused connect at most, never a retry loop (redis-py's default takes seconds)
    assert sorted(timings)[-5] < 0.001  # the breaker is open: no more network waits
    assert core.stats.tiers["l2"].errors >= 1
    assert core.set(key, ANSWER) and core.get(key).level == "l1"  # type: ignore[union-attr]


def test_paused_redis_costs_at_most_the_operation_timeout(private_redis: RedisServer) -> None:
    core = core_with(private_redis.url, redis_timeout_ms=100, breaker_failures=2, breaker_reset_s=60)
    keys = [core.key_for({**REQUEST, "seed": i}) for i in range(10)]
    private_redis.pause()
    try:
        timings = []
        for key in keys:
            started = time.perf_counter()
            assert core.get(key) is None
            timings.append(time.perf_counter() - started)
        assert max(timings) < 1.0  # one 100 ms timeout, not a retry loop
        assert sum(t >= 0.09 for t in timings) <= 2  # two timeouts open the breaker, the rest are free
    finally:
        private_redis.resume()


def test_breaker_recovers_after_redis_restarts(private_redis: RedisServer) -> None:
    core = core_with(private_redis.url, memory=False, breaker_reset_s=0.2)
    key = core.key_for(REQUEST)
    private_redis.kill()
    for _ in range(5):
        core.get(key)
    assert core.breakers["l2"].state == "open"
    private_redis.restart()
    deadline = time.monotonic() + 5.0  # the breaker's background probe closes it; no call needs to be the probe
    while core.breakers["l2"].state != "closed" and time.monotonic() < deadline:
        time.sleep(0.02)
    core.set(key, ANSWER)
    assert core.flush()
    assert core.get(key) is not None
    assert core.breakers["l2"].state == "closed"


def test_async_lookups_fail_open(private_redis: RedisServer) -> None:
    async def main() -> None:
        core = core_with(private_redis.url, redis_timeout_ms=100)
        key = core.key_for(REQUEST)
        await core.aset(key, ANSWER)
        core.flush()
        core.memory.clear()  # type: ignore[union-attr]
        hit = await core.aget(key)
        assert hit is not None and hit.level == "l2"
        private_redis.kill()
        core.memory.clear()  # type: ignore[union-attr]
        started = time.perf_counter()
        assert await core.aget(key) is None
        assert time.perf_counter() - started < 1.0  # one 100 ms timeout at most, not a retry loop

    asyncio.run(main())


# -- single-flight -----------------------------------------------------------------------------------
def test_threads_share_one_computation() -> None:
    core = core_with(None)
    key = core.key_for(REQUEST)
    calls = 0
    gate = threading.Event()

    def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        gate.wait(2)
        return ANSWER

    results: list[tuple[Any, str]] = []
    threads = [threading.Thread(target=lambda: results.append(core.get_or_compute(key, compute))) for _ in range(16)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join()
    assert calls == 1
    assert all(value == ANSWER for value, _ in results)
    assert sorted(level for _, level in results).count("miss") == 1
    values = [v for v, _ in results]
    assert len({id(v) for v in values}) == 16  # every caller its own object


def test_asyncio_tasks_share_one_computation() -> None:
    async def main() -> None:
        core = core_with(None)
        key = core.key_for(REQUEST)
        calls = 0

        async def compute() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            await asyncio.sleep(0.05)
            return ANSWER

        results = await asyncio.gather(*(core.aget_or_compute(key, compute) for _ in range(50)))
        assert calls == 1 and all(v == ANSWER for v, _ in results)
        assert (await core.aget_or_compute(key, compute))[1] == "l1"

    asyncio.run(main())


def test_failed_leader_lets_followers_compute() -> None:
    core = core_with(None)
    key = core.key_for(REQUEST)
    calls = 0
    started = threading.Event()

    def compute() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            time.sleep(0.1)
            raise RuntimeError("upstream 500")
        return ANSWER

    errors: list[BaseException] = []
    results: list[Any] = []

    def leader() -> None:
        try:
            core.get_or_compute(key, compute)
        except RuntimeError as exc:
            errors.append(exc)

    t = threading.Thread(target=leader)
    t.start()
    started.wait(1)
    results.append(core.get_or_compute(key, compute))
    t.join()
    assert len(errors) == 1 and results[0] == (ANSWER, "miss")


def test_savings_are_counted() -> None:
    import litellm  # noqa: F401  (prices come from LiteLLM's cost map once it is loaded)

    core = core_with(None)
    core.stats.record_savings("gpt-4o-mini", {"prompt_tokens": 1000, "completion_tokens": 500})
    snap = core.stats.snapshot()
    assert snap["tokens_saved"] == 1500
    assert snap["dollars_saved"] > 0


def test_encrypted_values_in_redis_hold_no_plaintext(redis_url: str) -> None:
    core = core_with(redis_url, memory=False, encryption_keys=["k1-0123456789abcdef"])
    key = core.key_for(REQUEST)
    core.set(key, {"answer": "the launch code is 0000"})
    core.flush()
    raw = redis.Redis.from_url(redis_url).get(key)
    assert raw is not None and b"launch code" not in raw
    assert core.get(key).value == {"answer": "the launch code is 0000"}  # type: ignore[union-attr]
    stranger = core_with(redis_url, memory=False, encryption_keys=["k2-0123456789abcdef"])
    assert stranger.get(key) is None and stranger.stats.tiers["l2"].corrupt == 1


def test_write_refused_by_a_full_redis_does_not_block_reads() -> None:
    with RedisServer(extra_args=["--maxmemory", "2mb", "--maxmemory-policy", "noeviction"]) as server:
        core = core_with(server.url, memory=False, breaker_failures=1)
        first = core.key_for({**REQUEST, "seed": -1})
        core.set(first, ANSWER)
        core.flush()
        for i in range(200):  # fill the server until it refuses writes
            core.set(core.key_for({**REQUEST, "seed": i}), {"blob": os.urandom(25_000).hex()})
        core.flush(10)
        assert core.stats.tiers["l2"].errors > 0
        assert core.breakers["l2"].state == "closed"
        assert core.get(first) is not None  # reads still served


def test_delete_right_after_set_is_not_undone_by_the_queued_write(redis_url: str, disk_path: Path) -> None:
    core = core_with(redis_url, disk_path)
    keys = [core.key_for({**REQUEST, "seed": i}) for i in range(50)]
    for k in keys:
        core.set(k, ANSWER)
        core.delete(k)
    core.flush()
    assert all(t.get(k) is None for t in core.tiers for k in keys)


def test_every_remote_tier_gets_the_write(redis_url: str, disk_path: Path) -> None:
    core = core_with(redis_url, disk_path, disk_ttl=60)  # different caps: each tier its own Entry object
    key = core.key_for(REQUEST)
    core.set(key, ANSWER)
    core.flush()
    assert all(t.get(key) is not None for t in core.tiers)
