"""Scale-out figures: L2 hit latency on a local Redis Cluster vs standalone, and how fast an invalidation
reaches other processes' memory tiers.

    python benchmarks/scale.py [--json]

Every server is private and on loopback (a 3-master Cluster and a standalone redis-server started here).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from core import paired_us, request_2kb, response

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.testing.redis_server import LocalRedisCluster, RedisServer


def _listener(url: str, cluster: bool, ready: Any, results: Any, rounds: int) -> None:
    """Another instance: keep a warm memory tier and report when each invalidation reached it."""
    # generation_refresh_s=60: only pub/sub can tell this instance in time, polling cannot help.
    core = CacheCore(redis_url=url, redis_cluster=cluster, disk=False, generation_refresh_s=60.0)
    assert core._bus is not None and core._bus.wait_connected(5)
    for i in range(rounds):
        key = core.key_for({"q": i}, namespace=f"prop{i}")
        while core.get(key) is None or core.get(key).level != "l1":  # type: ignore[union-attr]
            time.sleep(0.001)
        ready.release()
        while True:
            current = core.key_for({"q": i}, namespace=f"prop{i}")
            hit = core.get(current)
            if hit is None or hit.level != "l1":
                results.put(time.time())
                break
            time.sleep(0.0002)
    core.close()


def propagation_ms(
    url: str, op: str = "ns", *, cluster: bool = False, rounds: int = 20, listeners: int = 2
) -> list[float]:
    core = CacheCore(redis_url=url, redis_cluster=cluster, disk=False, generation_refresh_s=60.0)
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Semaphore(0), ctx.Queue()
    procs = [ctx.Process(target=_listener, args=(url, cluster, ready, results, rounds)) for _ in range(listeners)]
    for p in procs:
        p.start()
    delays: list[float] = []
    for i in range(rounds):
        key = core.key_for({"q": i}, namespace=f"prop{i}")
        core.set(key, {"answer": i})
        core.flush()
        for _ in procs:
            ready.acquire(timeout=60)
        sent = time.time()
        if op == "ns":
            core.invalidate_namespace(f"prop{i}")
        else:
            core.delete(key)
        delays.extend((results.get(timeout=10) - sent) * 1000 for _ in procs)
    for p in procs:
        p.join(30)
    core.close()
    return delays


def run() -> dict[str, Any]:
    req, value = request_2kb(), response()
    out: dict[str, Any] = {}
    with RedisServer() as server, LocalRedisCluster(masters=3) as cluster:
        standalone = CacheCore(memory=False, disk=False, redis_url=server.url)
        clustered = CacheCore(memory=False, disk=False, redis_url=cluster.url, redis_cluster=True)
        for core in (standalone, clustered):
            core.set(core.key_for(req), value)
            core.flush()
        timed = paired_us(
            {
                "standalone": lambda: standalone.get(standalone.key_for(req)),
                "cluster": lambda: clustered.get(clustered.key_for(req)),
            },
            number=1500,
        )
        out["l2_hit_us_standalone"] = timed["standalone"]
        out["l2_hit_us_cluster"] = timed["cluster"]
        out["cluster_vs_standalone"] = timed["cluster"] / timed["standalone"]
        for name, url in (("standalone", server.url), ("cluster", cluster.url)):
            for op in ("ns", "del"):
                delays = propagation_ms(url, op, cluster=name == "cluster")
                out[f"propagation_ms_{name}_{op}_p50"] = statistics.median(delays)
                out[f"propagation_ms_{name}_{op}_max"] = max(delays)
        standalone.close()
        clustered.close()
    out["goal_propagation_ms"] = 100
    out["propagation_goal_met"] = max(v for k, v in out.items() if k.startswith("propagation_ms_")) <= 100
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = run()
    if args.json:
        json.dump(r, sys.stdout, indent=2)
        print()
        return
    print(f"{'measure':<48}{'value':>10}")
    print(f"{'L2 hit, standalone Redis (us)':<48}{r['l2_hit_us_standalone']:>10.1f}")
    print(f"{'L2 hit, 3-master Cluster (us)':<48}{r['l2_hit_us_cluster']:>10.1f}")
    print(f"{'Cluster / standalone':<48}{r['cluster_vs_standalone']:>9.2f}x")
    for name in ("standalone", "cluster"):
        for op, label in (("ns", "namespace invalidation"), ("del", "key delete")):
            p50, worst = r[f"propagation_ms_{name}_{op}_p50"], r[f"propagation_ms_{name}_{op}_max"]
            print(f"{f'{label} -> 2 other processes ({name}), p50 / max ms':<60}{p50:>7.2f} / {worst:.2f}")
    print(f"goal: propagation <= 100 ms on loopback: {'met' if r['propagation_goal_met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
