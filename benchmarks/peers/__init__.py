"""Our cache against the caches users would pick instead, on the same values, keys and private Redis.

    python benchmarks/peers SECTION [--scale full|quick|smoke] [--json-out FILE]
    python benchmarks/peers all --scale quick

Sections (each returns plain JSON data with ``rows`` for the table ``run_all.py`` prints):

* ``hits``        hit latency per tier, 0.5 KB and 8 KB responses: our core ``get``/``aget`` of a key against each
                  peer's get of the same value (LiteLLM InMemoryCache / DualCache / RedisCache / DiskCache, cashews,
                  aiocache, GPTCache) and against the floors (dict + decode, redis-py GET + decode, sqlite3 SELECT).
* ``litellm``     whole ``litellm.completion`` hits for the two LiteLLM caches ``litellm_door.py`` does not cover:
                  ``Cache(type="disk")`` and a ``DualCache`` backend, against ``TieredCache``.
* ``zipf``        memory-tier hit ratio and hit cost on a Zipf(1.0) trace, bounded by entries and by bytes.
* ``stampede``    N concurrent identical misses across processes: upstream calls.
* ``unreachable`` Redis refusing connections or frozen (SIGSTOP): latency added per call.
* ``throughput``  async L1 hits per CPU-second.
* ``memory``      bytes per entry in memory (tracemalloc) and in Redis (INFO used_memory), with and without zstd.

One module per peer (``ours``, ``floors``, ``litellm_caches``, ``cashews_cache``, ``aiocache_cache``,
``gptcache_cache``, ``lru``) holds how that cache is built, filled and read in every section; one module per section
(``section_*.py``) runs the peers side by side and turns the figures into rows (``common.py``: what they share).

Each section is meant to run in its own process (``run_all.py`` does that), so one peer's threads, imports or
monkey-patches cannot skew another's figures. Peers that are not installed are reported as such, not skipped
silently. Timings use interleaved rounds (``paired_us`` from ``core.py``): a burst of each variant per round,
the median over rounds, so a noisy neighbour on a 2-core machine hits every variant alike.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from peers.common import JSON, SCALES, Scale, quiet_logs, row, versions
from peers.section_hits import section_hits
from peers.section_litellm import section_litellm
from peers.section_memory import section_memory
from peers.section_stampede import section_stampede
from peers.section_throughput import section_throughput
from peers.section_unreachable import section_unreachable
from peers.section_zipf import section_zipf

__all__ = ["SCALES", "SECTIONS", "Scale", "main", "row", "run_section", "versions"]

SECTIONS: dict[str, Callable[[Scale], JSON]] = {
    "hits": section_hits,
    "litellm": section_litellm,
    "zipf": section_zipf,
    "stampede": section_stampede,
    "unreachable": section_unreachable,
    "throughput": section_throughput,
    "memory": section_memory,
}


def run_section(name: str, scale: Scale) -> JSON:
    started = time.perf_counter()
    with quiet_logs():
        result = SECTIONS[name](scale)
    result["seconds"] = time.perf_counter() - started
    result["scale"] = asdict(scale)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=[*SECTIONS, "all"])
    parser.add_argument("--scale", choices=list(SCALES), default="full")
    parser.add_argument("--json-out", help="write the result here (default: print JSON to stdout)")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    names = list(SECTIONS) if args.section == "all" else [args.section]
    result = {name: run_section(name, scale) for name in names}
    doc = result[names[0]] if len(names) == 1 else result
    text_out = json.dumps(doc, indent=2, default=str)
    if args.json_out:
        Path(args.json_out).write_text(text_out)
    else:
        print(text_out)
    return 0
