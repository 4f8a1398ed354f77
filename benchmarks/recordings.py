"""Recording files: size per 1,000 typical entries, export and import time per 10,000 entries.

    python benchmarks/recordings.py [--entries 10000] [--redis] [--json]

A "typical entry" is what the LiteLLM door stores for a DSPy-style chat call: a ~1.5 KB system prompt shared by
every call, a varied ~300-character question, and a varied ~700-character answer with usage; the cache runs with
``record_requests`` so each entry carries its request (what makes ``inspect`` and replay-miss diffs possible).
Measured in the same run, for scale: the same entries as plain JSON lines (no gzip), as one pickle of a dict
(what DSPy's ``save_memory_cache`` writes; never loadable safely, shown for size only), and the SQLite file the
entries live in.
"""

from __future__ import annotations

import argparse
import gzip
import json
import pickle
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.portable import collect

WORDS = [
    "cache",
    "tier",
    "memory",
    "redis",
    "disk",
    "latency",
    "prompt",
    "model",
    "answer",
    "token",
    "request",
    "namespace",
    "generation",
    "eviction",
    "stampede",
    "lease",
    "replica",
    "cluster",
    "sentinel",
    "timeout",
    "breaker",
    "payload",
    "frame",
    "checksum",
    "compression",
    "replay",
    "record",
    "export",
    "import",
    "program",
    "module",
    "signature",
    "predictor",
    "optimizer",
    "metric",
    "example",
    "dataset",
    "evaluation",
    "trace",
    "span",
]
SYSTEM = (
    "Your input fields are: 1. `question` (str). Your output fields are: 1. `reasoning` (str) 2. `answer` "
    "(str). All interactions will be structured in the following way, with the appropriate values filled in. "
) * 6


def typical(rng: random.Random, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    question = f"[{i}] " + " ".join(rng.choice(WORDS) for _ in range(45))
    answer = " ".join(rng.choice(WORDS) for _ in range(100))
    request = {
        "__door__": "litellm",
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "system", "content": SYSTEM[:1500]}, {"role": "user", "content": question}],
        "temperature": 0.0,
    }
    value = {
        "__dtc_litellm__": 1,
        "r": {
            "id": f"chatcmpl-{rng.getrandbits(64):016x}",
            "object": "chat.completion",
            "created": 1_765_000_000 + i,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 410 + i % 50, "completion_tokens": 160 + i % 40, "total_tokens": 600},
        },
    }
    return request, value


def fill(core: CacheCore, n: int) -> None:
    rng = random.Random(16)
    for i in range(n):
        request, value = typical(rng, i)
        core.set(core.key_for(request), value)
    core.flush(60)


def timed(fn: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def run(n: int, redis: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"entries": n}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "source.sqlite3"
        with CacheCore(disk_path=source, record_requests=True, memory=False, write_behind=False) as core:
            fill(core, n)
            export_s, summary = timed(lambda: core.export(root / "rec.jsonl.gz"))
            recording, _ = collect(core)
        data = (root / "rec.jsonl.gz").read_bytes()
        plain = gzip.decompress(data)
        as_dict = {e.digest: {"request": e.request, "value": e.value} for e in recording.entries}
        pickled = pickle.dumps(as_dict, protocol=pickle.HIGHEST_PROTOCOL)
        out["export_s"] = export_s
        out["file_bytes"] = len(data)
        out["bytes_per_1000"] = len(data) * 1000 / n
        out["jsonl_bytes_per_1000"] = len(plain) * 1000 / n
        out["pickle_bytes_per_1000"] = len(pickled) * 1000 / n
        out["sqlite_bytes_per_1000"] = source.stat().st_size * 1000 / n
        out["with_requests"] = summary.with_requests
        with CacheCore(disk_path=root / "target.sqlite3", memory=False, write_behind=False) as target:
            out["import_disk_s"], _ = timed(lambda: target.import_(root / "rec.jsonl.gz"))
        with CacheCore(disk=False, memory_max_entries=4 * n) as target:
            out["import_memory_s"], _ = timed(lambda: target.import_(root / "rec.jsonl.gz"))
        if redis:
            from dspy_tiered_cache.testing.redis_server import RedisServer

            with RedisServer() as server, CacheCore(redis_url=server.url, memory=False) as target:
                out["import_redis_s"], _ = timed(lambda: target.import_(root / "rec.jsonl.gz"))
                out["export_redis_s"], _ = timed(lambda: target.export(root / "redis.jsonl.gz"))
                out["redis_export_identical"] = (root / "redis.jsonl.gz").read_bytes() == data
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--redis", action="store_true", help="also import into / export from a private Redis")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    r = run(args.entries, args.redis)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    per10k = 10_000 / r["entries"]
    print(f"{r['entries']:,} typical entries ({r['with_requests']:,} with their request)")
    print(f"  recording size       {r['bytes_per_1000'] / 1000:8.1f} kB per 1,000 entries (gzip'd JSON lines)")
    print(
        f"  plain JSON lines     {r['jsonl_bytes_per_1000'] / 1000:8.1f} kB per 1,000  "
        f"(recording is {r['jsonl_bytes_per_1000'] / r['bytes_per_1000']:.1f}x smaller)"
    )
    print(
        f"  pickle of a dict     {r['pickle_bytes_per_1000'] / 1000:8.1f} kB per 1,000  "
        f"(recording is {r['pickle_bytes_per_1000'] / r['bytes_per_1000']:.1f}x smaller)"
    )
    print(
        f"  the SQLite tier      {r['sqlite_bytes_per_1000'] / 1000:8.1f} kB per 1,000  "
        f"(recording is {r['sqlite_bytes_per_1000'] / r['bytes_per_1000']:.1f}x smaller)"
    )
    print(f"  export from disk     {r['export_s'] * per10k:8.2f} s per 10,000 entries")
    print(f"  import into disk     {r['import_disk_s'] * per10k:8.2f} s per 10,000 entries")
    print(f"  import into memory   {r['import_memory_s'] * per10k:8.2f} s per 10,000 entries")
    if "import_redis_s" in r:
        print(f"  import into Redis    {r['import_redis_s'] * per10k:8.2f} s per 10,000 entries")
        print(
            f"  export from Redis    {r['export_redis_s'] * per10k:8.2f} s per 10,000 entries "
            f"(byte-identical to the disk export: {r['redis_export_identical']})"
        )


if __name__ == "__main__":
    sys.exit(main())
