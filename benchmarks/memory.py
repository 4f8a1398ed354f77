"""Redis memory per cached answer, ours against LiteLLM's ``Cache(type="redis")``, and what an L2 hit costs.

    python benchmarks/memory.py [--answers 300] [--sizes 500,1500,4000] [--json out.json] [--md out.md]

One private redis-server, one stand-in provider (real HTTP, real LiteLLM ``ModelResponse`` objects). For each
answer size, ``--answers`` distinct ``litellm.completion`` calls (a ~1.5 KB prompt each) go through:

* ours: ``litellm.cache = TieredCache(redis_url=...)`` (the LiteLLM door, default settings);
* LiteLLM's own: ``litellm.cache = Cache(type="redis", ...)``;

each into an empty Redis, then Redis itself says what the entries cost: ``MEMORY USAGE`` of every entry key
(key + value + Redis's per-key overhead; mean per entry) and the ``used_memory`` delta of ``INFO memory`` divided
by the number of entries. The answers are paragraphs of installed packages' README text (``memory_corpus.py``),
text the shipped dictionary was not trained on.

L2 hit (``memory_l2.py``): ``CacheCore(memory=False)`` reading one stored ~1.5 KB answer from Redis (key build,
GET, frame check, decompression, JSON decode) against raw redis-py ``GET`` + ``orjson.loads`` of the same answer
stored as plain JSON, alternating in one run; the best round of each (the uncontended cost: on a box with a load
average of 15 medians swing by 2x between rounds). ``--before REF`` also times the package as of a git ref in the
same rounds; ``--callgrind`` adds instruction counts per call (immune to load). Goals: memory <= 0.5x LiteLLM's,
L2 hit <= 1.3x raw.
Figures are measured on a loaded 2-core box shared with other work: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("XDG_CACHE_HOME", tempfile.mkdtemp(prefix="dtc-bench-"))

import litellm
import redis
from litellm.caching.caching import Cache

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_timing import write_results
from memory_corpus import answers, held_out_texts
from memory_l2 import l2_hit

from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

GOALS = {"memory_ratio": 0.5, "l2_vs_raw": 1.3}
_PROMPT = (
    "You are a helpful assistant for a software team. Answer the question below in plain English, with short "
    "paragraphs, and mention the trade-offs you see. "
) * 8


class ReadmeProvider(StandInProvider):
    """The stand-in provider answering request ``#i`` with the i-th held-out answer (real HTTP, real JSON)."""

    def __init__(self, texts: list[str]) -> None:
        super().__init__()
        self.texts = texts

    def _chat_content(self, messages: list[Any], response_format: Any, seed: str, choice_index: int | None) -> str:
        last = str(messages[-1].get("content", ""))
        return self.texts[int(last.rsplit("#", 1)[1])]


def _kwargs(provider: StandInProvider, i: int, size: int) -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": _PROMPT[:1500]},
            {"role": "user", "content": f"Question about size {size}, #{i}"},
        ],
        "api_base": provider.base_url,
        "api_key": "sk-bench",
        "temperature": 0.0,
    }


def _entry_keys(client: redis.Redis, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=1000))


def _wait_for(client: redis.Redis, pattern: str, count: int, timeout: float = 60.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    keys = _entry_keys(client, pattern)
    while len(keys) < count and time.monotonic() < deadline:
        time.sleep(0.05)
        keys = _entry_keys(client, pattern)
    return keys


def _measure(client: redis.Redis, keys: list[bytes]) -> dict[str, float]:
    """Per entry: MEMORY USAGE, and the used_memory the entries free when deleted (clients' buffers and
    connections, allocated while writing, stay out of the figure)."""
    usage = [int(client.memory_usage(k, samples=0) or 0) for k in keys]
    values = [len(client.get(k) or b"") for k in keys]
    used = int(client.info("memory")["used_memory"])
    client.delete(*keys)
    used -= int(client.info("memory")["used_memory"])
    return {
        "entries": len(keys),
        "memory_usage_per_entry": round(statistics.mean(usage), 1),
        "used_memory_per_entry": round(used / max(1, len(keys)), 1),
        "value_bytes_per_entry": round(statistics.mean(values), 1),
    }


def memory_per_entry(server: RedisServer, provider: ReadmeProvider, size: int, n: int) -> dict[str, Any]:
    client = redis.Redis.from_url(server.url)
    out: dict[str, Any] = {"answer_bytes": size}
    for peer in ("ours", "litellm"):
        client.flushdb()  # the benchmark's own private server
        if peer == "ours":
            cache: Any = TieredCache(redis_url=server.url, fleet=False)
            pattern = "dtc:e:*"
        else:
            cache = Cache(type="redis", host="127.0.0.1", port=server.port)
            pattern = "*"
        litellm.cache = cache
        for i in range(n):
            litellm.completion(**_kwargs(provider, i, size), caching=True)
        if peer == "ours":
            cache.core.flush()
        keys = _wait_for(client, pattern, n)
        out[peer] = _measure(client, keys)
        litellm.cache = None
        if peer == "ours":
            out["ours"]["storage"] = cache.core.tiers[-1].storage()
            cache.core.close()
    for metric in ("memory_usage_per_entry", "used_memory_per_entry"):
        out[f"{metric}_ratio"] = round(out["ours"][metric] / out["litellm"][metric], 3)
    client.close()
    return out


def markdown(r: dict[str, Any]) -> str:
    lines = [
        "# Redis memory per cached answer: ours vs LiteLLM `Cache(type=\"redis\")`",
        "",
        f"Measured by `python benchmarks/memory.py --answers {r['answers']}` on {r['when']}, on a loaded 2-core box "
        f"(other work running), redis-server {r['redis_version']}, litellm {r['litellm']}. "
        "Each row: that many distinct `litellm.completion` calls through each cache into an empty private Redis; "
        "answers are held-out README paragraphs of installed packages (not the dictionary's training text).",
        "",
        "| answer size | ours MEMORY USAGE / entry | LiteLLM MEMORY USAGE / entry | ratio | ours used_memory / entry | "
        "LiteLLM used_memory / entry | ratio | ours value bytes | LiteLLM value bytes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for row in r["sizes"]:
        o, lt = row["ours"], row["litellm"]
        lines.append(
            f"| {row['answer_bytes']} B | {o['memory_usage_per_entry']:.0f} | {lt['memory_usage_per_entry']:.0f} | "
            f"**{row['memory_usage_per_entry_ratio']:.2f}x** | {o['used_memory_per_entry']:.0f} | "
            f"{lt['used_memory_per_entry']:.0f} | {row['used_memory_per_entry_ratio']:.2f}x | "
            f"{o['value_bytes_per_entry']:.0f} | {lt['value_bytes_per_entry']:.0f} |"
        )
    lines += [
        "",
        f"Goal: <= {GOALS['memory_ratio']}x LiteLLM's memory per entry: "
        f"{'met' if r['memory_goal_met'] else 'NOT met'} at every size measured.",
        "",
        *l2_markdown(r["l2_hit"]),
    ]
    return "\n".join(lines) + "\n"


def l2_markdown(h: dict[str, Any]) -> list[str]:
    goal = GOALS["l2_vs_raw"]
    lines = [
        "## The L2 hit",
        "",
        f"Core L2 hit (memory tier off, ~1.5 KB answer: key, GET, frame check, decompression, JSON decode) against "
        f"raw redis-py GET + orjson.loads of the same answer; best of {h['rounds']} alternating rounds in one run "
        "(loaded 2-core box: read the ratios, not the absolute times).",
        "",
        *([f"Measured separately: {h['command']}.", ""] if "command" in h else []),
        "| reader | best per call | vs raw |",
        "|---|---:|---:|",
        f"| raw redis-py GET + orjson.loads | {h['raw_get_decode_us']} us | 1.00x |",
        f"| ours (frame format 3, compressed) | {h['l2_hit_us']} us | **{h['l2_vs_raw']:.2f}x** |",
        f"| ours, compression off | {h['l2_hit_uncompressed_us']} us | {h['l2_uncompressed_vs_raw']:.2f}x |",
    ]
    if "before_ref" in h:
        lines.append(
            f"| ours as of `{h['before_ref']}` (before this round) | {h['l2_hit_before_us']} us | "
            f"{h['before_vs_raw']:.2f}x |"
        )
    lines += ["", f"Goal <= {goal}x: {'met' if h['l2_vs_raw'] <= goal else 'NOT met'} by wall time."]
    if "instructions_per_call" in h:
        ir, vs = h["instructions_per_call"], h["instructions_vs_raw"]
        lines += [
            "",
            "Instructions per call (valgrind callgrind; load cannot move them): "
            + ", ".join(f"{k} {v:,}" + (f" ({vs[k]:.2f}x raw)" if k in vs else "") for k, v in ir.items())
            + ".",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=300)
    parser.add_argument("--sizes", default="500,1500,4000")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--md", type=Path)
    parser.add_argument("--before", metavar="REF", help="also time the L2 hit of the package as of this git ref")
    parser.add_argument("--callgrind", action="store_true", help="also count the L2 hit's instructions (valgrind)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    held = held_out_texts()
    result: dict[str, Any] = {"answers": args.answers, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    import importlib.metadata

    result["litellm"] = importlib.metadata.version("litellm")
    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)
        result["redis_version"] = client.info("server")["redis_version"]
        client.close()
        rows = []
        for size in sizes:
            texts = list(answers(held, size, args.answers, seed=size))
            with ReadmeProvider(texts) as provider:
                rows.append(memory_per_entry(server, provider, size, args.answers))
            row = rows[-1]
            ours, theirs = row["ours"], row["litellm"]
            print(
                f"{size:>5} B answers: ours {ours['memory_usage_per_entry']:.0f} B/entry (MEMORY USAGE), LiteLLM "
                f"{theirs['memory_usage_per_entry']:.0f} B -> {row['memory_usage_per_entry_ratio']:.2f}x; used_memory "
                f"{ours['used_memory_per_entry']:.0f} vs {theirs['used_memory_per_entry']:.0f}"
                f" -> {row['used_memory_per_entry_ratio']:.2f}x",
                flush=True,
            )
        result["sizes"] = rows
        result["l2_hit"] = l2_hit(
            server.url, next(answers(held, 1500, 1, seed=99)), before=args.before, count_instructions=args.callgrind
        )
    result["memory_goal_met"] = all(
        row["memory_usage_per_entry_ratio"] <= GOALS["memory_ratio"] for row in result["sizes"]
    )
    h = result["l2_hit"]
    print("\n".join(l2_markdown(h)))
    write_results(result, args.json, args.md, markdown)


if __name__ == "__main__":
    main()
