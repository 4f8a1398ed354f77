"""LiteLLM's own caches: ``Cache(type="local"|"redis"|"disk")`` and a ``DualCache`` backend, in every section.

Backends are fed what ``Cache.add_cache`` feeds them and read the way ``Cache.get_cache`` reads them, so a hit
costs what it costs inside ``litellm.completion``. Importing LiteLLM takes seconds: small scales leave it out
(:func:`~peers.common.need_litellm`)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import orjson

from peers.common import (
    JSON,
    DownCall,
    HitSetup,
    Scale,
    Status,
    capped_sync,
    host_port,
    litellm_completion,
    litellm_stored,
    missing,
    need_litellm,
    request,
    traced,
)

#: What the report says when the installed LiteLLM has no disk cache.
NO_DISK_CACHE: JSON = {"status": "not in this LiteLLM", "error": "LiteLLM 1.110 removed its disk cache backend"}


def has_disk_cache() -> bool:
    """Whether the installed LiteLLM still has ``Cache(type="disk")`` (1.110 removed it)."""
    return importlib.util.find_spec("litellm.caching.disk_cache") is not None


# -- hits ------------------------------------------------------------------------------------------------------
def hit_variants(h: HitSetup) -> Status:
    try:
        need_litellm(h.scale)
        from litellm.caching.caching import Cache as LiteLLMCache
        from litellm.caching.dual_cache import DualCache
        from litellm.caching.in_memory_cache import InMemoryCache
        from litellm.caching.redis_cache import RedisCache
        from litellm.types.caching import LiteLLMCacheType

        k_mem, value = h.keys["mem"], h.value
        logic = LiteLLMCache(type=LiteLLMCacheType.LOCAL).get_cache_logic
        local: Any = InMemoryCache()
        local.set_cache(k_mem, litellm_stored(value))
        h.sync_mem["litellm_local"] = lambda: logic(local.get_cache(k_mem), None)
        rc: Any = RedisCache(host="127.0.0.1", port=str(h.redis_port))
        rc.set_cache("litellm", litellm_stored(value))
        h.sync_io["litellm_redis"] = lambda: logic(rc.get_cache("litellm"), None)
        dual = DualCache(in_memory_cache=InMemoryCache(), redis_cache=rc)
        dual.set_cache("litellm-dual", litellm_stored(value))
        h.sync_mem["litellm_dual"] = lambda: logic(dual.get_cache("litellm-dual"), None)
        if not has_disk_cache():
            return {"litellm": {"status": "ok"}, "litellm_disk": NO_DISK_CACHE}
        from litellm.caching.disk_cache import DiskCache

        dc: Any = DiskCache(disk_cache_dir=str(h.tmp / "litellm-disk"))
        dc.set_cache("litellm", litellm_stored(value))
        h.stack.callback(dc.disk_cache.close)
        h.sync_io["litellm_disk"] = lambda: logic(dc.get_cache("litellm"), None)
        return {"litellm": {"status": "ok"}}
    except ImportError as exc:
        return {"litellm": missing("litellm", exc)}


# -- whole litellm.completion hits (the ``litellm`` section) ---------------------------------------------------
def disk_cache(directory: str) -> Any:
    """``litellm.Cache(type="disk")``."""
    from litellm.caching.caching import Cache as LiteLLMCache
    from litellm.types.caching import LiteLLMCacheType

    return LiteLLMCache(type=LiteLLMCacheType.DISK, disk_cache_dir=directory)  # type: ignore[attr-defined]


def dual_cache(redis_port: int) -> Any:
    """``litellm.Cache`` over a ``DualCache`` (in-memory in front of Redis) backend."""
    from litellm.caching.caching import Cache as LiteLLMCache
    from litellm.caching.dual_cache import DualCache
    from litellm.caching.in_memory_cache import InMemoryCache
    from litellm.caching.redis_cache import RedisCache

    dual = DualCache(in_memory_cache=InMemoryCache(), redis_cache=RedisCache(host="127.0.0.1", port=str(redis_port)))
    return LiteLLMCache(_backend=dual)


# -- zipf ------------------------------------------------------------------------------------------------------
def zipf_policy(scale: Scale, cap: int) -> tuple[Callable[[str], Any], Callable[[str], None]]:
    """``InMemoryCache(max_size_in_memory=cap)``: it evicts the earliest expiry. Raises ImportError when absent."""
    need_litellm(scale)
    from litellm.caching.in_memory_cache import InMemoryCache

    llc: Any = InMemoryCache(max_size_in_memory=cap)
    return llc.get_cache, lambda k: llc.set_cache(k, 1)


# -- stampede --------------------------------------------------------------------------------------------------
STAMPEDE_KINDS = ("litellm_redis",)


def stampede_call(kind: str, redis_url: str, base_url: str) -> Callable[[], str]:
    """``litellm.completion`` with ``litellm.cache = Cache(type="redis")``: LiteLLM looks up, misses, calls, sets."""
    import litellm
    from litellm.caching.caching import Cache as LiteLLMCache
    from litellm.types.caching import LiteLLMCacheType

    host, port = host_port(redis_url)
    litellm.cache = LiteLLMCache(type=LiteLLMCacheType.REDIS, host=host, port=str(port))
    return litellm_completion(base_url)


# -- unreachable -----------------------------------------------------------------------------------------------
def down_client(scale: Scale, url: str) -> DownCall:
    from litellm.caching.caching import Cache as LiteLLMCache
    from litellm.types.caching import LiteLLMCacheType

    host, port = host_port(url)
    lc = LiteLLMCache(type=LiteLLMCacheType.REDIS, host=host, port=str(port))
    return lambda i: capped_sync(lambda: lc.get_cache(**request(f"ll-{url}-{i}")), scale.down_cap_s)


def construct_while_frozen(scale: Scale, url: str) -> tuple[float, bool]:
    """Seconds ``Cache(type="redis")`` takes to build against a hung Redis (its constructor talks to Redis)."""
    host, port = host_port(url)

    def build() -> None:
        from litellm.caching.caching import Cache as LiteLLMCache
        from litellm.types.caching import LiteLLMCacheType

        LiteLLMCache(type=LiteLLMCacheType.REDIS, host=host, port=str(port))

    return capped_sync(build, scale.down_cap_s)


# -- memory ----------------------------------------------------------------------------------------------------
def memory_per_entry(scale: Scale, keys: list[str], raws: list[bytes]) -> float:
    """Bytes per entry of ``InMemoryCache`` holding what ``Cache.add_cache`` stores. Raises ImportError when absent."""
    need_litellm(scale)
    from litellm.caching.in_memory_cache import InMemoryCache

    def fill() -> Any:
        lc: Any = InMemoryCache(max_size_in_memory=len(keys) + 10, max_size_per_item=10_000)
        for k, r in zip(keys, raws, strict=True):
            lc.set_cache(k, litellm_stored(orjson.loads(r)))
        return lc

    return traced(fill)[0] / len(keys)


def redis_filler(scale: Scale, redis_port: int, keys: list[str], raws: list[bytes]) -> Callable[[], None]:
    """Fills Redis through ``RedisCache`` (what ``Cache.add_cache`` stores). Raises ImportError when absent."""
    need_litellm(scale)
    from litellm.caching.redis_cache import RedisCache

    rcache: Any = RedisCache(host="127.0.0.1", port=str(redis_port))

    def fill() -> None:
        for k, r in zip(keys, raws, strict=True):
            rcache.set_cache(k, litellm_stored(orjson.loads(r)))

    return fill
