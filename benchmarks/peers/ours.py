"""dspy_tiered_cache itself, in every section: the core per tier, the memory tier, the LiteLLM door."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.tiers.memory import MemoryTier
from peers.common import (
    JSON,
    STAMPEDE_REQUEST,
    DownCall,
    HitSetup,
    answer_text,
    ask_upstream,
    litellm_completion,
    memory_values,
    request,
    rss_bytes,
)


# -- hits ------------------------------------------------------------------------------------------------------
def hit_variants(h: HitSetup) -> tuple[CacheCore, CacheCore]:
    """The core per tier (memory; memory over Redis; Redis; disk), each holding the value; returns the Redis and
    disk cores, whose counters prove their variants were served by their tier."""
    mem = h.stack.enter_context(CacheCore(disk=False, memory=True))
    l1l2 = h.stack.enter_context(CacheCore(disk=False, redis_url=h.redis_url, namespace="l1l2"))
    l2 = h.stack.enter_context(CacheCore(disk=False, memory=False, redis_url=h.redis_url))
    dsk = h.stack.enter_context(CacheCore(disk=True, memory=False, disk_path=h.tmp / "ours.sqlite3"))
    for name, core in (("mem", mem), ("l1l2", l1l2), ("l2", l2), ("disk", dsk)):
        h.keys[name] = core.key_for(request("hits"))
        core.set(h.keys[name], h.value)
        core.flush()
    k_mem, k_l1l2, k_l2, k_disk = h.keys["mem"], h.keys["l1l2"], h.keys["l2"], h.keys["disk"]
    h.sync_mem["ours_l1"] = lambda: mem.get(k_mem)
    h.sync_mem["ours_l1_l2"] = lambda: l1l2.get(k_l1l2)
    h.sync_io["ours_l2"] = lambda: l2.get(k_l2)
    h.sync_io["ours_disk"] = lambda: dsk.get(k_disk)
    h.async_mem["ours_l1_async"] = lambda: mem.aget(k_mem)
    h.async_io["ours_l2_async"] = lambda: l2.aget(k_l2)
    return l2, dsk


# -- zipf ------------------------------------------------------------------------------------------------------
def memory_tier(cap: int, max_bytes: int = 10**15) -> MemoryTier:
    """The memory tier alone (W-TinyLFU), bounded by entries and bytes."""
    return MemoryTier(max_entries=cap, max_bytes=max_bytes)


# -- stampede --------------------------------------------------------------------------------------------------
STAMPEDE_KINDS = ("ours_core", "ours_no_single_flight", "ours_litellm_door")


def stampede_call(kind: str, redis_url: str, base_url: str) -> Callable[[], str]:
    """One caller of the burst: the core's get_or_compute (single-flight on or off), or litellm.completion
    through our LiteLLM door."""
    if kind != "ours_litellm_door":
        off = kind == "ours_no_single_flight"  # the same cache with single-flight switched off: get, miss, set
        core = CacheCore(redis_url=redis_url, disk=False, single_flight=not off, distributed_single_flight=not off)
        key = core.key_for(STAMPEDE_REQUEST)
        return lambda: answer_text(core.get_or_compute(key, lambda: ask_upstream(base_url))[0])
    import litellm

    from dspy_tiered_cache.integrations.litellm import TieredCache

    litellm.cache = TieredCache(redis_url=redis_url, disk=False)
    return litellm_completion(base_url)




# -- unreachable -----------------------------------------------------------------------------------------------
def down_client(url: str) -> tuple[DownCall, Callable[[], None]]:
    """A lookup the way a door makes it (key, which reads the generation, then get); and how to close it."""
    core = CacheCore(redis_url=url, disk=False, breaker_reset_s=60.0)

    def ours(i: int) -> tuple[float, bool]:
        started = time.perf_counter()
        core.get(core.key_for(request(f"ours-{url}-{i}")))
        return time.perf_counter() - started, False

    return ours, core.close


def construct_ms(url: str) -> float:
    """Building (and closing) a Redis-backed core: it connects lazily, so a hung Redis costs nothing here."""
    started = time.perf_counter()
    CacheCore(redis_url=url, disk=False).close()
    return (time.perf_counter() - started) * 1000


# -- throughput ------------------------------------------------------------------------------------------------
def throughput_get(n: int, value: JSON) -> tuple[list[str], Callable[[str], Awaitable[Any]], Callable[[], None]]:
    """``n`` keys held by a memory-only core, its ``aget``, and how to close it."""
    core = CacheCore(disk=False)
    keys = [core.key_for(request(i)) for i in range(n)]
    for k in keys:
        core.set(k, value)
    return keys, core.aget, core.close


# -- memory ----------------------------------------------------------------------------------------------------
def fill_l1(core: CacheCore, keys: list[str], raws: list[bytes]) -> None:
    for k, r in zip(keys, raws, strict=True):
        core.set(k, orjson.loads(r))


def fill_redis(redis_url: str, keys: list[str], raws: list[bytes], threshold: int) -> None:
    """Our Redis tier alone holding every value, compressed from ``threshold`` bytes on."""
    with CacheCore(
        redis_url=redis_url,
        disk=False,
        memory=False,
        compression_threshold=threshold,
        telemetry=False,
        write_queue_size=max(len(keys), 1000),
    ) as c:
        for k, r in zip(keys, raws, strict=True):
            c.set(k, orjson.loads(r))
        c.flush(60.0)


def rss_child(kind: str, n: int, queue: Any) -> None:
    """Resident-set growth per entry in a fresh process, where no freed memory can be reused to hide growth:
    ours (``ours_l1``) or a plain dict of decoded objects (``dict_of_objects``, the floor)."""
    keys, raws = memory_values(n)
    gc.collect()
    core = CacheCore(disk=False, memory_max_entries=n + 10) if kind == "ours_l1" else None
    kept: dict[str, Any] = {}
    before = rss_bytes()
    for k, r in zip(keys, raws, strict=True):
        if core is not None:
            core.set(k, orjson.loads(r))
        else:
            kept[k] = orjson.loads(r)
    gc.collect()
    queue.put((rss_bytes() - before) / n)
