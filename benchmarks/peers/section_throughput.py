"""Section ``throughput``: async L1 hits per CPU-second, many tasks on one event loop."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from peers import aiocache_cache, cashews_cache, floors, ours
from peers.common import JSON, Scale, missing, response, row


def section_throughput(scale: Scale) -> JSON:
    value = response(512, seed=3)
    out: JSON = {"tasks": scale.throughput_tasks, "seconds_per_round": scale.throughput_seconds, "peer_status": {}}
    loop = asyncio.new_event_loop()
    gets: dict[str, Callable[[str], Awaitable[Any]]] = {}
    keys, gets["ours_aget"], close = ours.throughput_get(1000, value)
    gets["floor_dict"] = floors.throughput_get(keys, orjson.dumps(value))
    for name, peer in (("cashews", cashews_cache), ("aiocache", aiocache_cache)):
        try:
            gets[f"{name}_mem"] = peer.throughput_get(keys, value, loop)
        except ImportError as exc:
            out["peer_status"][name] = missing(name, exc)

    async def run(get: Callable[[str], Awaitable[Any]], seconds: float) -> tuple[int, float, float]:
        deadline = time.perf_counter() + seconds
        counts = [0] * scale.throughput_tasks

        async def worker(i: int) -> None:
            ks = keys[i % 10 :] + keys[: i % 10]
            while time.perf_counter() < deadline:
                for k in ks[:100]:
                    await get(k)
                counts[i] += 100
                await asyncio.sleep(0)  # let the other tasks run: aget of an L1 hit never suspends by itself

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(scale.throughput_tasks)))
        return sum(counts), time.perf_counter() - wall, time.process_time() - cpu

    rates: dict[str, list[float]] = {name: [] for name in gets}
    wall_rates: dict[str, list[float]] = {name: [] for name in gets}
    rounds = 3
    for get in gets.values():  # warm up
        loop.run_until_complete(run(get, scale.throughput_seconds / 10))
    for _ in range(rounds):
        for name, get in gets.items():
            ops, wall, cpu = loop.run_until_complete(run(get, scale.throughput_seconds / rounds))
            rates[name].append(ops / max(cpu, 1e-9))
            wall_rates[name].append(ops / wall)
    loop.close()
    close()
    out["ops_per_cpu_s"] = {name: statistics.median(r) for name, r in rates.items()}
    out["ops_per_wall_s"] = {name: statistics.median(r) for name, r in wall_rates.items()}
    ops = out["ops_per_cpu_s"]
    rows = [
        row(
            "throughput",
            f"async L1 hits per CPU-second ({scale.throughput_tasks} tasks, 0.5 KB) vs dict + decode (floor)",
            ops["ours_aget"],
            ops["floor_dict"],
            "ops/s",
            better="higher",
        )
    ]
    for name, label in (("cashews_mem", "cashews mem://"), ("aiocache_mem", "aiocache SimpleMemoryCache")):
        if name in ops:
            rows.append(
                row(
                    "throughput",
                    f"async L1 hits per CPU-second vs {label}",
                    ops["ours_aget"],
                    ops[name],
                    "ops/s",
                    better="higher",
                    goal=1.0,
                    note="peer returns the stored object (no decode, no copy)",
                )
            )
    out["rows"] = rows
    return out
