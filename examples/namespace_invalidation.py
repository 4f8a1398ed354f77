"""Namespaces: make cached answers unreachable in O(1) when the model or prompt behind them changes.

A cache key is the request. When the answer to the *same* request changes — the provider upgrades the model
behind the same name, a prompt template you ship in a system message is fixed, a post-processing bug is found —
the cache keeps serving the old answers until told otherwise. Two ways to tell it:

1. ``core.invalidate_namespace(ns)``: one counter increment in the shared tier, whatever the number of entries;
   every process stops seeing the old entries (they expire or are reclaimed by ``dspy-tiered-cache clear``).
2. a namespace per version (``namespace=f"qa-{VERSION}"``): deploying v2 starts cold without touching v1's
   entries, and rolling back to v1 is warm at once.

    python examples/namespace_invalidation.py                       # local stand-in providers, no key needed
    python examples/namespace_invalidation.py --model openai/gpt-4o-mini   # real model (OPENAI_API_KEY)
"""

from __future__ import annotations

import os
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any

# Before LiteLLM's import (DSPy imports it): offline, it would otherwise try to download its price map.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
from _common import LATENCY, Endpoint, endpoint, parse_args

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations.dspy import CachedLM

warnings.filterwarnings("ignore", category=DeprecationWarning)

QUESTIONS = ["Which tier answers first?", "What does single-flight prevent?", "Why hash the request?"]


def run(program: Any, lm: Any, ep: Endpoint) -> tuple[int, list[str]]:
    """Answer every question with ``lm``; returns (upstream calls, answers)."""
    before = ep.upstream_calls or 0
    with dspy.context(lm=lm):
        answers = [program(question=q).answer for q in QUESTIONS]
    return (ep.upstream_calls or 0) - before, answers


def main() -> None:
    args = parse_args(__doc__ or "")
    with ExitStack() as stack:
        ep = stack.enter_context(endpoint(args))
        tmp = stack.enter_context(tempfile.TemporaryDirectory())
        core = stack.enter_context(CacheCore(disk_path=Path(tmp) / "cache.sqlite3"))
        program = dspy.ChainOfThought("question -> answer")
        print(f"model: {ep.describe()}")

        def lm_for(e: Endpoint, namespace: str) -> CachedLM:
            return CachedLM(
                dspy.LM(e.model, api_base=e.api_base, api_key=e.api_key, num_retries=0), core, namespace=namespace
            )

        print("\n1. the provider upgrades the model behind the same name")
        calls, old = run(program, lm_for(ep, "qa"), ep)
        print(f"   first run:                       {calls} upstream calls")
        upgraded = ep
        if ep.provider is not None:  # a second stand-in whose answers differ, like a new model version would
            from dspy_tiered_cache.testing.provider import StandInProvider

            new_provider = stack.enter_context(StandInProvider(latency=LATENCY, salt="model-update"))
            upgraded = Endpoint(ep.model, new_provider.base_url, ep.api_key, new_provider)
        calls, same = run(program, lm_for(upgraded, "qa"), upgraded)
        print(f"   after the upgrade, same requests: {calls} upstream calls, answers unchanged: {same == old} (stale)")
        generation = core.invalidate_namespace("qa")
        print(f"   core.invalidate_namespace('qa') -> generation {generation} (O(1) at any size)")
        calls, new = run(program, lm_for(upgraded, "qa"), upgraded)
        print(f"   after invalidation:              {calls} upstream calls, answers changed: {new != old}")

        print("\n2. a namespace per version: deploy v2, then roll back to v1")
        for version in ("v1", "v1", "v2", "v1"):
            calls, _ = run(program, lm_for(upgraded, f"qa-{version}"), upgraded)
            print(f"   serving {version}: {calls} upstream calls")
        core.flush()


if __name__ == "__main__":
    main()
