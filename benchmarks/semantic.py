"""Semantic caching: paraphrase hit rate, false-hit rate on near-misses, lookup latency; ours vs peers.

    .venv/bin/python benchmarks/semantic.py          # writes benchmarks/results/semantic.{json,md}

Data: ``benchmarks/data/semantic_pairs.jsonl``, 318 labelled pairs written for this benchmark (53 anchors; per
anchor 3 paraphrases and 3 near-misses: negation, numbers, entities, units, antonyms, direction, substituted
content words). Every cache stores the 53 anchors first, then answers every query:

* paraphrase hit rate = paraphrase queries served with *their own* anchor's answer;
* false-hit rate = near-miss queries served any answer (plus paraphrases served another anchor's answer,
  reported separately as ``wrong_anchor``).

Fairness: every cache uses the same embedding, the stand-in provider's bag-of-words model
(:func:`dspy_tiered_cache.testing.provider.bag_of_words_vector`, 256 dims): RedisVL through a
``CustomVectorizer`` over that function, LiteLLM's redis-semantic through ``litellm.embedding`` against the
stand-in provider over HTTP (its only way to embed), ours with the same function handed in directly. Peers run
at their defaults: RedisVL ``SemanticCache`` distance_threshold 0.1 (similarity 0.9); LiteLLM's redis-semantic
has no default (``similarity_threshold`` is required), so 0.8, the value of LiteLLM's documented example. All
Redis-backed caches use one private server with RediSearch (``dspy_tiered_cache.testing.redis_search``).
Latency: per lookup, wall clock, in this process (LiteLLM's includes its HTTP embedding call; ours and RedisVL's
call the embedding function in-process).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

import numpy as np  # noqa: E402

from dspy_tiered_cache.core import CacheCore  # noqa: E402
from dspy_tiered_cache.semantic.index import LocalIndex, RedisIndex, VectorIndex  # noqa: E402
from dspy_tiered_cache.semantic.tier import SemanticTier  # noqa: E402
from dspy_tiered_cache.testing.provider import StandInProvider, bag_of_words_vector  # noqa: E402
from dspy_tiered_cache.testing.redis_search import SearchUnavailable, start_search_server  # noqa: E402

Lookup = Callable[[str], "str | None"]


#: The set the verifier was developed against (its failures were read while writing the rules), and a held-out
#: set written after the rules were frozen (commit 69463da), never used to change them.
DATASETS = {"development": "semantic_pairs.jsonl", "held-out": "semantic_pairs_holdout.jsonl"}


def load_pairs(name: str = "semantic_pairs.jsonl") -> list[dict[str, str]]:
    with open(ROOT / "data" / name) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def evaluate(name: str, store: Callable[[str], None], lookup: Lookup, pairs: list[dict[str, str]]) -> dict[str, Any]:
    anchors = list(dict.fromkeys(p["anchor"] for p in pairs))  # stored once each, before any query
    for anchor in anchors:
        store(anchor)
    hits = wrong = false_hits = paraphrases = near = 0
    by_kind: dict[str, list[int]] = {}
    latencies: list[float] = []
    for pair in pairs:
        started = time.perf_counter()
        answer = lookup(pair["query"])
        latencies.append(time.perf_counter() - started)
        if pair["label"] == "paraphrase":
            paraphrases += 1
            hits += answer == pair["anchor"]
            wrong += answer is not None and answer != pair["anchor"]
        else:
            near += 1
            false_hits += answer is not None
            counts = by_kind.setdefault(pair["kind"], [0, 0])
            counts[0] += answer is not None
            counts[1] += 1
    latencies.sort()
    return {
        "cache": name,
        "paraphrase_hit_rate": round(hits / paraphrases, 4),
        "false_hit_rate": round((false_hits + wrong) / (near + paraphrases), 4),
        "near_miss_false_hit_rate": round(false_hits / near, 4),
        "wrong_anchor": wrong,
        "false_hits_by_kind": {k: f"{v[0]}/{v[1]}" for k, v in sorted(by_kind.items())},
        "lookup_ms_p50": round(statistics.median(latencies) * 1000, 3),
        "lookup_ms_p95": round(latencies[int(len(latencies) * 0.95)] * 1000, 3),
    }


def ours(name: str, index: VectorIndex, tmp: Path, **settings: Any) -> tuple[Callable[[str], None], Lookup, Any]:
    core = CacheCore(memory=True, disk=False, telemetry=False, semantic=True, **settings)
    tier = SemanticTier(core, index=index, embed=lambda text: bag_of_words_vector(text))

    def request(text: str) -> dict[str, Any]:
        return {"__door__": "bench", "model": "m", "messages": [{"role": "user", "content": text}]}

    def store(text: str) -> None:
        key = core.key_for(request(text))
        core.set(key, {"answer": text})
        tier.store(request(text), key)

    def lookup(text: str) -> str | None:
        found = tier.lookup(request(text))
        return found[0].value["answer"] if found is not None else None

    return store, lookup, core


def redisvl_peer(url: str) -> tuple[Callable[[str], None], Lookup]:
    from redisvl.extensions.cache.llm import SemanticCache
    from redisvl.utils.vectorize import CustomVectorizer

    vectorizer = CustomVectorizer(embed=lambda text: bag_of_words_vector(text))
    cache = SemanticCache(name="rvl_bench", redis_url=url, vectorizer=vectorizer, overwrite=True)

    def lookup(text: str) -> str | None:
        found = cache.check(prompt=text)
        return str(found[0]["response"]) if found else None

    return lambda text: cache.store(prompt=text, response=text) and None, lookup  # type: ignore[func-returns-value]


def litellm_peer(url: str, provider: StandInProvider) -> tuple[Callable[[str], None], Lookup]:
    os.environ["OPENAI_API_BASE"] = provider.base_url
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    from litellm.caching.redis_semantic_cache import RedisSemanticCache

    cache = RedisSemanticCache(
        redis_url=url, similarity_threshold=0.8, embedding_model="openai/bag-of-words", index_name="litellm_bench"
    )

    def lookup(text: str) -> str | None:
        found = cache.get_cache("bench", messages=[{"role": "user", "content": text}])
        return str(found["response"]) if isinstance(found, dict) else None

    def store(text: str) -> None:
        # LiteLLM stores str() of {"timestamp", "response"} and parses it back on a hit: same shape here.
        cache.set_cache(
            "bench", {"timestamp": time.time(), "response": text}, messages=[{"role": "user", "content": text}]
        )

    return store, lookup


def local_index_scale(rows: int = 10_000, dim: int = 256) -> dict[str, Any]:
    """Brute-force cosine over one partition of ``rows`` entries: is the embedded index fast enough?"""
    with tempfile.TemporaryDirectory() as tmp:
        index = LocalIndex(Path(tmp) / "s.sqlite3")
        rng = np.random.default_rng(7)
        vectors = rng.standard_normal((rows, dim)).astype(np.float32)
        for i in range(rows):
            index.add("p", f"k{i}", f"text {i}", vectors[i], None)
        started = time.perf_counter()
        index.search("p", vectors[0], 5, 0.0)  # first search loads the partition
        load_ms = (time.perf_counter() - started) * 1000
        times = []
        for i in range(200):
            started = time.perf_counter()
            index.search("p", vectors[i], 5, 0.0)
            times.append(time.perf_counter() - started)
        index.close()
    return {
        "rows": rows,
        "dim": dim,
        "first_search_ms": round(load_ms, 2),
        "search_ms_p50": round(statistics.median(times) * 1000, 3),
    }


def run(pairs: list[dict[str, str]], provider: StandInProvider, url: str | None, tmp: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for threshold in (0.7, 0.8, 0.9):
        store, lookup, core = ours("", LocalIndex(None), tmp, semantic_threshold=threshold)
        label = "ours (rules verifier, local index" + (", default" if threshold == 0.7 else "") + ")"
        results.append(evaluate(f"{label} @ {threshold}", store, lookup, pairs))
        core.close()
    store, lookup, core = ours("", LocalIndex(None), tmp, semantic_threshold=0.7, semantic_verifier="none")
    results.append(evaluate("ours without verifier (ablation) @ 0.7", store, lookup, pairs))
    core.close()
    if url is None:
        return results
    import redis

    client = redis.Redis.from_url(url)
    client.flushall()  # our own private server (start_search_server), never a shared one
    store, lookup, core = ours("", RedisIndex(lambda: client, "bench"), tmp, semantic_threshold=0.7)
    results.append(evaluate("ours (rules verifier, Redis index, default) @ 0.7", store, lookup, pairs))
    core.close()
    store, lookup = redisvl_peer(url)
    results.append(evaluate("RedisVL SemanticCache (default, distance 0.1)", store, lookup, pairs))
    store, lookup = litellm_peer(url, provider)
    results.append(evaluate("LiteLLM redis-semantic (similarity 0.8)", store, lookup, pairs))
    client.close()
    return results


def table(title: str, results: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"## {title}",
        "",
        "| cache | paraphrase hit rate | false-hit rate | near-miss false hits | lookup p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['cache']} | {r['paraphrase_hit_rate']:.1%} | {r['false_hit_rate']:.1%} | "
            f"{r['near_miss_false_hit_rate']:.1%} | {r['lookup_ms_p50']} | {r['lookup_ms_p95']} |"
        )
    return [*lines, ""]


def main() -> int:
    out: dict[str, Any] = {"datasets": {}, "notes": []}
    lines = ["# Semantic caching: same bag-of-words embedding for every cache (benchmarks/semantic.py)", ""]
    with tempfile.TemporaryDirectory() as tmp, StandInProvider() as provider:
        try:
            server = start_search_server()
        except SearchUnavailable as exc:
            out["notes"].append(f"Redis-backed caches not run: {exc}")
            server = None
        try:
            for title, filename in DATASETS.items():
                pairs = load_pairs(filename)
                results = run(pairs, provider, server.url if server is not None else None, Path(tmp))
                out["datasets"][title] = {"file": filename, "pairs": len(pairs), "results": results}
                lines += table(f"{title} set: {filename}, {len(pairs)} pairs", results)
        finally:
            if server is not None:
                server.stop()
    scale = local_index_scale()
    out["local_index_scale"] = scale
    results_dir = ROOT / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "semantic.json").write_text(json.dumps(out, indent=2) + "\n")
    lines += [
        f"Local index, one partition of {scale['rows']} x {scale['dim']}-dim vectors: search p50 "
        f"{scale['search_ms_p50']} ms (first search, loading the partition: {scale['first_search_ms']} ms).",
        *out["notes"],
    ]
    (results_dir / "semantic.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
