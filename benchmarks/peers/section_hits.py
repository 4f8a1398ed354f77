"""Section ``hits``: hit latency per tier, 0.5 KB and 8 KB responses, ours against every peer and the floors."""

from __future__ import annotations

import asyncio
import tempfile
from contextlib import ExitStack
from pathlib import Path

import orjson

from dspy_tiered_cache.testing.redis_server import RedisServer
from peers import aiocache_cache, cashews_cache, floors, gptcache_cache, litellm_caches, ours
from peers.common import JSON, HitSetup, Scale, check_value, paired_async_us, paired_us, response, row, warm

#: (comparison, our variant, peer variant, goal on the ratio, note) for the hit-latency table.
HIT_ROWS: list[tuple[str, str, str, float | None, str]] = [
    ("L1 get vs dict lookup + orjson decode (floor)", "ours_l1", "floor_dict", None,
     "ours = key lookup + W-TinyLFU bookkeeping + decode to a fresh object"),
    ("L1 get vs LiteLLM InMemoryCache (Cache type=local)", "ours_l1", "litellm_local", 1.0,
     "peer: backend get + Cache.get_cache_logic (json.loads of the stored text)"),
    ("L1 get (Redis configured) vs LiteLLM DualCache memory hit", "ours_l1_l2", "litellm_dual", 1.0, ""),
    ("L1 get vs GPTCache (exact match, map store) + decode", "ours_l1", "gptcache", 1.0, ""),
    ("L1 aget vs cashews mem://", "ours_l1_async", "cashews_mem", 1.0,
     "cashews returns the stored object itself (no decode, no copy): a caller's mutation changes the cache"),
    ("L1 aget vs aiocache SimpleMemoryCache", "ours_l1_async", "aiocache_mem", 1.0,
     "aiocache returns the stored object itself (no copy)"),
    ("L2 get vs raw redis-py GET + orjson decode (floor)", "ours_l2", "floor_redis", 1.3,
     "ours adds the frame check (sha256), zstd for values >= 2 KB, a breaker and stats"),
    ("L2 get vs LiteLLM RedisCache", "ours_l2", "litellm_redis", 1.0,
     "peer stores str(dict): its get falls back to ast.literal_eval"),
    ("L2 aget vs raw redis.asyncio GET + decode (floor)", "ours_l2_async", "floor_redis_async", 1.3, ""),
    ("L2 aget vs cashews redis://", "ours_l2_async", "cashews_redis", 1.0, ""),
    ("L2 aget vs aiocache RedisCache", "ours_l2_async", "aiocache_redis", 1.0, ""),
    ("disk get vs raw sqlite3 SELECT + decode (floor)", "ours_disk", "floor_sqlite", None, ""),
    ("disk get vs LiteLLM DiskCache (diskcache)", "ours_disk", "litellm_disk", 1.0, ""),
]  # fmt: skip


def section_hits(scale: Scale) -> JSON:
    out: JSON = {"sizes": {}, "peers": {}, "rows": []}
    rows: list[JSON] = out["rows"]
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        for size in (512, 8192):
            label = f"{size / 1024:g} KB"
            value = response(size, seed=size)
            raw = orjson.dumps(value)
            data = _hits_one_size(scale, server, Path(tmp) / str(size), value, raw)
            data["response_bytes"] = len(raw)
            out["sizes"][label] = data
            out["peers"].update(data.pop("peer_status"))
            us = data["us"]
            for comparison, mine, theirs, goal, note in HIT_ROWS:
                if mine in us and theirs in us:
                    rows.append(row("hits", f"{comparison}, {label}", us[mine], us[theirs], "us", goal=goal, note=note))
            if size == 512:
                note = "goal from benchmarks/core.py"
                rows.append(
                    row("hits", "L1 get, 0.5 KB", us["ours_l1"], None, "us", goal=5.0, goal_on="ours", note=note)
                )
    return out



def _hits_one_size(scale: Scale, server: RedisServer, tmp: Path, value: JSON, raw: bytes) -> JSON:
    tmp.mkdir(parents=True, exist_ok=True)
    server.flushall()
    stack = ExitStack()
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    try:
        h = HitSetup(scale, server.url, server.port, tmp, value, raw, loop, stack)
        l2, dsk = ours.hit_variants(h)
        close_floors = floors.hit_variants(h)
        status: JSON = {}
        for peer in (litellm_caches, gptcache_cache, cashews_cache, aiocache_cache):
            status.update(peer.hit_variants(h))

        for name, fn in {**h.sync_mem, **h.sync_io}.items():
            got = fn()
            check_value(name, getattr(got, "value", got), value)
        for name, afn in {**h.async_mem, **h.async_io}.items():
            got = loop.run_until_complete(afn())
            check_value(name, getattr(got, "value", got), value)

        warm(h.sync_mem)
        warm(h.sync_io)
        us: dict[str, float] = {}
        us.update(paired_us(h.sync_mem, repeat=scale.repeat, number=scale.mem_number))
        us.update(paired_us(h.sync_io, repeat=scale.repeat, number=scale.io_number))
        us.update(paired_async_us(loop, h.async_mem, repeat=scale.repeat, number=scale.mem_number))
        us.update(paired_async_us(loop, h.async_io, repeat=scale.repeat, number=scale.io_number))
        levels = {
            "l2": l2.stats.snapshot()["tiers"]["l2"]["hits"],
            "disk": dsk.stats.snapshot()["tiers"]["disk"]["hits"],
        }
        if levels["l2"] < scale.io_number or levels["disk"] < scale.io_number:
            raise AssertionError(f"ours L2/disk variants were not served by their tier: {levels}")
        loop.run_until_complete(close_floors())
        return {"us": us, "peer_status": status}
    finally:
        stack.close()
