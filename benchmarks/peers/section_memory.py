"""Section ``memory``: bytes per entry in memory (tracemalloc, and RSS in a fresh process) and in Redis
(``INFO used_memory``), with and without zstd; ours against plain dicts, cashews and LiteLLM's caches."""

from __future__ import annotations

import gc
import multiprocessing
import statistics
import time
from collections.abc import Callable

import orjson
import zstandard

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.testing.redis_server import RedisServer
from peers import cashews_cache, floors, litellm_caches, ours
from peers.common import JSON, Scale, child_result, memory_values, missing, paired_us, row, traced


def section_memory(scale: Scale) -> JSON:
    n = scale.memory_entries
    keys, raws = memory_values(n)
    compressed = [zstandard.compress(r, 3) for r in raws]
    out: JSON = {
        "entries": n,
        "mean_json_bytes": statistics.fmean(map(len, raws)),
        "mean_zstd_bytes": statistics.fmean(map(len, compressed)),
        "share_over_default_threshold": sum(len(r) >= 2048 for r in raws) / n,
        "memory_bytes_per_entry": {},
        "redis_bytes_per_entry": {},
        "peer_status": {},
    }
    mem: JSON = out["memory_bytes_per_entry"]

    # The cache object itself (its frequency sketch is ~26 B per entry of capacity) is built outside the window
    # and reported apart, so small runs are not dominated by fixed costs.
    fixed, l1core = traced(lambda: CacheCore(disk=False, memory_max_entries=n + 10))
    out["ours_fixed_bytes"] = fixed
    used = traced(lambda: ours.fill_l1(l1core, keys, raws))[0]
    assert l1core.memory is not None and l1core.memory.entries == n
    mem["ours_l1"] = used / n
    out["ours_l1_accounted_bytes_per_entry"] = l1core.memory.bytes / n  # what memory_max_bytes is checked against

    floor = floors.memory_per_entry(keys, raws)
    mem["dict_of_objects"] = floor["dict_of_objects"]
    rss: JSON = {}
    out["rss_bytes_per_entry"] = rss
    ctx = multiprocessing.get_context("spawn")
    for kind in ("ours_l1", "dict_of_objects"):
        queue = ctx.Queue()
        proc = ctx.Process(target=ours.rss_child, args=(kind, n, queue))
        proc.start()
        rss[kind] = child_result(proc, queue, 60.0)
    for name in ("dict_of_orjson_output", "dict_of_json_bytes", "dict_of_zstd_bytes"):
        mem[name] = floor[name]
    try:
        mem["cashews_mem"] = traced(cashews_cache.memory_build(keys, raws))[0] / n
    except ImportError as exc:
        out["peer_status"]["cashews"] = missing("cashews", exc)
    try:
        mem["litellm_inmemory"] = litellm_caches.memory_per_entry(scale, keys, raws)
    except ImportError as exc:
        out["peer_status"]["litellm"] = missing("litellm", exc)
    l1core.close()
    l1core.clear()
    gc.collect()

    # Decompression cost per hit, to weigh what a compressed L1 would cost.
    sample_c, sample_r = compressed[0], raws[0]
    dctx = zstandard.ZstdDecompressor()
    out["decode_us"] = paired_us(
        {"json": lambda: orjson.loads(sample_r), "zstd+json": lambda: orjson.loads(dctx.decompress(sample_c))},
        repeat=scale.repeat,
        number=scale.mem_number,
    )

    red: JSON = out["redis_bytes_per_entry"]
    with RedisServer() as server:
        client = server.client()

        def used_memory() -> int:
            return int(client.info("memory")["used_memory"])

        def redis_fill(name: str, fill: Callable[[], None]) -> None:
            server.flushall()
            time.sleep(0.05)
            before = used_memory()
            fill()
            red[name] = (used_memory() - before) / n

        for name, threshold in (("ours_uncompressed", 0), ("ours_default_threshold", 2048), ("ours_compress_all", 64)):

            def fill_ours(threshold: int = threshold) -> None:
                ours.fill_redis(server.url, keys, raws, threshold)

            redis_fill(name, fill_ours)
        try:
            redis_fill("litellm_redis", litellm_caches.redis_filler(scale, server.port, keys, raws))
        except ImportError as exc:
            out["peer_status"]["litellm"] = missing("litellm", exc)
        try:
            redis_fill("cashews_redis", cashews_cache.redis_filler(server.url, keys, raws))
        except ImportError as exc:
            out["peer_status"]["cashews"] = missing("cashews", exc)
        client.close()

    what = f"{n:,} entries of ~{out['mean_json_bytes'] / 1024:.1f} KB"
    accounted = out["ours_l1_accounted_bytes_per_entry"]
    decode = out["decode_us"]
    rows = [
        row("memory", f"L1 bytes per entry ({what}) vs a dict of decoded objects", mem["ours_l1"],
            mem["dict_of_objects"], "B", goal=1.0, note="ours holds JSON bytes, never live objects"),
        row("memory", "L1 bytes per entry vs a dict of exact-size JSON bytes (what L1 should cost)", mem["ours_l1"],
            mem["dict_of_json_bytes"], "B", goal=1.2,
            note=f"memory_max_bytes counts {accounted:,.0f} B per entry"),
        row("memory", "L1 bytes per entry vs a dict of orjson.dumps() results as returned", mem["ours_l1"],
            mem["dict_of_orjson_output"], "B",
            note="orjson's bytes objects keep an allocation several times their length"),
        row("memory", "L1 resident memory (RSS) per entry vs a dict of decoded objects", rss["ours_l1"],
            rss["dict_of_objects"], "B", goal=1.0, note="RSS growth in a fresh process: a cross-check"),
        row("memory", "L1 bytes per entry vs a dict of zstd frames (what compressing L1 would give)", mem["ours_l1"],
            mem["dict_of_zstd_bytes"], "B",
            note=f"L1 does not compress; zstd + decode costs {decode['zstd+json']:.1f} us vs {decode['json']:.1f} us "
            "per hit"),
    ]  # fmt: skip
    for name, label in (("cashews_mem", "cashews mem://"), ("litellm_inmemory", "LiteLLM InMemoryCache")):
        if name in mem:
            rows.append(row("memory", f"L1 bytes per entry vs {label}", mem["ours_l1"], mem[name], "B", goal=1.0))
    rows.append(
        row(
            "memory",
            "Redis bytes per entry: ours (default compression_threshold=2048) vs uncompressed",
            red["ours_default_threshold"],
            red["ours_uncompressed"],
            "B",
            note=f"{out['share_over_default_threshold']:.0%} of these responses reach the threshold",
        )
    )
    rows.append(
        row(
            "memory",
            "Redis bytes per entry: ours compressing everything vs uncompressed",
            red["ours_compress_all"],
            red["ours_uncompressed"],
            "B",
        )
    )
    for name, label in (("litellm_redis", "LiteLLM RedisCache"), ("cashews_redis", "cashews redis (pickle)")):
        if name in red:
            rows.append(
                row(
                    "memory",
                    f"Redis bytes per entry: ours (default) vs {label}",
                    red["ours_default_threshold"],
                    red[name],
                    "B",
                    goal=1.0,
                )
            )
    out["rows"] = rows
    return out
