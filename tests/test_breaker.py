"""A closed cache stops probing: a breaker's background probe must not outlive the cache that scheduled it."""

from __future__ import annotations

import threading
import time

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.breaker import CircuitBreaker
from dspy_tiered_cache.testing.redis_server import refused_port


def test_a_closed_breaker_runs_no_scheduled_probe() -> None:
    ran = threading.Event()
    breaker = CircuitBreaker(failures=1, reset_s=0.05, probe=ran.set)
    breaker.failure()  # opens, and schedules a probe 50 ms from now
    breaker.close()
    assert not ran.wait(0.5)  # ten reset periods: the probe would have run by now
    assert breaker.probes == 0


def test_closing_the_cache_ends_the_probes_of_a_dead_redis() -> None:
    url = f"redis://127.0.0.1:{refused_port()}/0"
    core = CacheCore(redis_url=url, disk=False, breaker_failures=1, breaker_reset_s=0.05)
    breaker = core.breakers["l2"]
    deadline = time.monotonic() + 5.0
    while breaker.probes < 1 and time.monotonic() < deadline:  # refused: the breaker opens, then probes
        core.get(core.key_for({"q": 1}))
        time.sleep(0.01)
    assert breaker.probes >= 1
    core.close()
    probes = breaker.probes
    time.sleep(0.5)  # ten reset periods
    assert breaker.probes <= probes + 1  # at most one probe that had already started
    timer = breaker._timer  # this core's probe timer (other tests' unclosed cores may still have theirs)
    assert timer is None or not timer.is_alive()
