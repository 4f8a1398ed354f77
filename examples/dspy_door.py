"""The DSPy door: wrap the LM in ``CachedLM`` and nothing else in the program changes.

Shows: a ``dspy.ChainOfThought`` program run cold then warm, ``dspy.Parallel`` over duplicate inputs making one
upstream call per distinct question (single-flight), a program copy sharing the cache, and the stats report.

    python examples/dspy_door.py                       # local stand-in provider, no key needed
    python examples/dspy_door.py --model openai/gpt-4o-mini   # real model (OPENAI_API_KEY)
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path

# Before LiteLLM's import (DSPy imports it): offline, it would otherwise try to download its price map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from _common import endpoint, parse_args, upstream

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations.dspy import CachedLM
from dspy_tiered_cache.report import report

warnings.filterwarnings("ignore", category=DeprecationWarning)

QUESTIONS = ["What is a cache stampede?", "Why put a memory tier in front of Redis?", "What is a TTL?"]


def main() -> None:
    args = parse_args(__doc__ or "")
    with endpoint(args) as ep, tempfile.TemporaryDirectory() as tmp:
        # Memory + the embedded disk tier in a scratch file; CachedLM(lm) alone reads DSPY_TIERED_CACHE_* env vars
        # (e.g. DSPY_TIERED_CACHE_REDIS_URL) and uses ~/.cache/dspy_tiered_cache/ by default.
        core = CacheCore(disk_path=Path(tmp) / "cache.sqlite3")
        lm = CachedLM(dspy.LM(ep.model, api_base=ep.api_base, api_key=ep.api_key, num_retries=0), core)
        dspy.configure(lm=lm)
        qa = dspy.ChainOfThought("question -> answer")
        print(f"model: {ep.describe()}")

        for label in ("cold", "warm"):
            before = ep.upstream_calls
            started = time.perf_counter()
            answers = [qa(question=q).answer for q in QUESTIONS]
            elapsed = time.perf_counter() - started
            print(f"{label}: {len(answers)} questions in {elapsed * 1000:7.1f} ms  {upstream(ep, before)}")

        # Eight parallel calls over two new distinct questions: concurrent identical misses share one call.
        batch = [dspy.Example(question=q).with_inputs("question") for q in ["What is LRU?", "What is LFU?"] * 4]
        before = ep.upstream_calls
        results = dspy.Parallel(num_threads=8, disable_progress_bar=True)([(qa, ex) for ex in batch])
        print(f"dspy.Parallel: {len(results)} calls, {upstream(ep, before)} (one per distinct question)")

        copy = qa.deepcopy()  # optimizers copy programs: the copy shares the LM and so the cache
        before = ep.upstream_calls
        copy(question=QUESTIONS[0])
        print(f"a deep copy of the program: {upstream(ep, before)}")

        core.flush()
        print()
        print(report(lm))


if __name__ == "__main__":
    main()
