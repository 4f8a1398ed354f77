"""How a tier failure is accounted for: the breaker, the span, the counters, and one log line a minute.

This is half of "a broken tier is a miss, never an exception": the core catches every tier exception and hands
it here; nothing is raised back.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from dspy_tiered_cache import telemetry
from dspy_tiered_cache.breaker import CircuitBreaker
from dspy_tiered_cache.codec import CorruptEntry
from dspy_tiered_cache.stats import Stats
from dspy_tiered_cache.tiers.base import Tier

log = logging.getLogger("dspy_tiered_cache")


class FailureLog:
    def __init__(self, stats: Stats, breakers: dict[str, CircuitBreaker]) -> None:
        self.stats = stats
        self.breakers = breakers
        self._warned: dict[str, float] = {}

    def tier_failed(self, tier: Tier, action: str, exc: BaseException, started: float | None = None) -> None:
        breaker = self.breakers.get(tier.name)
        if breaker is not None and tier.is_outage(exc):
            breaker.failure(trip=tier.is_timeout(exc))
        telemetry.mark_tier_error(tier.name, exc)
        self.stats.record(
            tier.name,
            hit=False if action == "read from" else None,
            error=True,
            seconds=None if started is None else time.perf_counter() - started,
        )
        state = f" (circuit {breaker.state})" if breaker is not None else ""
        self.warn_once(
            f"{tier.name}:{type(exc).__name__}",
            "dspy_tiered_cache: cannot %s tier %s (%r): %s: %s%s; serving as a miss",
            action,
            tier.name,
            tier,
            type(exc).__name__,
            exc,
            state,
        )

    def corrupt(self, tier: Tier, key: str, exc: CorruptEntry) -> None:
        self.stats.record(tier.name, hit=False, corrupt=True)
        log.warning(
            "dspy_tiered_cache: corrupt entry in tier %s (%s): %s; dropping it and serving a miss",
            tier.name,
            key.rsplit(":", 1)[-1][:12],
            exc,
        )
        try:
            tier.delete(key)
        except Exception as del_exc:
            log.debug("could not delete corrupt entry: %s", del_exc)

    def warn_once(self, token: str, msg: str, *args: Any) -> None:
        """Log a kind of failure loudly at most once a minute: a dead Redis must not flood the logs."""
        now = time.monotonic()
        if now - self._warned.get(token, -1e9) < 60.0:
            log.debug(msg, *args)
        else:
            self._warned[token] = now
            log.warning(msg, *args)
