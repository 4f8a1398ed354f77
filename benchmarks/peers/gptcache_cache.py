"""GPTCache (exact match, map store): a hit-latency peer only (its similarity search is the semantic benchmark's)."""

from __future__ import annotations

import orjson

from peers.common import HitSetup, Status, missing


def hit_variants(h: HitSetup) -> Status:
    try:
        from gptcache import Cache as GPTCache
        from gptcache.adapter.api import get as gpt_get
        from gptcache.adapter.api import put as gpt_put
        from gptcache.manager import get_data_manager
        from gptcache.processor.pre import get_prompt

        k_mem = h.keys["mem"]
        gcache = GPTCache()
        gcache.init(
            pre_embedding_func=get_prompt,
            data_manager=get_data_manager(data_path=str(h.tmp / "gptcache.txt"), max_size=10_000),
        )
        gpt_put(k_mem, h.raw.decode(), cache_obj=gcache)
        h.sync_mem["gptcache"] = lambda: orjson.loads(gpt_get(k_mem, cache_obj=gcache))
        return {"gptcache": {"status": "ok"}}
    except Exception as exc:  # GPTCache drags in optional deps; any failure means "not here"
        return {"gptcache": missing("gptcache", exc)}
