"""LiteLLM door benchmark: what a cache hit costs through ``litellm.completion``, ours against LiteLLM's own.

Run: ``python benchmarks/litellm_door.py [--hits 400] [--json out.json]``

Everything is local: the stand-in provider answers over real HTTP and a private redis-server runs on a free
port. Each figure is the median wall time of one whole ``litellm.completion`` / ``acompletion`` call, so the
numbers include LiteLLM's own per-call work (the part no cache can remove) as well as the cache's:

* L1 hit: ``TieredCache`` (memory tier) vs ``Cache(type=LiteLLMCacheType.LOCAL)``               goal ratio <= 1.0
* L2 hit: ``TieredCache(memory=False)`` reading Redis vs ``Cache(type="redis")`` goal ratio <= 0.8
  (sync calls: LiteLLM's async path puts its own in-memory tier in front of Redis)
* both vs the uncached call to the stand-in
* Redis unreachable (connection refused, and for ours also a frozen server): the latency added per call,
  ours vs LiteLLM's. LiteLLM's redis client retries with backoff, so only a few of its calls are timed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no cost-map download at import
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="dtc-bench-"))

import litellm
from litellm.caching.caching import Cache
from litellm.types.caching import LiteLLMCacheType

from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer, free_port

MODEL = "openai/gpt-4o-mini"


def _kwargs(provider: StandInProvider, prompt: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": prompt},
        ],
        "api_base": provider.base_url,
        "api_key": "sk-bench",
        "temperature": 0.0,
    }


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def _time_sync(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


async def _time_async(fn: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - started)
    return out


def _compare_hits(pairs: list[tuple[str, Any]], provider: StandInProvider, n: int) -> dict[str, dict[str, float]]:
    """Median hit latency of several caches, measured in interleaved rounds so machine drift hits all alike.

    For each cache: the whole sync ``litellm.completion`` hit, the whole async ``acompletion`` hit, and the
    lookup alone (``litellm.cache.get_cache(**request)``: key building + store read + decode), which is the
    part of a hit the cache itself is responsible for.
    """
    kwargs = {label: _kwargs(provider, f"hit benchmark {label}") for label, _ in pairs}
    for label, cache in pairs:  # prime and warm (the first hit imports LiteLLM's hit path)
        litellm.cache = cache
        litellm.completion(**kwargs[label])
        flush = getattr(cache, "flush", None)
        if callable(flush):
            flush()
        litellm.completion(**kwargs[label])
    before = provider.request_count
    samples: dict[str, dict[str, list[float]]] = {label: {"sync": [], "async": [], "lookup": []} for label, _ in pairs}
    rounds, per_round = 10, max(1, n // 10)

    async def async_round(label: str) -> list[float]:
        return await _time_async(lambda: litellm.acompletion(**kwargs[label]), per_round)

    loop = asyncio.new_event_loop()
    try:
        for _ in range(rounds):
            for label, cache in pairs:
                litellm.cache = cache
                call = functools.partial(litellm.completion, **kwargs[label])
                lookup = functools.partial(cache.get_cache, **kwargs[label])
                samples[label]["sync"] += _time_sync(call, per_round)
                samples[label]["async"] += loop.run_until_complete(async_round(label))
                samples[label]["lookup"] += _time_sync(lookup, per_round)
    finally:  # let LiteLLM's logging worker finish, then cancel what it leaves waiting on this loop
        loop.run_until_complete(asyncio.sleep(0.2))
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
    if provider.request_count != before:
        raise SystemExit(f"{provider.request_count - before} hits went upstream; the benchmark is invalid")
    return {
        label: {f"{mode}_ms": _median_ms(values) for mode, values in modes.items()} for label, modes in samples.items()
    }


def _uncached_latency(provider: StandInProvider, n: int) -> float:
    litellm.cache = None
    counter = iter(range(10**9))
    return _median_ms(_time_sync(lambda: litellm.completion(**_kwargs(provider, f"uncached {next(counter)}")), n))


def _unreachable(cache: Any, provider: StandInProvider, n: int, label: str) -> dict[str, Any]:
    """Per-call latency of uncached calls while the cache's Redis does not answer."""
    litellm.cache = cache
    counter = iter(range(10**9))
    samples = _time_sync(lambda: litellm.completion(**_kwargs(provider, f"{label} down {next(counter)}")), n)
    return {"first_ms": samples[0] * 1000.0, "max_ms": max(samples) * 1000.0, "median_ms": _median_ms(samples),
            "calls": n}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=400, help="timed hits per cache and mode")
    parser.add_argument("--uncached", type=int, default=40, help="timed uncached calls")
    parser.add_argument("--litellm-down-calls", type=int, default=2, help="LiteLLM calls timed with Redis down")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)

    results: dict[str, Any] = {"litellm": importlib.metadata.version("litellm")}
    with StandInProvider(latency=0.0) as provider, RedisServer() as redis_server:
        results["uncached_ms"] = _uncached_latency(provider, args.uncached)

        ours_l1 = TieredCache(disk=False)
        litellm_local = Cache(type=LiteLLMCacheType.LOCAL)
        results.update(_compare_hits([("ours_l1", ours_l1), ("litellm_local", litellm_local)], provider, args.hits))
        ours_l1.close()
        ours_l2 = TieredCache(redis_url=redis_server.url, disk=False, memory=False)
        litellm_redis = Cache(type=LiteLLMCacheType.REDIS, host="127.0.0.1", port=str(redis_server.port))
        results.update(_compare_hits([("ours_l2", ours_l2), ("litellm_redis", litellm_redis)], provider, args.hits))
        ours_l2.close()

        # Redis unreachable: a port nobody listens on (connection refused), and for ours a frozen server.
        dead_port = free_port()
        baseline = results["uncached_ms"]
        ours_dead = TieredCache(redis_url=f"redis://127.0.0.1:{dead_port}/0", disk=False)
        results["ours_redis_refused"] = _unreachable(ours_dead, provider, 30, "ours-refused")
        ours_dead.close()
        with RedisServer() as frozen:
            ours_frozen = TieredCache(redis_url=frozen.url, disk=False)
            frozen.pause()
            try:
                results["ours_redis_frozen"] = _unreachable(ours_frozen, provider, 30, "ours-frozen")
            finally:
                frozen.resume()
                ours_frozen.close()
        litellm_dead = Cache(type=LiteLLMCacheType.REDIS, host="127.0.0.1", port=str(dead_port))
        results["litellm_redis_refused"] = _unreachable(litellm_dead, provider, args.litellm_down_calls, "ll-refused")
        litellm.cache = None
        results["timeout_ms"] = ours_frozen.core.settings.redis_timeout_ms

    r = results
    ratios = {
        f"{ours}_vs_{theirs}_{mode}": r[ours][f"{mode}_ms"] / r[theirs][f"{mode}_ms"]
        for ours, theirs in (("ours_l1", "litellm_local"), ("ours_l2", "litellm_redis"))
        for mode in ("sync", "async", "lookup")
    }
    r["ratios"] = ratios
    print(f"LiteLLM {r['litellm']}; medians over {args.hits} hits each, interleaved rounds")
    print(f"  uncached call to the stand-in         {baseline:8.3f} ms")
    print(f"  {'':<16}      sync call   async call   lookup only   (sync: x faster than uncached)")
    for name in ("ours_l1", "litellm_local", "ours_l2", "litellm_redis"):
        d = r[name]
        print(f"  {name:<16} {d['sync_ms']:9.3f} ms {d['async_ms']:9.3f} ms {d['lookup_ms']:10.4f} ms"
              f"   ({baseline / d['sync_ms']:5.1f}x)")  # fmt: skip
    for ours, theirs, goal in (("ours_l1", "litellm_local", 1.0), ("ours_l2", "litellm_redis", 0.8)):
        parts = "  ".join(f"{mode} {ratios[f'{ours}_vs_{theirs}_{mode}']:5.2f}" for mode in ("sync", "async", "lookup"))
        print(f"  ratio {ours} / {theirs:<14} {parts}   (goal <= {goal})")
    print(f"Redis unreachable (uncached calls; baseline {baseline:.2f} ms, our op timeout {r['timeout_ms']} ms):")
    for name in ("ours_redis_refused", "ours_redis_frozen", "litellm_redis_refused"):
        d = r[name]
        print(f"  {name:<22} first {d['first_ms']:9.1f} ms  max {d['max_ms']:9.1f} ms  median {d['median_ms']:9.1f} ms"
              f"  added/median {d['median_ms'] - baseline:9.1f} ms  ({d['calls']} calls)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(r, fh, indent=2)
    return r


if __name__ == "__main__":
    main(sys.argv[1:])
