"""The LiteLLM door: ``litellm.cache = TieredCache()`` and every completion/embedding call is cached.

Shows: a cold call and a hit (sync and async share the entry), LiteLLM's per-call controls (``no-cache`` to
refresh, ``no-store``), embeddings, and the stats report.

    python examples/litellm_door.py                       # local stand-in provider, no key needed
    python examples/litellm_door.py --model openai/gpt-4o-mini   # real model (OPENAI_API_KEY)
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path

# Before LiteLLM's import (DSPy imports it): offline, it would otherwise try to download its price map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
from _common import endpoint, parse_args, upstream

from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.report import report


def main() -> None:
    args = parse_args(__doc__ or "")
    with endpoint(args) as ep, tempfile.TemporaryDirectory() as tmp:
        # Memory + the embedded disk tier. Leave disk_path out to use ~/.cache/dspy_tiered_cache/, or pass
        # redis_url="redis://host:6379/0" (or set DSPY_TIERED_CACHE_REDIS_URL) to share the cache across machines.
        cache = TieredCache(disk_path=Path(tmp) / "cache.sqlite3", namespace="litellm-example")
        litellm.cache = cache
        print(f"model: {ep.describe()}")
        messages = [{"role": "user", "content": "Give me three reasons to cache LLM responses."}]

        started = time.perf_counter()
        first = litellm.completion(messages=messages, **ep.litellm_kwargs())
        cold = time.perf_counter() - started
        started = time.perf_counter()
        second = litellm.completion(messages=messages, **ep.litellm_kwargs())
        warm = time.perf_counter() - started
        print(f"1st call: {cold * 1000:7.1f} ms  cache_hit={bool(first._hidden_params.get('cache_hit'))}")
        print(f"2nd call: {warm * 1000:7.1f} ms  cache_hit={bool(second._hidden_params.get('cache_hit'))}")
        print(f"same answer: {first.choices[0].message.content == second.choices[0].message.content}")

        async def async_call() -> bool:
            response = await litellm.acompletion(messages=messages, **ep.litellm_kwargs())
            return bool(response._hidden_params.get("cache_hit"))

        print(f"acompletion of the same request: cache_hit={asyncio.run(async_call())} (sync and async share it)")

        refreshed = litellm.completion(messages=messages, cache={"no-cache": True}, **ep.litellm_kwargs())
        print(f'cache={{"no-cache": True}}: cache_hit={bool(refreshed._hidden_params.get("cache_hit"))} (refreshed)')

        texts = ["tiered caches", "single-flight", "namespaces"]
        embed_kwargs = dict(ep.litellm_kwargs(), model=ep.model.replace("gpt-4o-mini", "text-embedding-3-small"))
        litellm.embedding(input=texts, **embed_kwargs)
        again = litellm.embedding(input=texts, **embed_kwargs)
        print(f"embedding of the same inputs again: cache_hit={bool(again._hidden_params.get('cache_hit'))}")

        cache.flush()  # land the background disk writes before the temp dir goes away
        if ep.upstream_calls is not None:
            print(f"stand-in provider: {upstream(ep)} for 6 calls")
        print()
        print(report(cache))


if __name__ == "__main__":
    main()
