"""Memory tiers of several processes stay coherent: an invalidation anywhere reaches every memory tier."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import orjson

from dspy_tiered_cache import CacheCore

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "coherent?"}]}


def _instance(url: str, ready: Any, go: Any, results: Any, op: str) -> None:
    """Another app instance: warm its L1, then report how long until it stops serving the entry."""
    core = CacheCore(redis_url=url, disk=False, generation_refresh_s=30.0)  # pub/sub only, no polling help
    assert core._bus is not None and core._bus.wait_connected(5)
    key = core.key_for(REQUEST, namespace="coh")
    assert core.get(key) is not None and core.get(key).level == "l1"  # type: ignore[union-attr]
    ready.release()
    go.wait(10)
    started = time.monotonic()
    while time.monotonic() - started < 5:
        current = core.key_for(REQUEST, namespace="coh")
        hit = core.get(current)
        if hit is None or hit.level != "l1":
            results.put((op, time.monotonic() - started, core.stats.tiers["l1"].misses))
            return
        time.sleep(0.001)
    results.put((op, None, 0))


def _propagation(url: str, op: str) -> list[float | None]:
    with CacheCore(redis_url=url, disk=False, generation_refresh_s=30.0) as core:
        return _propagate(core, url, op)


def _propagate(core: CacheCore, url: str, op: str) -> list[float | None]:
    key = core.key_for(REQUEST, namespace="coh")
    core.set(key, {"answer": 1})
    core.flush()
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_instance, args=(url, ready, go, results, op)) for _ in range(2)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=60)
    go.set()
    if op == "del":
        core.delete(key)
    elif op == "ns":
        core.invalidate_namespace("coh")
    else:
        core.clear()
    delays = [results.get(timeout=30)[1] for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return delays


def test_three_processes_delete_key_propagates(redis_url: str) -> None:
    delays = _propagation(redis_url, "del")
    assert all(d is not None and d < 0.1 for d in delays), delays


def test_three_processes_namespace_invalidation_propagates(redis_url: str) -> None:
    delays = _propagation(redis_url, "ns")
    assert all(d is not None and d < 0.1 for d in delays), delays


def test_three_processes_clear_propagates(redis_url: str) -> None:
    delays = _propagation(redis_url, "clear")
    assert all(d is not None and d < 0.1 for d in delays), delays


def test_own_messages_are_ignored_and_malformed_ones_are_harmless(redis_url: str) -> None:
    core = CacheCore(redis_url=redis_url, disk=False)
    assert core._bus is not None and core._bus.wait_connected(5)
    key = core.key_for(REQUEST)
    core.set(key, {"a": 1})
    core.tiers[-1].client.publish("dtc:inv", b"not json")  # type: ignore[attr-defined]
    core.tiers[-1].client.publish("dtc:inv", b'{"op": "del", "key": 5}')  # type: ignore[attr-defined]
    time.sleep(0.1)
    assert core.get(key) is not None and core.get(key).level == "l1"  # type: ignore[union-attr]
    core.close()


def test_lost_messages_are_bounded_by_generation_refresh(redis_url: str) -> None:
    """With pub/sub off (messages lost), a namespace invalidation still lands within generation_refresh_s."""
    mine = CacheCore(redis_url=redis_url, disk=False, invalidation_pubsub=False)
    theirs = CacheCore(redis_url=redis_url, disk=False, invalidation_pubsub=False, generation_refresh_s=0.2)
    key = mine.key_for(REQUEST)
    mine.set(key, {"a": 1})
    mine.flush()
    assert theirs.get(theirs.key_for(REQUEST)) is not None
    mine.invalidate_namespace()
    time.sleep(0.25)
    assert theirs.get(theirs.key_for(REQUEST)) is None
    mine.close()
    theirs.close()


def _generation_reads(core: CacheCore) -> list[str]:
    """The namespaces whose generation ``core`` reads from Redis from now on (the real read, recorded)."""
    tier = core.tiers[-1]
    reads: list[str] = []
    real = tier.get_generation

    def counted(namespace: str) -> int:
        reads.append(namespace)
        return real(namespace)

    tier.get_generation = counted  # type: ignore[method-assign]
    return reads


def test_a_live_subscriber_replaces_the_per_second_generation_reads(redis_url: str) -> None:
    """While the invalidation channel is live, generations are not re-read every ``generation_refresh_s`` (every
    bump arrives as a message): a bump elsewhere still reaches this process at once."""
    mine = CacheCore(redis_url=redis_url, disk=False, generation_refresh_s=0.01)
    theirs = CacheCore(redis_url=redis_url, disk=False)
    assert mine._bus is not None and mine._bus.wait_connected(5)
    assert theirs._bus is not None and theirs._bus.wait_connected(5)
    reads = _generation_reads(mine)
    key = mine.key_for(REQUEST, namespace="live")
    mine.set(key, {"a": 1})
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        assert mine.get(mine.key_for(REQUEST, namespace="live")) is not None
        time.sleep(0.01)
    assert reads == ["live"]  # read once, after the subscriber connected; then trusted
    theirs.invalidate_namespace("live")
    deadline = time.monotonic() + 5
    while mine.key_for(REQUEST, namespace="live") == key and time.monotonic() < deadline:
        time.sleep(0.005)
    assert mine.get(mine.key_for(REQUEST, namespace="live")) is None
    assert reads == ["live"]  # the bump came as a message, not a read
    mine.close()
    theirs.close()


def test_without_a_live_subscriber_generations_are_read_every_refresh(redis_url: str) -> None:
    """The fallback: without a live subscription (here: its thread ended) generations are read from Redis on the
    ``generation_refresh_s`` period again."""
    mine = CacheCore(redis_url=redis_url, disk=False, generation_refresh_s=0.01)
    assert mine._bus is not None and mine._bus.wait_connected(5)
    mine.key_for(REQUEST, namespace="fallback")
    bus = mine._bus
    bus._stop.set()  # the subscriber thread ends on its next poll (and is not restarted: it is still known)
    assert bus._thread is not None
    bus._thread.join(5)
    assert bus.live_since() is None
    reads = _generation_reads(mine)
    for _ in range(3):
        time.sleep(0.02)
        mine.key_for(REQUEST, namespace="fallback")
    assert len(reads) == 3
    mine.close()


def _until(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_a_stored_answer_reaches_other_memory_tiers_without_a_read(redis_url: str) -> None:
    """One PUBLISH (in the SET's round trip) puts a fresh answer in every other instance's memory tier: their
    first lookup of it is an L1 hit, not a GET each."""
    writer = CacheCore(redis_url=redis_url, disk=False, key_prefix="share")
    reader = CacheCore(redis_url=redis_url, disk=False, key_prefix="share")
    for core in (writer, reader):
        assert core._bus is not None and core._bus.wait_connected(5)
    key = writer.key_for(REQUEST, namespace="shared")
    assert reader.key_for(REQUEST, namespace="shared") == key  # the reader uses the namespace (knows its generation)
    writer.set(key, {"answer": 42})
    assert _until(lambda: reader.stats.shared_taken == 1)
    hit = reader.get(key)
    assert hit is not None and hit.level == "l1" and hit.value == {"answer": 42}
    assert reader.stats.tiers["l2"].hits + reader.stats.tiers["l2"].misses == 0
    writer.close()
    reader.close()


def test_shared_answers_are_checked_like_a_redis_read(redis_url: str) -> None:
    """A message is trusted no more than a Redis read: a forged or corrupt frame, another prefix, a namespace at
    an older generation (sent before a bump) or one this process never used are all dropped."""
    writer = CacheCore(redis_url=redis_url, disk=False, key_prefix="check")
    reader = CacheCore(redis_url=redis_url, disk=False, key_prefix="check")
    for core in (writer, reader):
        assert core._bus is not None and core._bus.wait_connected(5)
    bus = writer._bus
    assert bus is not None
    client = writer.tiers[-1].client  # type: ignore[attr-defined]
    key = reader.key_for(REQUEST, namespace="n")
    frame = writer.codec.dumps(writer.codec.loads(writer.codec.dumps(_entry({"a": 1}))))
    forged = frame[:-1] + bytes([frame[-1] ^ 1])
    old = key.replace(":n:0:", ":n:7:") if ":n:0:" in key else key
    for bad_key, bad_frame in (
        (key, forged),
        (key, b"\x00" * 40),
        (key.replace("check:", "other:", 1), frame),
        (old, frame),
        (reader.key_for(REQUEST, namespace="n").replace(":n:", ":never:"), frame),
    ):
        client.publish(bus.answers_channel, bus.answer_message(bad_key, bad_frame))
    client.publish(bus.answers_channel, bus.answer_message(key, frame))  # the one good message, last
    assert _until(lambda: reader.stats.shared_taken == 1)
    assert reader.stats.shared_rejected == 2  # the two frames that failed the codec's checks
    assert reader.memory is not None and reader.memory.entries == 1
    hit = reader.get(key)
    assert hit is not None and hit.value == {"a": 1}
    writer.close()
    reader.close()


def _entry(value: Any) -> Any:
    from dspy_tiered_cache.codec import Entry, encode_value

    return Entry(encode_value(value, 1 << 20), time.time(), time.time() + 60)


def test_an_older_release_on_the_invalidation_channel_never_sees_shared_answers(redis_url: str) -> None:
    """Answers go on a channel of their own: a process of an older release (subscribed to ``<prefix>:inv`` only)
    gets the invalidations it understands and nothing it would log as malformed."""
    writer = CacheCore(redis_url=redis_url, disk=False, key_prefix="older")
    assert writer._bus is not None and writer._bus.wait_connected(5)
    old = writer.tiers[-1].client.pubsub(ignore_subscribe_messages=True)  # type: ignore[attr-defined]
    old.subscribe("older:inv")
    old.get_message(timeout=1.0)  # the subscription's confirmation
    key = writer.key_for(REQUEST)
    writer.set(key, {"answer": 1})
    writer.flush()
    writer.delete(key)  # the signal: the next message an older release gets should be this invalidation
    message = None
    deadline = time.monotonic() + 5
    while message is None and time.monotonic() < deadline:
        message = old.get_message(timeout=0.5)
    assert message is not None and message["data"].startswith(b"{")
    assert orjson.loads(message["data"])["op"] == "del"
    old.close()
    writer.close()
