"""cashews: ``mem://`` and ``redis://`` backends, and its ``@cache`` decorator (with and without ``lock=True``).

cashews returns the stored object itself (no decode, no copy) and pickles values into Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from peers.common import JSON, DownCall, HitSetup, Scale, Status, capped_await, missing


# -- hits ------------------------------------------------------------------------------------------------------
def hit_variants(h: HitSetup) -> Status:
    try:
        from cashews import Cache as Cashews

        k_mem = h.keys["mem"]
        cmem = Cashews()
        cmem.setup("mem://?size=10000")
        cred = Cashews()
        cred.setup(h.redis_url)
        h.loop.run_until_complete(cmem.set(k_mem, h.value))
        h.loop.run_until_complete(cred.set("cashews", h.value))
        h.async_mem["cashews_mem"] = lambda: cmem.get(k_mem)
        h.async_io["cashews_redis"] = lambda: cred.get("cashews")
        return {"cashews": {"status": "ok"}}
    except ImportError as exc:
        return {"cashews": missing("cashews", exc)}


# -- zipf ------------------------------------------------------------------------------------------------------
def zipf_run(cap: int) -> Callable[[list[str]], int]:
    """Replays a trace through ``mem://?size=cap`` (LRU); the number of hits. Raises ImportError when absent."""
    from cashews import Cache as Cashews

    cm = Cashews()
    cm.setup(f"mem://?size={cap}")

    async def run(replay: list[str]) -> int:
        hits = 0
        get, put = cm.get, cm.set
        for k in replay:
            if await get(k) is not None:
                hits += 1
            else:
                await put(k, 1)
        return hits

    return lambda trace: asyncio.run(run(trace))


# -- stampede --------------------------------------------------------------------------------------------------
STAMPEDE_KINDS = ("cashews", "cashews_lock")


def stampede_fetch(
    kind: str, redis_url: str, upstream: Callable[[], Awaitable[JSON]]
) -> tuple[Callable[[], Awaitable[JSON]], Callable[[], Awaitable[Any]]]:
    """``upstream`` decorated the way cashews' docs show, and a ping that connects the client before the burst.

    ``protected=True`` (the default) is cashews' in-process "thunder protection"; ``lock=True`` adds a Redis lock."""
    from cashews import Cache as Cashews

    cache = Cashews()
    cache.setup(redis_url)
    fetch = cache(ttl=60, key="stampede", lock=kind == "cashews_lock")(upstream)
    return fetch, cache.ping


# -- unreachable -----------------------------------------------------------------------------------------------
def down_client(scale: Scale, url: str, loop: asyncio.AbstractEventLoop) -> DownCall:
    from cashews import Cache as Cashews

    cc = Cashews()
    cc.setup(url)
    return lambda i: loop.run_until_complete(capped_await(cc.get(f"c-{url}-{i}"), scale.down_cap_s))


# -- throughput ------------------------------------------------------------------------------------------------
def throughput_get(keys: list[str], value: JSON, loop: asyncio.AbstractEventLoop) -> Callable[[str], Awaitable[Any]]:
    from cashews import Cache as Cashews

    cm = Cashews()
    cm.setup("mem://?size=10000")
    for k in keys:
        loop.run_until_complete(cm.set(k, value))
    get: Callable[[str], Awaitable[Any]] = cm.get
    return get


# -- memory ----------------------------------------------------------------------------------------------------
def memory_build(keys: list[str], raws: list[bytes]) -> Callable[[], Any]:
    """Builds a ``mem://`` cache holding every value (measured by the caller). Raises ImportError when absent."""
    from cashews import Cache as Cashews

    def build() -> Any:
        cm = Cashews()
        cm.setup(f"mem://?size={len(keys) + 10}")

        async def fill() -> None:
            for k, r in zip(keys, raws, strict=True):
                await cm.set(k, orjson.loads(r))

        asyncio.run(fill())
        return cm

    return build


def redis_filler(redis_url: str, keys: list[str], raws: list[bytes]) -> Callable[[], None]:
    from cashews import Cache as Cashews

    cr = Cashews()
    cr.setup(redis_url)

    async def fill() -> None:
        for k, r in zip(keys, raws, strict=True):
            await cr.set(k, orjson.loads(r))

    return lambda: asyncio.run(fill())
