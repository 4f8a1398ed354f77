"""How far can a cut-off on the learned head go? The best any cut-off could do, chosen with the answers known.

    pip install torch==2.13.0 && pip install -e '.[semantic-bench]'
    HF_HUB_OFFLINE=1 python benchmarks/semantic_ceiling.py --data DATA [--sets ...] [--limit 400]

For each set, every pair is scored twice with the tier's embedding model: by the sentence cosine alone (what
RedisVL's SemanticCache thresholds) and by the shipped learned head's probability (``LearnedVerifier.judge``, the
very function the tier runs; 0 below the head's cosine floor or for a changed frame). For each score this prints
the duplicates served at the cut-off that serves at most 1 % of the non-duplicates, chosen *on the set itself*
(an oracle: no real default can do better on that set), and the ratio of the two. The issue's goal asks a default
to serve twice what RedisVL tuned to 1 % serves: if even the head's oracle cut-off stays under 2x on a set, no
cut-off of this head can meet the goal there, and what would is a better pair scorer, not a better cut-off.
The shipped cut-off's own figures are printed beside them (they match ``semantic.py``'s "ours, defaults" rows).

``--geometry`` adds the embedding's geometry as a scorer: the cosine after removing the mean of the tune sets'
texts and their top principal directions ("all-but-the-top"; the directions are fitted on the tune sets only),
for k = 0, 1, 3 and 10 directions, with the same oracle cut-off. ``--cross-encoder DIR`` adds a cross-encoder
trained by ``semantic_cross_train.py`` as a scorer (0 below its cosine floor), with the same oracle cut-off: how
well it ranks pairs, apart from how well its tune-chosen cut-off carries.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import semantic  # noqa: E402
import semantic_data  # noqa: E402

from dspy_tiered_cache.semantic.learned import LearnedVerifier  # noqa: E402


def oracle_served(scores: Sequence[float], labels: Sequence[bool]) -> tuple[int, int]:
    """(duplicates, non-duplicates) served by the cut-off serving the most duplicates and at most 1 % of the
    non-duplicates: the benchmark's own tuning of RedisVL (``semantic.tuned_threshold``), on ``1 - score``."""
    distances = [1.0 - s for s in scores]
    limit = semantic.tuned_threshold(distances, labels)
    served = [(d <= limit, dup) for d, dup in zip(distances, labels, strict=True)]
    return sum(ok and dup for ok, dup in served), sum(ok and not dup for ok, dup in served)


def scores(pairs: Sequence[semantic_data.Pair], vectors: Any) -> tuple[list[float], list[float], list[bool]]:
    """(cosine, the head's score, the shipped default's verdict) per pair; the cached side is ``a``, the asker ``b``
    (as in ``semantic.py``)."""
    verifier = LearnedVerifier(vectors.model_name, embed_words=vectors.many)
    if verifier.head is None:
        raise SystemExit(f"no learned head ships for {vectors.model_name}")
    floor, cutoff = verifier.head.cosine_floor, verifier.head.cutoff
    vectors.warm([t for p in pairs for t in (p.a, p.b)])
    vectors.warm(semantic.verifier_texts(pairs))
    cosines, heads, shipped = [], [], []
    for pair in pairs:
        cosine = float(np.dot(vectors(pair.a), vectors(pair.b)))
        p = verifier.judge(pair.b, pair.a)[0] if cosine >= floor else None
        cosines.append(cosine)
        heads.append(p if p is not None else 0.0)
        shipped.append(p is not None and p >= cutoff)
    return cosines, heads, shipped


def geometry(data: Path, vectors: Any, per_set: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the principal directions (rows, strongest first) of the tune sets' texts."""
    texts = [t for name in semantic_data.TUNE for p in semantic.sample(semantic_data.load(data, name), per_set)
             for t in (p.a, p.b)]  # fmt: skip
    matrix = np.stack(vectors.many(list(dict.fromkeys(texts)))).astype(np.float64)
    mean = matrix.mean(axis=0)
    _, _, directions = np.linalg.svd(matrix - mean, full_matrices=False)
    return mean, directions


def projected_cosines(
    pairs: Sequence[semantic_data.Pair], vectors: Any, mean: np.ndarray, top: np.ndarray
) -> list[float]:
    out = []
    for pair in pairs:
        u, v = (np.asarray(vectors(t), dtype=np.float64) - mean for t in (pair.a, pair.b))
        if len(top):
            u, v = u - top.T @ (top @ u), v - top.T @ (top @ v)
        out.append(float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-12)))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sets", nargs="+", default=list(semantic_data.REPORT))
    parser.add_argument("--limit", type=int, default=400, help="pairs per set (the same sample as semantic.py)")
    parser.add_argument("--model", default=None, help="sentence-transformers model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--geometry", action="store_true", help="also the cosine after all-but-the-top")
    parser.add_argument("--cross-encoder", help="also a cross-encoder directory from semantic_cross_train.py")
    a = parser.parse_args(argv)
    vectors = semantic.Vectors(a.model or semantic_data.default_model())
    fitted = geometry(a.data, vectors) if a.geometry else None
    cross = None
    if a.cross_encoder:
        from semantic_cross_train import CrossVerifier

        cross = CrossVerifier(a.cross_encoder)
    print(f"model {vectors.model_name}; cut-offs chosen on each set itself (oracle), at most 1 % non-duplicates")
    print("| set | pairs (dup.) | cosine = RedisVL tuned to 1 % | learned head, best cut-off | head / cosine "
          "| learned head, shipped cut-off |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name in a.sets:
        pairs = semantic.sample(semantic_data.load(a.data, name), a.limit)
        labels = [p.duplicate for p in pairs]
        dups, nondups = sum(labels), len(labels) - sum(labels)
        cosines, heads, shipped = scores(pairs, vectors)
        cos_dup, cos_non = oracle_served(cosines, labels)
        head_dup, head_non = oracle_served(heads, labels)
        ship_dup = sum(1 for ok, dup in zip(shipped, labels, strict=True) if ok and dup)
        ship_non = sum(1 for ok, dup in zip(shipped, labels, strict=True) if ok and not dup)

        def pct(k: int, n: int) -> str:
            return f"{100 * k / n:.1f} %" if n else "-"

        ratio = f"{head_dup / cos_dup:.2f}x" if cos_dup else "-"
        print(
            f"| {name} | {len(pairs)} ({dups}) | {pct(cos_dup, dups)} / {pct(cos_non, nondups)} | "
            f"{pct(head_dup, dups)} / {pct(head_non, nondups)} | {ratio} | "
            f"{pct(ship_dup, dups)} / {pct(ship_non, nondups)} |",
            flush=True,
        )
        if cross is not None:
            crossed = [
                cross.score(p.b, p.a) if c >= cross.cosine_floor else 0.0 for p, c in zip(pairs, cosines, strict=True)
            ]
            served = oracle_served(crossed, labels)
            line = f"|   {name}, cross-encoder | | {pct(served[0], dups)} / {pct(served[1], nondups)} | "
            print(line + f"{served[0] / max(cos_dup, 1):.2f}x vs cosine | |", flush=True)
        if fitted is not None:
            for k in (0, 1, 3, 10):
                served = oracle_served(projected_cosines(pairs, vectors, fitted[0], fitted[1][:k]), labels)
                line = f"|   {name}, mean removed and {k} directions | | {pct(served[0], dups)} / "
                line += f"{pct(served[1], nondups)} | {served[0] / max(cos_dup, 1):.2f}x vs cosine | |"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
