"""``dspy-tiered-cache demo``: what the cache does for a DSPy program, on a machine with nothing set up.

Six questions go through ``dspy.ChainOfThought`` twice, through ``CachedLM`` on the embedded default cache
(memory + the disk file; Redis with ``--redis-url``). With no model given, the LM talks to the local stand-in
provider (a real OpenAI-compatible HTTP server on loopback, with a model-like delay and token counts), so no API
key and no network are needed; ``--model`` (and the provider's key in its usual env var) uses a real model.

The demo writes to the real default disk file, under its own namespace, so a later ``demo --keep`` (a new
process with an empty memory tier) is served from disk. Without ``--keep`` the namespace is invalidated first
(O(1), nothing else in the cache is touched), so the first run's "cold" time is honest.
"""

from __future__ import annotations

import os
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.settings import mask_url
from dspy_tiered_cache.stats import model_prices

__all__ = ["DEMO_NAMESPACE", "QUESTIONS", "DemoError", "model_prices", "run_demo"]

DEMO_NAMESPACE = "dtc-demo"
DEFAULT_MODEL = "openai/gpt-4o-mini"
#: Prices shown for the stand-in's calls: what the same tokens cost on the model it imitates.
PRICED_AS = "gpt-4o-mini"
QUESTIONS = (
    "What is the capital of Australia?",
    "Why is the sky blue?",
    "How many legs does a spider have?",
    "What does HTTP stand for?",
    "Who wrote Pride and Prejudice?",
    "At what temperature does water boil at sea level, in Celsius?",
)


class DemoError(Exception):
    """Something the user can fix (an unreachable Redis, a missing API key); reported as one line."""


@dataclass
class RunResult:
    seconds: float
    upstream: int
    served: dict[str, int]
    answers: list[str]


def _check_real_model(model: str, api_base: str | None) -> None:
    """Fail before the first call, with the variable to set, when the model's key is missing."""
    if api_base:  # a self-hosted endpoint may need no key at all
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    check = litellm.validate_environment(model=model)
    if not check.get("keys_in_environment"):
        missing = ", ".join(check.get("missing_keys") or []) or "the provider's API key"
        raise DemoError(f"--model {model} needs {missing} in the environment (or pass --api-base)")


def _run(program: Any, lm: Any, core: CacheCore, provider: Any) -> RunResult:
    before = {name: t.hits for name, t in core.stats.tiers.items()}
    misses_before = core.stats.misses
    requests_before = provider.request_count if provider is not None else 0
    started = time.perf_counter()
    answers = [str(program(question=q).answer) for q in QUESTIONS]
    seconds = time.perf_counter() - started
    served = {name: t.hits - before[name] for name, t in core.stats.tiers.items()}
    # The stand-in counts the requests it really received; a real provider is counted by our misses.
    upstream = provider.request_count - requests_before if provider is not None else core.stats.misses - misses_before
    return RunResult(seconds, upstream, served, answers)


def run_demo(
    *,
    redis_url: str | None = None,
    disk_path: Path | None = None,
    model: str | None = None,
    api_base: str | None = None,
    latency: float = 0.4,
    keep: bool = False,
    out: Any = None,
) -> int:
    """Run the demo and print its report; returns the exit code."""
    write = out or (lambda text="": print(text, flush=True))
    if latency < 0:
        raise DemoError("--latency must be >= 0 seconds")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if model is not None:
        _check_real_model(model, api_base)
    overrides: dict[str, Any] = {"namespace": DEMO_NAMESPACE}
    if redis_url:
        overrides["redis_url"] = redis_url
    if disk_path is not None:
        overrides["disk_path"] = disk_path
    with ExitStack() as stack:
        core = stack.enter_context(CacheCore(**overrides))
        for tier in core.tiers:
            if tier.remote:
                health = tier.health()
                if not health.ok:
                    raise DemoError(f"tier {tier.name} is unreachable: {health.detail}")
        if not keep:
            core.invalidate_namespace(DEMO_NAMESPACE)

        provider = None
        if model is None:
            from dspy_tiered_cache.testing.provider import StandInProvider

            provider = stack.enter_context(StandInProvider(latency=latency))
            model, api_base, api_key = DEFAULT_MODEL, provider.base_url, "sk-stand-in-not-a-key"
        else:
            api_key = None

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import dspy

            from dspy_tiered_cache.integrations.dspy import CachedLM

            lm_kwargs: dict[str, Any] = {"num_retries": 0 if provider is not None else 3}
            if api_base:
                lm_kwargs["api_base"] = api_base
            if api_key:
                lm_kwargs["api_key"] = api_key
            lm = CachedLM(dspy.LM(model, **lm_kwargs), core, namespace=DEMO_NAMESPACE)
            program = dspy.ChainOfThought("question -> answer")
            with dspy.context(lm=lm):
                try:
                    runs = [_run(program, lm, core, provider) for _ in range(2)]
                except Exception as exc:
                    raise DemoError(f"the LM call failed: {type(exc).__name__}: {exc}") from None
        core.flush(10.0)
        _report(write, core, runs, model, provider, latency, keep)
    return 0


def _report(
    write: Any, core: CacheCore, runs: list[RunResult], model: str, provider: Any, latency: float, keep: bool
) -> None:
    s = core.settings
    tiers = [t.name for t in core.tiers]
    where = []
    for tier in core.tiers:
        if tier.name == "disk":
            where.append(f"disk ({s.disk_path})")
        elif tier.name == "l2":
            where.append(f"redis ({mask_url(s.redis_url_value)})")
        else:
            where.append("memory")
    state = "kept from earlier runs" if keep else "emptied first, so run 1 is cold"
    source = (
        f"{model} on the local stand-in provider ({latency:.2f} s per call, no API key, no network)"
        if provider is not None
        else f"{model} (real provider)"
    )
    write("dspy-tiered-cache demo")
    write(f"  program  dspy.ChainOfThought('question -> answer') over {len(QUESTIONS)} questions, run twice")
    write(f"  model    {source}")
    write(f"  cache    {' + '.join(where)}")
    write(f"           namespace {DEMO_NAMESPACE!r} ({state})")
    write()
    write(f"  {'run':<5}{'time':<10}{'upstream calls':<16}served by the cache ({' / '.join(tiers)})")
    for i, run in enumerate(runs, 1):
        served = " / ".join(str(run.served.get(name, 0)) for name in tiers)
        write(f"  {i:<5}{_duration(run.seconds):<10}{run.upstream:<16}{served}")
    write()
    cold, warm = runs
    same = "identical answers" if warm.answers == cold.answers else "DIFFERENT answers"
    if cold.upstream and not warm.upstream:
        speedup = cold.seconds / max(warm.seconds, 1e-6)
        write(f"run 2 was {speedup:,.0f}x faster than run 1: every answer came from the cache ({same})")
    elif not cold.upstream:
        first = max(cold.served, key=lambda name: cold.served[name])
        write(
            f"both runs were served by the cache: run 1 by {first} (a new process starts with an empty memory "
            f"tier), run 2 by memory ({same})"
        )
    else:
        write(f"run 2 still made {warm.upstream} upstream calls ({same})")
    snap = core.stats.snapshot()
    prompt, completion = snap["prompt_tokens_saved"], snap["completion_tokens_saved"]
    priced_as = PRICED_AS if provider is not None else model
    prices = model_prices(priced_as)
    if prices is not None:
        dollars = prompt * prices[0] + completion * prices[1]
        money = f" = ${dollars:.6f} at {priced_as} prices (LiteLLM's price map)"
    else:
        money = " (no price known for this model)"
    calls = len(QUESTIONS) * len(runs)
    avoided = calls - sum(r.upstream for r in runs)
    write(
        f"saved: {avoided} of {calls} LM calls, {prompt + completion:,} tokens ({prompt:,} prompt + "
        f"{completion:,} completion){money}"
    )
    label = " (stand-in text)" if provider is not None else ""
    write(f"sample{label}: {QUESTIONS[0]!r} -> {_short(warm.answers[0])!r}")
    if not keep:
        write(
            "next: `dspy-tiered-cache demo --keep` starts a new process whose run 1 is served by "
            f"{'Redis' if 'l2' in tiers else 'the disk file'}."
        )


def _duration(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _short(text: str, limit: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
