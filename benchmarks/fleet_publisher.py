"""What the fleet counters cost a busy process: Redis commands per second, and the publisher's own time.

    python benchmarks/fleet_publisher.py [--seconds 12] [--flush 5] [--json]

A core over a private redis-server serves a hot loop of hits (L1, with an L2 lookup and a miss now and then, in
several namespaces and models) for ``--seconds``. Redis's own ``INFO commandstats`` says how many commands the
fleet publisher sent (``evalsha``) against everything else the process sent, and how long one batch took.

The hit path: an L1 hit with this issue's one addition (a per-namespace dict bump) against the same core with
the lookup as it was before, alternating in one run (best of 41 rounds each); and the cost of
building a LiteLLM hit's ``_hidden_params["cache"]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import redis

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.core import CallOptions, Hit
from dspy_tiered_cache.testing.redis_server import RedisServer
from dspy_tiered_cache.tiers.memory import MemoryTier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core import paired_us, request_2kb, response
from fleet_timing import alternating_min_us


class CoreBefore(CacheCore):
    """The L1 lookup as it was before the fleet view (no per-namespace count): the baseline of the same run."""

    def _l1_get(self, l1: MemoryTier, key: str, opts: CallOptions, now: float) -> Hit | None:
        tstats = self._l1_stats
        assert tstats is not None
        if (tstats.hits + tstats.misses) & 63:
            entry = l1.get(key)
            started = 0.0
        else:
            started = time.perf_counter()
            entry = l1.get(key)
        if entry is None or (opts.max_age is not None and now - entry.created_at > opts.max_age):
            tstats.misses += 1
            return None
        value = orjson.loads(entry.payload)
        tstats.hits += 1
        self.stats.hits += 1
        if started:
            tstats.observe(time.perf_counter() - started)
        return tuple.__new__(Hit, (value, "l1", entry.created_at, entry.expires_at))


def hit_path() -> dict[str, Any]:
    from dspy_tiered_cache.integrations.litellm import _mark_hit

    req, value = request_2kb(), response()
    now, before = CacheCore(disk=False), CoreBefore(disk=False)
    for core in (now, before):
        core.set(core.key_for(req), value)
    timed = alternating_min_us(
        {"before": lambda: before.get(before.key_for(req)), "now": lambda: now.get(now.key_for(req))}
    )
    stored = {"timestamp": time.time() - 5, "response": value}
    mark = paired_us({"mark": lambda: _mark_hit(dict(value), stored, ("l1", "k"))}, number=20_000)["mark"]
    return {
        "l1_hit_before_us": round(timed["before"], 3),
        "l1_hit_now_us": round(timed["now"], 3),
        "l1_hit_ratio": round(timed["now"] / timed["before"], 3),
        "litellm_mark_hit_us": round(mark, 3),
    }


def commandstats(client: redis.Redis) -> dict[str, int]:
    info = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def run(seconds: float, flush_s: float) -> dict[str, Any]:
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        core = CacheCore(redis_url=server.url, fleet_flush_s=flush_s)
        assert core.fleet is not None
        keys = [core.key_for({"q": i}, namespace=f"ns{i % 4}") for i in range(64)]
        for i, key in enumerate(keys):
            core.set(key, {"i": i})
        core.flush()
        before = commandstats(client)
        started = time.monotonic()
        calls = 0
        while time.monotonic() - started < seconds:
            for i, key in enumerate(keys):
                if core.get(key) is not None:
                    core.stats.record_savings(f"model-{i % 3}", {"prompt_tokens": 10, "completion_tokens": 2}, key=key)
                calls += 1
            if calls % 6400 == 0 and core.memory is not None:
                core.memory.delete(keys[0])  # an L2 hit now and then
            core.get(core.key_for({"miss": calls}))
            calls += 1
        elapsed = time.monotonic() - started
        after = commandstats(client)
        batch_started = time.perf_counter()
        core.fleet.flush()
        one_batch_ms = (time.perf_counter() - batch_started) * 1000
        core.close()
        client.close()
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    fleet_cmds = delta.get("evalsha", 0) + delta.get("eval", 0)
    return {
        "seconds": round(elapsed, 1),
        "flush_s": flush_s,
        "lookups": calls,
        "lookups_per_s": round(calls / elapsed),
        "fleet_commands": fleet_cmds,
        "fleet_commands_per_s": round(fleet_cmds / elapsed, 3),
        "other_commands_per_s": round((sum(delta.values()) - fleet_cmds) / elapsed, 1),
        "one_batch_ms": round(one_batch_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--flush", type=float, default=5.0, help="fleet_flush_s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = {**hit_path(), **run(args.seconds, args.flush)}
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return
    print(f"{r['lookups']:,} lookups in {r['seconds']} s ({r['lookups_per_s']:,}/s), fleet_flush_s={r['flush_s']}")
    print(
        f"fleet publisher: {r['fleet_commands']} Redis commands = {r['fleet_commands_per_s']}/s "
        f"(one batch: {r['one_batch_ms']} ms, off the hit path)"
    )
    print(f"everything else this process sent: {r['other_commands_per_s']}/s")
    print(
        f"L1 hit: {r['l1_hit_now_us']} us now vs {r['l1_hit_before_us']} us before the fleet view (same run): "
        f"{r['l1_hit_ratio']}x; a LiteLLM hit's _hidden_params['cache']: {r['litellm_mark_hit_us']} us"
    )


if __name__ == "__main__":
    main()
