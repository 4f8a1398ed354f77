"""Train the zstd dictionary shipped with the package (``dspy_tiered_cache/llm-json-<n>.zdict``).

    python benchmarks/memory_train_dictionary.py [--out dspy_tiered_cache/llm-json-1.zdict] [--size 65536]

Trained on stored LLM answers built from the Python Language Reference topics that CPython ships
(``pydoc_data.topics``, PSF License), wrapped as both doors store a LiteLLM ``ModelResponse`` (see
``memory_corpus.py``). It prints how the dictionary does on held-out answers (installed packages' README text,
never seen in training) against plain zstd, per answer size.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_corpus import answers, held_out_texts, stored_payloads, training_texts

from dspy_tiered_cache.dictionary import LEVEL, SHIPPED_ID, Dictionary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--k", type=int, default=1024, help="zstd COVER segment size (no parameter search)")
    args = parser.parse_args()
    paragraphs = training_texts()
    rng = random.Random(7)
    texts = [next(answers(paragraphs, rng.choice((300, 600, 1000, 1500, 2500, 4000)), 1, seed=i)) for i in
             range(args.samples)]  # fmt: skip
    samples = list(stored_payloads(texts, seed=1))
    raw = zstandard.train_dictionary(args.size, samples, k=args.k, d=8, level=LEVEL, threads=1).as_bytes()
    trained = Dictionary(SHIPPED_ID, raw)
    plain = zstandard.ZstdCompressor(level=LEVEL)
    held = held_out_texts()
    print(f"trained on {len(samples)} answers ({sum(map(len, samples)):,} bytes); dictionary {len(raw):,} bytes")
    for size in (500, 1500, 4000):
        payloads = list(stored_payloads(list(answers(held, size, 200, seed=size)), seed=size))
        total = sum(map(len, payloads))
        with_dict = sum(len(trained.compress(p)) for p in payloads)
        without = sum(len(plain.compress(p)) for p in payloads)
        print(f"held-out ~{size} B answers: json {total / 200:.0f} B, zstd {without / 200:.0f} B, "
              f"zstd+dictionary {with_dict / 200:.0f} B ({with_dict / total:.2f}x)")  # fmt: skip
    if args.out is not None:
        args.out.write_bytes(raw)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
