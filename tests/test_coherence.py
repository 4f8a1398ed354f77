"""Memory tiers of several processes stay coherent: an invalidation anywhere reaches every memory tier."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

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
