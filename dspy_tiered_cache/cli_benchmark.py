"""``dspy-tiered-cache benchmark``: latency of each configured tier from this machine, with percentiles."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from dspy_tiered_cache.cli_common import PROG, CliError, out, print_json, require_healthy, settings_from_args, where
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.report import format_table
from dspy_tiered_cache.settings import CacheSettings
from dspy_tiered_cache.tiers.base import Tier
from dspy_tiered_cache.tiers.disk import DiskTier


def _value_of_size(size: int) -> dict[str, Any]:
    """A chat-completion-shaped value of about ``size`` bytes of JSON (words, so it compresses like text)."""
    words = ("the", "cache", "serves", "repeated", "prompts", "from", "memory", "disk", "or", "redis", "not", "model")
    text: list[str] = []
    length = 0
    i = 0
    while length < max(16, size - 300):
        word = f"{words[i % len(words)]}{i % 97}"
        text.append(word)
        length += len(word) + 1
        i += 1
    return {
        "id": "chatcmpl-benchmark",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": " ".join(text)}}],
        "usage": {"prompt_tokens": 180, "completion_tokens": length // 4, "total_tokens": 180 + length // 4},
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6, 1)

    return {"p50_us": pct(0.5), "p99_us": pct(0.99), "mean_us": round(sum(ordered) / len(ordered) * 1e6, 1)}


def _bench_tier(settings: CacheSettings, tier: Tier, count: int, value: Any, namespace: str) -> dict[str, Any]:
    core = CacheCore(settings, tiers=[tier], write_behind=False, telemetry=False, namespace=namespace)
    keys = [core.key_for({"benchmark": i}) for i in range(count)]
    absent = [core.key_for({"absent": i}) for i in range(count)]
    writes, hits, misses = [], [], []
    try:
        for key in keys:
            t = time.perf_counter()
            core.set(key, value)
            writes.append(time.perf_counter() - t)
        for key in keys:
            t = time.perf_counter()
            hit = core.get(key)
            hits.append(time.perf_counter() - t)
            if hit is None:
                raise CliError(f"benchmark: tier {tier.name} lost a value it was just given ({where(tier)})")
        for key in absent:
            t = time.perf_counter()
            core.get(key)
            misses.append(time.perf_counter() - t)
    finally:
        for key in keys:
            core.delete(key)
        if tier.name != "l2":
            core.close()
    return {
        "tier": tier.name,
        "where": where(tier),
        "write": _percentiles(writes),
        "hit": _percentiles(hits),
        "miss": _percentiles(misses),
    }


def cmd_benchmark(args: argparse.Namespace) -> int:
    if args.count < 1 or args.value_bytes < 1:
        raise CliError("--count and --value-bytes must be positive", 2)
    from dspy_tiered_cache.tiers.memory import MemoryTier

    settings = settings_from_args(args)
    value = _value_of_size(args.value_bytes)
    namespace = "dtc-benchmark"
    results: list[dict[str, Any]] = []
    base = CacheCore(settings, memory=False, write_behind=False, telemetry=False)
    try:
        require_healthy(base, "benchmark")
        codec = base.codec
        results.append(_bench_tier(settings, MemoryTier(), args.count, value, namespace))
        # The disk tier is measured on a scratch file next to the configured one (same filesystem), so the
        # benchmark never writes into the real cache.
        disk_dir = settings.disk_path.expanduser().parent
        try:
            disk_dir.mkdir(parents=True, exist_ok=True)
            scratch = tempfile.TemporaryDirectory(prefix="dtc-benchmark-", dir=disk_dir)
        except OSError:
            scratch = tempfile.TemporaryDirectory(prefix="dtc-benchmark-")
        with scratch as tmp:
            results.append(
                _bench_tier(settings, DiskTier(Path(tmp) / "bench.sqlite3", codec=codec), args.count, value, namespace)
            )
        for tier in base.tiers:
            if tier.name == "l2":
                results.append(_bench_tier(settings, tier, args.count, value, namespace))
    finally:
        base.close()
    payload = len(json.dumps(value))
    if args.format == "json":
        print_json({"count": args.count, "value_bytes": payload, "results": results})
        return 0
    out(f"{PROG} benchmark: {args.count} writes, hits and misses per tier, {payload:,}-byte JSON values")
    out("(times include key lookup, integrity check, decompression and JSON decoding of a fresh object)")
    out()
    rows = []
    for r in results:
        rows.append(
            [
                r["tier"],
                *(f"{r[op]['p50_us']:.1f}" for op in ("hit", "miss", "write")),
                *(f"{r[op]['p99_us']:.1f}" for op in ("hit", "miss", "write")),
                r["where"],
            ]
        )
    out(
        format_table(
            ["tier", "hit p50 µs", "miss p50", "write p50", "hit p99", "miss p99", "write p99", "where"],
            rows,
            align_right={1, 2, 3, 4, 5, 6},
        )
    )
    if not any(r["tier"] == "l2" for r in results):
        out()
        out("no Redis configured: pass --redis-url redis://host:6379/0 to measure it too")
    return 0
