"""aiocache: ``SimpleMemoryCache``, ``RedisCache``, and its ``@cached`` / ``@cached_stampede`` decorators.

aiocache returns the stored object itself (no copy); ``SimpleMemoryCache`` has no size bound (no Zipf run)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from peers.common import JSON, DownCall, HitSetup, Scale, Status, capped_await, host_port, missing


# -- hits ------------------------------------------------------------------------------------------------------
def hit_variants(h: HitSetup) -> Status:
    try:
        from aiocache import RedisCache as AioRedis
        from aiocache import SimpleMemoryCache

        k_mem = h.keys["mem"]
        amem = SimpleMemoryCache()
        ared = AioRedis(endpoint="127.0.0.1", port=h.redis_port)
        h.loop.run_until_complete(amem.set(k_mem, h.value))
        h.loop.run_until_complete(ared.set("aiocache", h.value))
        h.async_mem["aiocache_mem"] = lambda: amem.get(k_mem)
        h.async_io["aiocache_redis"] = lambda: ared.get("aiocache")
        return {"aiocache": {"status": "ok"}}
    except ImportError as exc:
        return {"aiocache": missing("aiocache", exc)}


# -- stampede --------------------------------------------------------------------------------------------------
STAMPEDE_KINDS = ("aiocache", "aiocache_stampede")


def stampede_fetch(
    kind: str, redis_url: str, upstream: Callable[[], Awaitable[JSON]]
) -> tuple[Callable[[], Awaitable[JSON]], Callable[[], Awaitable[Any]]]:
    """``upstream`` under ``@cached(RedisCache)`` or ``@cached_stampede(RedisCache, lease=5)``, and a probe that
    connects a client before the burst."""
    from aiocache import RedisCache as AioRedis
    from aiocache import cached, cached_stampede

    host, port = host_port(redis_url)
    options: JSON = {"ttl": 60, "key": "stampede", "cache": AioRedis, "endpoint": host, "port": port}
    decorator = cached_stampede(lease=5, **options) if kind == "aiocache_stampede" else cached(**options)
    probe = AioRedis(endpoint=host, port=port)
    return decorator(upstream), lambda: probe.exists("stampede")


# -- unreachable -----------------------------------------------------------------------------------------------
def down_client(scale: Scale, url: str, loop: asyncio.AbstractEventLoop) -> DownCall:
    from aiocache import RedisCache as AioRedis

    host, port = host_port(url)
    ac = AioRedis(endpoint=host, port=port)
    return lambda i: loop.run_until_complete(capped_await(ac.get(f"a-{url}-{i}"), scale.down_cap_s))


# -- throughput ------------------------------------------------------------------------------------------------
def throughput_get(keys: list[str], value: JSON, loop: asyncio.AbstractEventLoop) -> Callable[[str], Awaitable[Any]]:
    from aiocache import SimpleMemoryCache

    am = SimpleMemoryCache()
    for k in keys:
        loop.run_until_complete(am.set(k, value))
    get: Callable[[str], Awaitable[Any]] = am.get
    return get
