"""Every tier call the core makes passes here: timed, counted, gated by the tier's circuit breaker, and its
exceptions swallowed and accounted for (breaker, span, counters, one log line a minute).

This is the one place where "a broken tier is a miss, never an exception and never wrong data" is enforced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from dspy_tiered_cache import telemetry
from dspy_tiered_cache.breaker import CircuitBreaker
from dspy_tiered_cache.codec import CorruptEntry, Entry, NewerFormat
from dspy_tiered_cache.stats import Stats
from dspy_tiered_cache.tiers.base import Tier

log = logging.getLogger("dspy_tiered_cache")


class TierGuard:
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
            _brief(exc),
            state,
        )

    def corrupt(self, tier: Tier, key: str, exc: CorruptEntry) -> None:
        if isinstance(exc, NewerFormat):  # a newer release's entry (rolling upgrade): a miss, left in place
            self.stats.record(tier.name, hit=False)
            self.warn_once(f"newer:{tier.name}", "dspy_tiered_cache: tier %s: %s; serving a miss", tier.name, exc)
            return
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

    def get(self, tier: Tier, key: str, read: Callable[[], Entry | None] | None = None) -> Entry | None:
        """``tier.get(key)``, or ``read()`` when given (another read of ``key`` in ``tier``: a lease lookup)."""
        if not self._may_read(tier):
            return None
        started = time.perf_counter()
        try:
            entry = tier.get(key) if read is None else read()
        except Exception as exc:
            return self._read_failed(tier, key, exc, started)
        return self._read_done(tier, entry, started)

    async def aget(
        self, tier: Tier, key: str, read: Callable[[], Awaitable[Entry | None]] | None = None
    ) -> Entry | None:
        if not self._may_read(tier):
            return None
        started = time.perf_counter()
        try:
            entry = await (tier.aget(key) if read is None else read())
        except Exception as exc:
            return self._read_failed(tier, key, exc, started)
        return self._read_done(tier, entry, started)

    def _may_read(self, tier: Tier) -> bool:
        breaker = self.breakers.get(tier.name)
        if breaker is not None and not breaker.allow():
            self.stats.record(tier.name, hit=False, skipped=True)
            return False
        return True

    def _read_done(self, tier: Tier, entry: Entry | None, started: float) -> Entry | None:
        """A read that worked: the breaker hears of it; the tier's counters are bumped lock-free (as the memory
        tier's are: a rare lost increment under threads is cheaper than a lock on every read) and its latency is
        sampled 1 read in 16 (recording one, with the OpenTelemetry histogram, cost more than the checksum)."""
        breaker = self.breakers.get(tier.name)
        if breaker is not None:
            breaker.success()
        t = self.stats.tiers[tier.name]
        if entry is not None:
            t.hits += 1
        else:
            t.misses += 1
        if not (t.hits + t.misses) & 15:
            t.observe(time.perf_counter() - started)
        return entry

    def _read_failed(self, tier: Tier, key: str, exc: Exception, started: float) -> Entry | None:
        """Count the failure (a corrupt entry is also deleted); the read is a miss."""
        if isinstance(exc, CorruptEntry):
            self.corrupt(tier, key, exc)
        else:
            self.tier_failed(tier, "read from", exc, started)
        return None

    def set(self, tier: Tier, key: str, entry: Entry) -> None:
        if not self._may_write(tier):
            return
        started = time.perf_counter()
        try:
            tier.set(key, entry)
        except Exception as exc:
            self.tier_failed(tier, "write to", exc, started)
            return
        self._write_done(tier)

    async def aset(self, tier: Tier, key: str, entry: Entry) -> None:
        if not self._may_write(tier):
            return
        started = time.perf_counter()
        try:
            await tier.aset(key, entry)
        except Exception as exc:
            self.tier_failed(tier, "write to", exc, started)
            return
        self._write_done(tier)

    def _may_write(self, tier: Tier) -> bool:
        breaker = self.breakers.get(tier.name)
        if breaker is not None and not breaker.allow():
            self.stats.record(tier.name, skipped=True)
            return False
        return True

    def _write_done(self, tier: Tier) -> None:
        breaker = self.breakers.get(tier.name)
        if breaker is not None:
            breaker.success()
        self.stats.record(tier.name, set_=True)


def _brief(exc: BaseException, limit: int = 300) -> str:
    """An exception's text for a one-line warning: redis-py puts whole client reprs (every connection option)
    into some messages, e.g. Sentinel's MasterNotFoundError."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
