"""Several worker processes sharing one Redis: each answer is computed once for all of them.

Four processes start at the same moment and ask the same five questions. Within a process, concurrent identical
misses wait for one leader; across processes the leader holds a short lease in Redis and the others poll Redis
for its answer. So the provider sees five calls, not twenty, and a second round is served from each process's
memory tier. Configuration reaches the workers the way it reaches a real deployment: environment variables.

    python examples/multiprocess_workers.py                              # starts a private Redis server
    python examples/multiprocess_workers.py --redis-url redis://localhost:6379/0
    python examples/multiprocess_workers.py --model openai/gpt-4o-mini   # real model (OPENAI_API_KEY)

The LLM function here is a plain HTTP call (httpx) to an OpenAI-compatible endpoint, cached with ``@cached``.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from contextlib import ExitStack
from typing import Any

import httpx
from _common import endpoint, parse_args

from dspy_tiered_cache.decorator import cached

QUESTIONS = [f"Question {i}: what does a cache tier {i} do?" for i in range(5)]
WORKERS = 4
NAMESPACE = "workers-example"
_upstream_calls = 0  # per process: how many times this worker really called the model


@cached(namespace=NAMESPACE)  # no core=: the process-wide default core, configured by DSPY_TIERED_CACHE_* env vars
def ask(question: str, model: str, api_base: str, api_key: str | None = None) -> dict[str, Any]:
    global _upstream_calls
    _upstream_calls += 1
    response = httpx.post(
        f"{api_base.rstrip('/')}/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": question}]},
        headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        timeout=60,
    )
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def worker(index: int, start: Any, results: Any, model: str, api_base: str, api_key: str | None) -> None:
    """One process: wait for the others, ask every question twice, report what served each call."""
    from dspy_tiered_cache.report import report

    ask.cache.core.key_for({})  # connect and read the namespace generation before the race starts
    start.wait()  # every worker is up: they now ask the same questions at the same moment
    started = time.perf_counter()
    for question in QUESTIONS:
        ask(question, model, api_base, api_key)
    first_round = time.perf_counter() - started
    for question in QUESTIONS:
        ask(question, model, api_base, api_key)
    levels = report(ask).hits_by_level
    ask.cache.core.flush()
    results.put({"worker": index, "pid": os.getpid(), "upstream": _upstream_calls, "seconds": first_round, **levels})


def main() -> None:
    args = parse_args(__doc__ or "", **{"--redis-url": {"help": "Redis to share (default: a private server)"}})
    with ExitStack() as stack:
        ep = stack.enter_context(endpoint(args))
        redis_url = args.redis_url
        if not redis_url:
            from dspy_tiered_cache.testing.redis_server import RedisServer

            redis_url = stack.enter_context(RedisServer()).url
            print(f"started a private Redis server at {redis_url}")
        # Workers read their settings from the environment, like a real deployment.
        os.environ["DSPY_TIERED_CACHE_REDIS_URL"] = redis_url
        api_base = ep.api_base or "https://api.openai.com/v1"
        api_key = ep.api_key or os.environ.get("OPENAI_API_KEY")
        print(f"model: {ep.describe()}")
        ask.cache.clear()  # this run starts cold: invalidate the example's namespace (O(1)) in Redis

        context = multiprocessing.get_context("spawn")  # fresh interpreters, as separate services would be
        start, queue = context.Barrier(WORKERS), context.Queue()
        processes = [
            context.Process(target=worker, args=(i, start, queue, ep.bare_model, api_base, api_key))
            for i in range(WORKERS)
        ]
        for process in processes:
            process.start()
        results = [queue.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(30)

        print(f"{WORKERS} processes x {len(QUESTIONS)} questions x 2 rounds = {WORKERS * len(QUESTIONS) * 2} calls")
        print(f"{'worker':>6}  {'upstream':>8}  {'waited*':>7}  {'from redis':>10}  {'from memory':>11}  round 1")
        for r in sorted(results, key=lambda r: r["worker"]):
            print(
                f"{r['worker']:>6}  {r['upstream']:>8}  {r['joined']:>7}  {r.get('l2', 0):>10}  {r.get('l1', 0):>11}"
                f"  {r['seconds']:.2f} s"
            )
        print("* waited for the same call in flight elsewhere (here or in another worker), then read its answer")
        total = sum(r["upstream"] for r in results)
        print(f"upstream calls in total: {total} for {len(QUESTIONS)} distinct questions")
        if ep.upstream_calls is not None:
            print(f"stand-in provider received: {ep.upstream_calls} requests")


if __name__ == "__main__":
    main()
