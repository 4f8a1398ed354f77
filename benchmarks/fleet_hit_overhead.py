"""Where a LiteLLM-door hit's time goes: LiteLLM's own per-call work, or the cache?

    python benchmarks/fleet_hit_overhead.py [--calls 400]

One process, one private redis-server, one stand-in provider. After one miss has stored the answer, it times (in
alternating rounds, median per call) four things for the same request:

* ``core lookup``: our core's lookup of the stored key (memory tier hit), what the cache itself costs;
* ``ours via litellm.completion``: a whole ``litellm.completion`` served by ``litellm.cache = TieredCache(...)``;
* ``LiteLLM DualCache via litellm.completion``: the same call served by LiteLLM's ``DualCache`` (memory + Redis);
* ``litellm.completion, no cache, mock_response``: LiteLLM's own per-call work with no cache and no HTTP at all.

If the last one is most of the second, a LiteLLM-door hit is slow because of LiteLLM, not because of the cache;
the fleet benchmark's 8 processes on 2 cores multiply it (each hit waits for a core too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="dtc-bench-"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

MODEL = "openai/gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Explain, in a short paragraph, how a shared cache saves money."}]


def _median_ms(fns: dict[str, Any], calls: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    items = list(fns.items())
    for fn in fns.values():
        fn()
    for r in range(calls):
        for name, fn in items if r % 2 else items[::-1]:
            started = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    a = parser.parse_args()
    import litellm
    from litellm.caching.caching import Cache
    from litellm.caching.dual_cache import DualCache
    from litellm.caching.in_memory_cache import InMemoryCache
    from litellm.caching.redis_cache import RedisCache
    from litellm.types.caching import LiteLLMCacheType

    from dspy_tiered_cache import TieredCache
    from dspy_tiered_cache.integrations._litellm_hit_path import ensure_hit_path

    with RedisServer() as server, StandInProvider() as provider:
        kwargs = {"api_base": provider.base_url, "api_key": "sk-bench", "temperature": 0.0}
        ours = TieredCache(redis_url=server.url)
        dual = Cache(type=LiteLLMCacheType.REDIS, host="127.0.0.1", port=str(server.port),
                     _backend=DualCache(in_memory_cache=InMemoryCache(),
                                        redis_cache=RedisCache(host="127.0.0.1", port=server.port)))  # fmt: skip
        ensure_hit_path()

        def through(cache: Any) -> Any:
            def call() -> Any:
                litellm.cache = cache
                response = litellm.completion(model=MODEL, messages=MESSAGES, **kwargs)
                assert response._hidden_params.get("cache_hit"), "expected a hit"
                return response

            return call

        for cache in (ours, dual):  # one miss each stores the answer
            litellm.cache = cache
            litellm.completion(model=MODEL, messages=MESSAGES, **kwargs)
        ours.core.flush()
        memory = ours.core.memory
        assert memory is not None and memory.entries == 1, "expected the one stored answer in the memory tier"
        key = next(iter(memory._data))  # the door's own key for this request (the only entry)

        def no_cache() -> Any:
            litellm.cache = None
            return litellm.completion(model=MODEL, messages=MESSAGES, mock_response="A short paragraph.")

        fns = {
            "core lookup (memory tier)": lambda: ours.core.get(key),
            "ours via litellm.completion": through(ours),
            "LiteLLM DualCache via litellm.completion": through(dual),
            "litellm.completion, no cache, mock_response": no_cache,
        }
        medians = _median_ms(fns, a.calls)
        litellm.cache = None
        ours.core.close()
    load = os.getloadavg()[0]
    print(f"median ms per call over {a.calls} alternating calls (loaded 2-core box, load average {load:.1f}):")
    base = medians["ours via litellm.completion"]
    for name, ms in medians.items():
        print(f"  {name:45s} {ms:8.3f} ms  ({ms / base:.2f}x ours via litellm.completion)")


if __name__ == "__main__":
    main()
