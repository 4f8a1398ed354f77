"""A fleet on one Redis: 8 worker processes, a Zipf(1.0) request mix, ours against LiteLLM's own caches.

    python benchmarks/fleet.py [--workers 8] [--prompts 400] [--lookups 1500] [--json out.json] [--md out.md]

One private redis-server and one stand-in provider (real HTTP: a miss is a real upstream call). For each
configuration, ``--workers`` processes (forked from a server process that imported LiteLLM and DSPy once) start
together and each makes ``--lookups`` calls drawn from the same Zipf(1.0) distribution over ``--prompts`` prompts
(each worker its own seed; the same seeds for every configuration):

* ``ours/litellm``: ``litellm.cache = TieredCache(redis_url=...)`` (default settings: memory tier + Redis);
* ``ours/dspy``: ``CachedLM(dspy.LM(...), cache=...)`` over the same kind of core (the DSPy door);
* ``litellm/redis``: ``litellm.cache = Cache(type="redis")``;
* ``litellm/dual``: LiteLLM's ``DualCache`` (its in-memory cache in front of its ``RedisCache``), passed to
  ``Cache(type="redis", _backend=...)``;
* ``litellm/dual-sized``: the same with its in-memory cache sized like our memory tier (``max_size_in_memory``
  10,000, our ``memory_max_entries`` default). LiteLLM's default holds 200 entries, fewer than the ~290 distinct
  prompts a worker asks here, so ``litellm/dual`` re-reads evicted answers from Redis: a comparison of caches,
  not of their default sizes, is against this one.

Per configuration: aggregate lookups per second (all lookups / wall time from the common start to the last
worker's end), p50/p99 latency of hits (a whole ``litellm.completion`` / ``lm(...)`` call), hit ratio, Redis
commands per lookup (``INFO commandstats``, everything every worker sent) and Redis CPU (``INFO cpu``, user + sys)
per 1,000 lookups, and the workers' own CPU (``time.process_time`` of each worker process, all its threads) per
1,000 lookups: on a saturated box lookups/s follows the CPU a lookup costs, and CPU time does not move with the
load the way wall time does. Goals: >= 3x fewer commands per lookup and >= 1.5x the lookups/s of the best LiteLLM
configuration. Measured on a loaded 2-core box shared with other work: the ratios within one run are the result.
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="dtc-bench-"))
os.environ.setdefault("DSPY_CACHEDIR", tempfile.mkdtemp(prefix="dtc-bench-dspy-"))

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_timing import write_results

from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

CONFIGS = ("ours/litellm", "ours/dspy", "litellm/redis", "litellm/dual", "litellm/dual-sized")
#: Our memory tier's default bound on entries (``memory_max_entries``): the size ``litellm/dual-sized`` gets.
SIZED = 10_000
GOALS = {"commands_ratio": 3.0, "throughput_ratio": 1.5}
MODEL = "openai/gpt-4o-mini"


def zipf_sampler(n: int, seed: int, s: float = 1.0) -> Any:
    weights = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(weights)
    cumulative = []
    acc = 0.0
    for w in weights:
        acc += w / total
        cumulative.append(acc)
    rng = random.Random(seed)
    return lambda: min(n - 1, bisect.bisect_left(cumulative, rng.random()))


def prompt(i: int) -> str:
    return f"Question {i}: explain, in a short paragraph, how a shared cache saves money for topic number {i}."


def _setup(config: str, redis_url: str, port: int, base_url: str) -> tuple[Any, Any]:
    """(call(i) -> is_hit, close()) for one configuration, built inside the worker."""
    import litellm

    kwargs = {"api_base": base_url, "api_key": "sk-fleet", "temperature": 0.0}
    if config == "ours/dspy":
        import dspy

        from dspy_tiered_cache import CachedLM, TieredCache

        tiered = TieredCache(redis_url=redis_url)
        lm = CachedLM(dspy.LM(MODEL, **kwargs), cache=tiered)
        stats = tiered.core.stats

        def call_dspy(i: int) -> bool:
            before = stats.hits
            lm(messages=[{"role": "user", "content": prompt(i)}])
            return stats.hits > before

        return call_dspy, tiered.core.close
    if config == "ours/litellm":
        from dspy_tiered_cache import TieredCache

        litellm.cache = TieredCache(redis_url=redis_url)
        close = litellm.cache.core.close
    else:
        from litellm.caching.caching import Cache

        from dspy_tiered_cache.integrations._litellm_hit_path import ensure_hit_path

        # LiteLLM's own hit path imports fastapi (a proxy-only package) on every hit; route around it exactly as
        # our door does, or each of LiteLLM's hits would raise here.
        ensure_hit_path()
        if config == "litellm/redis":
            litellm.cache = Cache(type="redis", host="127.0.0.1", port=port)
        else:
            from litellm.caching.dual_cache import DualCache
            from litellm.caching.in_memory_cache import InMemoryCache
            from litellm.caching.redis_cache import RedisCache

            memory = InMemoryCache(max_size_in_memory=SIZED) if config == "litellm/dual-sized" else InMemoryCache()
            dual = DualCache(in_memory_cache=memory, redis_cache=RedisCache(host="127.0.0.1", port=port))
            litellm.cache = Cache(type="redis", host="127.0.0.1", port=port, _backend=dual)

        def close() -> None:
            litellm.cache = None

    def call(i: int) -> bool:
        response = litellm.completion(model=MODEL, messages=[{"role": "user", "content": prompt(i)}], **kwargs)
        return bool(getattr(response, "_hidden_params", {}).get("cache_hit"))

    return call, close


def worker(config: str, index: int, args: dict[str, Any], barrier: Any, results: Any) -> None:
    try:
        _work(config, index, args, barrier, results)
    except BaseException:
        import traceback

        barrier.abort()
        results.put({"error": traceback.format_exc()})


def _work(config: str, index: int, args: dict[str, Any], barrier: Any, results: Any) -> None:
    call, close = _setup(config, args["redis_url"], args["port"], args["base_url"])
    sample = zipf_sampler(args["prompts"], seed=1000 + index)
    draws = [sample() for _ in range(args["lookups"])]
    barrier.wait()
    started = time.time()
    cpu_started = time.process_time()  # every thread of this process: LiteLLM's logging threads too
    hit_ms: list[float] = []
    hits = 0
    for i in draws:
        t0 = time.perf_counter()
        hit = call(i)
        elapsed = (time.perf_counter() - t0) * 1000
        if hit:
            hits += 1
            hit_ms.append(elapsed)
    ended = time.time()
    close()  # ours: lands the background writes, so every command the run caused is counted
    cpu_s = time.process_time() - cpu_started
    results.put({"started": started, "ended": ended, "hits": hits, "lookups": len(draws), "hit_ms": hit_ms,
                 "cpu_s": cpu_s})  # fmt: skip


def _commands(client: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in client.info("commandstats").items()}


def _cpu_ms(client: redis.Redis) -> float:
    info = client.info("cpu")
    return (float(info["used_cpu_user"]) + float(info["used_cpu_sys"])) * 1000


def run_config(
    config: str, ctx: Any, server: RedisServer, provider: StandInProvider, a: argparse.Namespace
) -> dict[str, Any]:
    client = redis.Redis.from_url(server.url)
    client.flushdb()  # the benchmark's own private server
    barrier = ctx.Barrier(a.workers + 1)
    results = ctx.Queue()
    shared = {"redis_url": server.url, "port": server.port, "base_url": provider.base_url, "prompts": a.prompts,
              "lookups": a.lookups}  # fmt: skip
    procs = [ctx.Process(target=worker, args=(config, i, shared, barrier, results)) for i in range(a.workers)]
    for p in procs:
        p.start()
    upstream_before = provider.request_count
    commands_before, cpu_before = _commands(client), _cpu_ms(client)
    barrier.wait(timeout=300)
    rows = [results.get(timeout=900) for _ in procs]
    errors = [r["error"] for r in rows if "error" in r]
    if errors:
        raise RuntimeError(f"{config}: a worker failed:\n{errors[0]}")
    for p in procs:
        p.join(timeout=60)
    after = _commands(client)
    by_command = {k: n - commands_before.get(k, 0) for k, n in after.items() if n - commands_before.get(k, 0)}
    by_command["info"] = by_command.get("info", 0) - 2  # the two INFO calls of this measurement
    commands = sum(by_command.values())
    cpu = _cpu_ms(client) - cpu_before
    client.close()
    lookups = sum(r["lookups"] for r in rows)
    wall = max(r["ended"] for r in rows) - min(r["started"] for r in rows)
    hit_ms = sorted(ms for r in rows for ms in r["hit_ms"])
    return {
        "config": config,
        "lookups": lookups,
        "lookups_per_s": round(lookups / wall, 1),
        "hit_ratio": round(sum(r["hits"] for r in rows) / lookups, 4),
        "upstream_calls": provider.request_count - upstream_before,
        "hit_p50_ms": round(statistics.median(hit_ms), 3) if hit_ms else None,
        "hit_p99_ms": round(hit_ms[min(len(hit_ms) - 1, int(0.99 * len(hit_ms)))], 3) if hit_ms else None,
        "redis_commands_per_lookup": round(commands / lookups, 4),
        "redis_cpu_ms_per_1000_lookups": round(cpu / lookups * 1000, 2),
        "worker_cpu_ms_per_1000_lookups": round(sum(r["cpu_s"] for r in rows) * 1000 / lookups * 1000, 1),
        "redis_commands": {k: v for k, v in sorted(by_command.items()) if v},
    }


def _ratio(best: dict[str, Any], row: dict[str, Any], metric: str) -> float:
    return round(best[metric] / max(row[metric], 1e-9), 2)


#: Commands a process sends on a clock, not per lookup: the fleet counters (one HSET per batch, an EXPIRE per hour;
#: the first layout's script and its HINCRBYs for older results).
_PUBLISHER = ("hset", "evalsha", "hincrby", "hincrbyfloat", "expire", "script|load")
#: Commands a process sends once, whatever its traffic: the connection handshake, the server version (leases on
#: the entry keys), the invalidation channel's subscription.
_ONCE = ("hello", "info", "subscribe", "ping", "client|setinfo")


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Fleet on one Redis: 8 workers, Zipf(1.0), ours vs LiteLLM's caches",
        "",
        f"Measured by `python benchmarks/fleet.py --workers {r['workers']} --prompts {r['prompts']} --lookups "
        f"{r['lookups']}` on {r['when']}, **on a loaded 2-core box** (load average {r['load']:.1f} at the start; "
        "other work running): absolute rates are low and noisy, the ratios within this one run are the result. "
        "Every worker is a process with its own client; a miss is a real HTTP call to the local stand-in provider.",
        "",
        "| configuration | lookups/s (all workers) | hit ratio | upstream calls | hit p50 ms | hit p99 ms | "
        "Redis commands / lookup | Redis CPU ms / 1,000 lookups | worker CPU ms / 1,000 lookups |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['config']} | {row['lookups_per_s']:.0f} | {row['hit_ratio']:.3f} | {row['upstream_calls']} | "
            f"{row['hit_p50_ms']} | {row['hit_p99_ms']} | {row['redis_commands_per_lookup']:.3f} | "
            f"{row['redis_cpu_ms_per_1000_lookups']:.1f} | {row.get('worker_cpu_ms_per_1000_lookups', '-')} |"
        )
    lines += ["", "Ratios against the best LiteLLM configuration (by lookups/s) of this run:", ""]
    for name, ratio in r["ratios"].items():
        lines.append(
            f"- {name}: {ratio['commands_ratio']:.1f}x fewer Redis commands per lookup (goal >= "
            f"{GOALS['commands_ratio']}x), {ratio['throughput_ratio']:.2f}x the lookups/s (goal >= "
            f"{GOALS['throughput_ratio']}x), {ratio['cpu_ratio']:.1f}x less Redis CPU per lookup"
            + (f", {ratio['worker_cpu_ratio']:.2f}x less worker CPU per lookup" if "worker_cpu_ratio" in ratio else "")
        )
    lines += ["", "Where the Redis commands went (all workers, whole run; a script's own calls count too):", ""]
    for row in r["rows"]:
        counts = row.get("redis_commands", {})
        clocked = sum(n for name, n in counts.items() if name in _PUBLISHER)
        per_lookup = (sum(counts.values()) - clocked) / row["lookups"]
        once = sum(n for name, n in counts.items() if name in _ONCE)
        per_answer = (sum(counts.values()) - clocked - once) / max(row["upstream_calls"], 1)
        lines.append(
            f"- {row['config']}: {counts}; without the fleet counters' batches ({clocked} commands: a batch per "
            f"1,000 lookups or per minute, and one at close): {per_lookup:.3f} per lookup; per distinct answer "
            f"(upstream call), without the batches and the once-per-process handshake ({once}): {per_answer:.2f}"
        )
    for peer in (row for row in r["rows"] if row["config"].startswith("litellm/dual")):
        sized = "sized like our memory tier" if peer["config"].endswith("-sized") else "LiteLLM's default: 200 entries"
        lines += ["", f"Against `{peer['config']}` (memory + Redis, {sized}) by Redis commands per lookup:", ""]
        for row in r["rows"]:
            if row["config"].startswith("ours/"):
                ours, theirs = row["redis_commands_per_lookup"], peer["redis_commands_per_lookup"]
                lines.append(
                    f"- {row['config']}: {ours:.3f} vs {theirs:.3f} = {theirs / max(ours, 1e-9):.2f}x fewer "
                    f"(goal >= {GOALS['commands_ratio']}x)"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=400)
    parser.add_argument("--lookups", type=int, default=1500, help="per worker")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    parser.add_argument("--from-json", type=Path, help="rewrite --md from an earlier run's --json; run nothing")
    a = parser.parse_args()
    if a.from_json:
        if a.md:
            a.md.write_text(markdown(json.loads(a.from_json.read_text())))
        return
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["litellm", "dspy", "dspy_tiered_cache.integrations.litellm"])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result: dict[str, Any] = {"workers": a.workers, "prompts": a.prompts, "lookups": a.lookups, "when": when,
                              "load": os.getloadavg()[0]}  # fmt: skip
    rows = []
    with RedisServer() as server, StandInProvider() as provider:
        for config in a.configs.split(","):
            rows.append(run_config(config, ctx, server, provider, a))
            row = rows[-1]
            print(f"{config:14s} {row['lookups_per_s']:8.0f} lookups/s  hit {row['hit_ratio']:.3f}  "
                  f"p50 {row['hit_p50_ms']} ms  p99 {row['hit_p99_ms']} ms  "
                  f"{row['redis_commands_per_lookup']:.3f} cmds/lookup  "
                  f"{row['redis_cpu_ms_per_1000_lookups']:.1f} ms Redis CPU/1k  "
                  f"{row['worker_cpu_ms_per_1000_lookups']:.0f} ms worker CPU/1k  upstream {row['upstream_calls']}",
                  flush=True)  # fmt: skip
            print(f"{'':14s} Redis commands: {row['redis_commands']}", flush=True)
    result["rows"] = rows
    peers = [r for r in rows if r["config"].startswith("litellm/")]
    best = max(peers, key=lambda r: r["lookups_per_s"]) if peers else None
    result["best_litellm"] = best["config"] if best else None
    result["ratios"] = {}
    if best is not None:
        for row in rows:
            if row["config"].startswith("ours/"):
                result["ratios"][row["config"]] = {
                    "commands_ratio": _ratio(best, row, "redis_commands_per_lookup"),
                    "throughput_ratio": round(row["lookups_per_s"] / best["lookups_per_s"], 3),
                    "cpu_ratio": _ratio(best, row, "redis_cpu_ms_per_1000_lookups"),
                    "worker_cpu_ratio": _ratio(best, row, "worker_cpu_ms_per_1000_lookups"),
                }
        for name, ratio in result["ratios"].items():
            print(f"{name} vs {best['config']}: {ratio['commands_ratio']}x fewer commands/lookup, "
                  f"{ratio['throughput_ratio']}x lookups/s, {ratio['cpu_ratio']}x less Redis CPU, "
                  f"{ratio['worker_cpu_ratio']}x less worker CPU")  # fmt: skip
    write_results(result, a.json, a.md, markdown)


if __name__ == "__main__":
    main()
