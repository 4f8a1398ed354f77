"""Namespace generations: invalidating a namespace of any size is one INCR, because every key embeds them.

Every process caches the generations it has seen and never lets one go back (a restarted, empty Redis must not
bring invalidated answers back). Invalidations from other processes arrive over pub/sub (:mod:`coherence`) and
are applied here to this process's memory tier and generations.

How long a generation is trusted before it is read again depends on whether that channel is live. While the
subscriber is connected, every bump reaches us as a message, so a generation read (or heard of) since the
subscriber last connected is trusted for :data:`LIVE_REFRESH_S`: one GET per namespace a minute instead of one a
second per process (in the fleet benchmark those GETs were 0.04 Redis commands per lookup). While it is not
connected (or for a generation read before it connected: a bump in between would have gone unheard) the period
is ``generation_refresh_s``, as before; a reconnect forgets every generation (messages may have been lost).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from dspy_tiered_cache.keys import namespace_prefix

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from dspy_tiered_cache.breaker import CircuitBreaker
    from dspy_tiered_cache.guard import TierGuard
    from dspy_tiered_cache.settings import CacheSettings
    from dspy_tiered_cache.tiers.base import Tier
    from dspy_tiered_cache.tiers.memory import MemoryTier

#: How long a generation is trusted while the invalidation channel is live (see the module docstring).
LIVE_REFRESH_S: Final = 60.0


class Generations:
    """The generations of the namespaces this process uses, read from ``authority`` (the most shared tier)."""

    def __init__(
        self,
        settings: CacheSettings,
        authority: Tier | None,
        breakers: Mapping[str, CircuitBreaker],
        guard: TierGuard,
        memory: MemoryTier | None,
    ) -> None:
        self._authority = authority
        self._breakers = breakers
        self._guard = guard
        self._memory = memory
        self._key_prefix = settings.key_prefix
        #: namespace -> (generation, when it was read, monotonic)
        self._known: dict[str, tuple[int, float]] = {}
        self._refresh_s = settings.generation_refresh_s  # read on every key build: keep it one load
        #: Since when (monotonic) the invalidation channel has been live, None while it is not (see listen()).
        self._live_since: Callable[[], float | None] = _never

    def listen(self, live_since: Callable[[], float | None]) -> None:
        """Trust generations longer while ``live_since()`` says the invalidation subscriber is connected."""
        self._live_since = live_since

    def forget(self) -> None:
        """Re-read every generation on next use (pub/sub reconnected: messages may have been lost)."""
        self._known.clear()

    def known(self, namespace: str) -> int | None:
        """The generation of ``namespace`` as this process knows it now, without any I/O (None: never used)."""
        cached = self._known.get(namespace)
        return cached[0] if cached is not None else None

    def bumped(self, namespace: str, generation: int) -> None:
        """This process invalidated ``namespace``: use the new generation at once."""
        self._known[namespace] = (generation, time.monotonic())

    def generation(self, namespace: str) -> int:
        """The namespace's generation, re-read from the shared tier at most every ``generation_refresh_s``."""
        cached = self._known.get(namespace)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self._refresh_s:
            return cached[0]
        if cached is not None and now - cached[1] < LIVE_REFRESH_S:
            since = self._live_since()
            if since is not None and cached[1] >= since:  # read while every bump since would have reached us
                return cached[0]
        authority = self._authority
        if authority is None:
            return 0
        breaker = self._breakers.get(authority.name)
        if breaker is not None and not breaker.allow():
            return cached[0] if cached else 0
        try:
            gen = authority.get_generation(namespace)
        except Exception as exc:
            self._guard.tier_failed(authority, "read generation of", exc)
            # Remember the failure for a refresh period: a hanging Redis must cost one timeout, not one per key.
            gen = cached[0] if cached else 0
            self._known[namespace] = (gen, now)
            return gen
        if breaker is not None:
            breaker.success()
        if cached is not None and gen < cached[0]:
            # The shared tier went back (a restart with an empty dataset, a flush): never rewind, or answers
            # invalidated before would be served again. Put our higher generation back for everyone.
            gen = cached[0]
            try:
                authority.raise_generation(namespace, gen)
            except Exception as exc:
                self._guard.tier_failed(authority, "restore the generation in", exc)
        self._known[namespace] = (gen, now)
        return gen

    def apply(self, message: dict[str, Any]) -> None:
        """Another instance invalidated something: drop it from our memory tier."""
        mem = self._memory
        if mem is None:
            return
        op = message.get("op")
        if op == "del" and isinstance(message.get("key"), str):
            mem.delete(message["key"])
        elif op == "ns" and isinstance(message.get("ns"), str) and isinstance(message.get("gen"), int):
            ns, gen = message["ns"], message["gen"]
            current = self._known.get(ns)
            if current is None or current[0] < gen:
                self._known[ns] = (gen, time.monotonic())
            mem.drop_namespace(namespace_prefix(self._key_prefix, ns))
        elif op == "clear":
            mem.clear()


def _never() -> float | None:
    return None
