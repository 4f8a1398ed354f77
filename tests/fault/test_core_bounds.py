"""Single-call bounds and guarantees behind the fault table, pinned deterministically.

Each test here reproduces one behaviour the scenarios surfaced, in the smallest setting that shows it. Those
marked ``xfail(strict=True)`` are known core issues reported to the lead: when the core is fixed they XPASS,
which fails the run on purpose so the marker gets removed.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any

from support.faults import (
    REDIS_TIMEOUT_MS,
    answer_text,
    ask,
    core_settings,
    prompt_for,
    reference_answers,
    request_for,
)

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer


def test_one_call_on_a_hung_redis_costs_at_most_one_operation_timeout(
    private_redis: RedisServer, provider: StandInProvider
) -> None:
    """Worst case: the generation is due for a re-read, then the GET, then the lease's SET NX. The first timeout
    must open the breaker so the other two are skipped (before the fix: 3 x redis_timeout_ms in one call)."""
    core = CacheCore(**core_settings(private_redis.url, generation_refresh_s=0.2))
    request = request_for(prompt_for(1, "hung"))
    core.key_for(request)  # connected and the generation known, as in a warm worker
    private_redis.pause()
    try:
        time.sleep(0.25)  # the generation is due for its periodic re-read
        began = time.perf_counter()
        key = core.key_for(request)
        value, level = core.get_or_compute(key, lambda: ask(provider.base_url, request))
        elapsed_ms = (time.perf_counter() - began) * 1000
    finally:
        private_redis.resume()
        core.close()
    assert level == "miss" and answer_text(value) is not None
    assert elapsed_ms <= REDIS_TIMEOUT_MS * 1.5, f"one call took {elapsed_ms:.0f} ms on a hung Redis"


def test_a_paused_redis_costs_nothing_once_the_breaker_is_open(
    private_redis: RedisServer, provider: StandInProvider
) -> None:
    """The other half of the bound, which holds: after the breaker opened, calls do not wait on Redis."""
    core = CacheCore(**core_settings(private_redis.url, breaker_reset_s=60))
    requests = [request_for(prompt_for(i, "open")) for i in range(12)]
    keys = [core.key_for(r) for r in requests]
    private_redis.pause()
    try:
        timings = []
        for key, request in zip(keys, requests, strict=True):
            began = time.perf_counter()
            value, _ = core.get_or_compute(key, functools.partial(ask, provider.base_url, request))
            timings.append(time.perf_counter() - began)
            assert answer_text(value) is not None
    finally:
        private_redis.resume()
        core.close()
    assert core.breakers["l2"].state == "open"
    assert max(timings[4:]) < 0.05, timings  # an upstream call over loopback, no Redis timeout


def test_a_lease_stranded_by_a_hung_redis_does_not_stall_other_instances(
    private_redis: RedisServer, provider: StandInProvider
) -> None:
    settings = core_settings(private_redis.url, lock_lease_s=30.0)
    leader, other = CacheCore(**settings), CacheCore(**settings)
    request = request_for(prompt_for(1, "stranded"))
    key = leader.key_for(request)
    assert other.key_for(request) == key
    unrelated = [leader.key_for(request_for(prompt_for(i, "unrelated"))) for i in range(3)]

    def compute_while_redis_hangs() -> dict[str, Any]:
        private_redis.pause()
        for k in unrelated:  # the leader's other traffic meets the hung server: its breaker opens
            leader.get(k)
        return ask(provider.base_url, request)

    leader.get_or_compute(key, compute_while_redis_hangs)
    private_redis.resume()
    # Redis 7: the lease lives on the entry key itself; older servers: on a separate lease key.
    lease_ttl_ms = private_redis.client().pttl(key), private_redis.client().pttl(key.replace(":e:", ":lock:", 1))

    answers: list[Any] = []

    def ask_again() -> None:
        # Still polling when the test ends (the bug): it then meets a stopped Redis and provider; stay quiet.
        with contextlib.suppress(Exception):
            answers.append(other.get_or_compute(key, lambda: ask(provider.base_url, request)))

    worker = threading.Thread(target=ask_again, daemon=True)
    began = time.perf_counter()
    worker.start()
    worker.join(3.0)
    waited = time.perf_counter() - began
    leader.close()
    other.close()
    assert answers, f"another instance was still waiting after {waited:.1f} s (lease TTL left: {lease_ttl_ms} ms)"
    assert answer_text(answers[0][0]) is not None


def test_a_redis_restart_does_not_resurrect_invalidated_answers(private_redis: RedisServer) -> None:
    with StandInProvider(salt="model-v1") as old_model, StandInProvider(salt="model-v2") as new_model:
        request = request_for(prompt_for(1, "which model"))
        fresh = reference_answers([request["messages"][0]["content"]], salt="model-v2")
        settings = core_settings(private_redis.url, generation_refresh_s=0.1, breaker_reset_s=0.2)
        admin = CacheCore(**settings)
        # This worker misses invalidation messages (as after a dropped connection): generations must cover it.
        worker = CacheCore(**{**settings, "invalidation_pubsub": False})
        worker.get_or_compute(worker.key_for(request), lambda: ask(old_model.base_url, request))
        admin.invalidate_namespace()  # the model changed: every cached answer is stale
        time.sleep(0.15)
        value, _ = worker.get_or_compute(worker.key_for(request), lambda: ask(new_model.base_url, request))
        assert answer_text(value) == fresh[request["messages"][0]["content"]]  # the bound holds before the restart
        private_redis.restart()
        time.sleep(0.5)  # breaker reset and generation refresh
        answers = []
        for _ in range(3):
            value, level = worker.get_or_compute(worker.key_for(request), lambda: ask(new_model.base_url, request))
            answers.append((answer_text(value), level))
            time.sleep(0.15)
        admin.close()
        worker.close()
    stale = [a for a in answers if a[0] != fresh[request["messages"][0]["content"]]]
    assert stale == [], f"served an answer invalidated before the Redis restart: {stale}"
