"""A circuit breaker per remote tier, so a dead Redis costs one timeout, not one timeout per call.

Closed: every call goes through. After ``failures`` consecutive failures it opens: calls are skipped (a miss, in
well under a millisecond) until ``reset_s`` has passed, when exactly one probe is let through (half-open). A
successful probe closes it; a failed one opens it for another ``reset_s``.
"""

from __future__ import annotations

import threading
import time

from dspy_tiered_cache import forksafe


class CircuitBreaker:
    __slots__ = ("__weakref__", "_failures", "_lock", "_open_until", "_probing", "failures", "opened", "reset_s")

    def __init__(self, failures: int = 3, reset_s: float = 2.0) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.opened = 0  # how many times it opened; for stats and tests
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self._open_until == 0.0:
            return "closed"
        return "half-open" if self._probing or time.monotonic() >= self._open_until else "open"

    def allow(self) -> bool:
        if self._open_until == 0.0:  # the hot path: one attribute read
            return True
        with self._lock:
            if self._open_until == 0.0:
                return True
            if self._probing or time.monotonic() < self._open_until:
                return False
            self._probing = True
            return True

    def success(self) -> None:
        if self._open_until == 0.0 and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            self._open_until = 0.0
            self._probing = False

    def failure(self, *, trip: bool = False) -> None:
        """Count a failure; ``trip`` opens at once (a timeout: the next call would wait just as long)."""
        with self._lock:
            self._failures += 1
            if trip or self._probing or self._failures >= self.failures:
                if self._open_until == 0.0:  # a transition from closed; failures while open are not new openings
                    self.opened += 1
                self._open_until = time.monotonic() + self.reset_s
                self._probing = False
