"""A circuit breaker per remote tier, so a dead Redis costs one timeout, not one timeout per call.

Closed: every call goes through. After ``failures`` consecutive failures (or one timeout) it opens: calls are
skipped (a miss, in well under a millisecond) until ``reset_s`` has passed. Then it is half-open: one probe is let
through; a successful probe closes it, a failed one opens it for another ``reset_s``.

When the tier gives a ``probe`` (a cheap round trip such as PING), the probe runs in a background thread
``reset_s`` after the breaker opened, and callers keep getting misses until it succeeds. Why: in a Cluster or
behind Sentinel a probe may pay for a whole rediscovery (every node or sentinel tried, each up to a timeout), and
no caller should pay that; and the tier recovers on its own when the servers come back, whether or not calls
happen to arrive then.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from dspy_tiered_cache import forksafe

log = logging.getLogger("dspy_tiered_cache")


@runtime_checkable
class Probeable(Protocol):
    """A tier that can tell cheaply whether it is reachable again (a method: checking for it does no I/O)."""

    def probe(self) -> object: ...


def breaker_for(tier: object, failures: int, reset_s: float) -> CircuitBreaker:
    """The breaker of a remote tier, probing in the background when the tier can be probed."""
    return CircuitBreaker(failures, reset_s, probe=tier.probe if isinstance(tier, Probeable) else None)


class CircuitBreaker:
    __slots__ = (
        "__weakref__",
        "_failures",
        "_lock",
        "_open_until",
        "_probing",
        "_timer",
        "failures",
        "opened",
        "probe",
        "probes",
        "reset_s",
    )

    def __init__(self, failures: int = 3, reset_s: float = 2.0, *, probe: Callable[[], object] | None = None) -> None:
        self.failures = failures
        self.reset_s = reset_s
        self.probe = probe
        self.opened = 0  # how many times it opened; for stats and tests
        self.probes = 0  # background probes run; for tests
        self._failures = 0
        self._open_until = 0.0
        self._probing = False
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._probing = False
        if self._open_until and self.probe is not None:  # the parent's probe timer did not survive the fork
            self._schedule_probe()

    def _schedule_probe(self) -> None:
        delay = max(0.0, self._open_until - time.monotonic())
        timer = threading.Timer(delay, self._run_probe)
        timer.name = "dspy-tiered-cache-probe"
        timer.daemon = True
        self._timer = timer
        timer.start()

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
            if self.probe is not None:
                return False  # the background probe decides
            self._probing = True
            return True  # this caller is the probe

    def close(self) -> None:
        """No more background probes: the tier is closed, so a probe would only reach a server nobody uses. A probe
        still waiting for its time is cancelled (its thread ends now, not ``reset_s`` later)."""
        self.probe = None
        timer = self._timer
        if timer is not None:
            timer.cancel()

    def _run_probe(self) -> None:
        probe = self.probe
        if probe is None:  # closed while this probe was scheduled
            return
        with self._lock:
            if self._open_until == 0.0 or self._probing:
                return
            self._probing = True
        self.probes += 1
        try:
            probe()
        except Exception as exc:
            log.debug("circuit probe failed: %s: %s", type(exc).__name__, exc)
            self.failure(trip=True)
        else:
            self.success()

    def success(self) -> None:
        if self._open_until == 0.0 and self._failures == 0:
            return
        with self._lock:
            self._failures = 0
            self._open_until = 0.0
            self._probing = False

    def failure(self, *, trip: bool = False) -> None:
        """Count a failure; ``trip`` opens at once (a timeout: the next call would wait just as long)."""
        schedule = False
        with self._lock:
            self._failures += 1
            if trip or self._probing or self._failures >= self.failures:
                if self._open_until == 0.0:  # a transition from closed; failures while open are not new openings
                    self.opened += 1
                    schedule = True
                schedule = schedule or self._probing  # a failed probe: try again after another reset_s
                self._open_until = time.monotonic() + self.reset_s
                self._probing = False
        if schedule and self.probe is not None:
            self._schedule_probe()
