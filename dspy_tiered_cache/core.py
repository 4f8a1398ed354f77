"""The tiered-cache core both front doors share: the cascade (:mod:`.cascade`) plus single-flight and features.

:class:`CacheCore` is what the doors hold. On top of the cascade's keys, lookups and stores it runs the lead/join
protocol (:mod:`.flights`: N identical concurrent misses make one upstream call, across threads, tasks and
processes), binds the features attached through :mod:`.hooks` (record/replay, the fleet view, reports: the core
imports none of them) and keeps the process-wide default core.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from dspy_tiered_cache import hooks, telemetry
from dspy_tiered_cache.cascade import Cascade, bare_replay_miss, log
from dspy_tiered_cache.codec import Entry, decode_value
from dspy_tiered_cache.errors import CacheError
from dspy_tiered_cache.flights import Claim, Claims, adrive, drive
from dspy_tiered_cache.modes import REPLAY
from dspy_tiered_cache.options import CallOptions
from dspy_tiered_cache.settings import CacheSettings
from dspy_tiered_cache.tiers.base import Tier

__all__ = ["CacheCore", "default_core", "resolve_core"]

T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


class CacheCore(Cascade):
    """The cache both doors share: the cascade, single-flight, and the features attached to it."""

    def __init__(
        self, settings: CacheSettings | None = None, *, tiers: Iterable[Tier] | None = None, **overrides: Any
    ) -> None:
        super().__init__(settings, tiers=tiers, **overrides)
        #: Single-flight: in-process flights and cross-process leases, behind one lead/join protocol.
        self.claims = Claims(self)
        self._shared_arrived = self.claims.arrived  # a waiter for another process's answer wakes when it arrives
        # Features attach last, to a complete core (see hooks.py); the operations they provide are bound once.
        self._operations = hooks.operations()
        self._describe_miss = self._operations.get("replay_miss", bare_replay_miss)
        self.attached: dict[str, hooks.Attachment] = {}
        for name, attach in hooks.attachers():
            attachment = attach(self)
            if attachment is not None:
                self.attached[name] = attachment

    def __repr__(self) -> str:
        return f"CacheCore(tiers={self.tiers!r}, namespace={self.settings.namespace!r})"

    # -- single-flight -------------------------------------------------------------------------------
    def _remote_get(self, tier: Tier, key: str, opts: CallOptions) -> Entry | None:
        """A lookup that will claim on a miss reads the lease tier with the lease itself (Redis 7: one
        ``SET NX GET`` instead of a GET, then a lease, then a re-check; see :meth:`Claims.lookup`)."""
        if tier is not self.claims.tier or not self._looks_to_lead(opts):
            return super()._remote_get(tier, key, opts)
        pending = self.writer.pending.get(key)
        return pending if pending is not None else self.claims.lookup(key)

    async def _aremote_get(self, tier: Tier, key: str, opts: CallOptions) -> Entry | None:
        if tier is not self.claims.tier or not self._looks_to_lead(opts):
            return await super()._aremote_get(tier, key, opts)
        return self.writer.pending.get(key) or await self.claims.alookup(key)

    def _looks_to_lead(self, opts: CallOptions) -> bool:
        # Replay never computes: a replay miss raises, and must leave no lease behind.
        return self.claims.on_entry() and self._may_share(opts) and self.mode_of(opts) != REPLAY

    def claim(self, key: str, options: CallOptions | None = None) -> Claim:
        """After a miss: join the caller already computing ``key`` (here or in another process) or lead.

        A claim with an ``answer`` needs no computation; otherwise the caller computes and must end the claim
        with :meth:`fulfil` or :meth:`abandon` (both idempotent). Blocks while following; see :meth:`aclaim`."""
        if not self._may_share(options):
            return Claim(key)
        return drive(self.claims, self.claims.steps(key, options))

    async def aclaim(self, key: str, options: CallOptions | None = None) -> Claim:
        """:meth:`claim` for the event loop: the same decisions, every wait awaited."""
        if not self._may_share(options):
            return Claim(key)
        return await adrive(self.claims, self.claims.steps(key, options))

    def fulfil(
        self,
        claim: Claim,
        value: T,
        *,
        options: CallOptions | None = None,
        encode: Callable[[T], Any] = _identity,
    ) -> bytes | None:
        """Store the value a leader computed, then wake its followers with it and give its lease back.

        With a lease held, the answer is written to the lease tier before the lease goes: the processes polling
        that tier find the answer before they find the lease gone."""
        payload = self._payload_of(value, options, encode)
        if payload is not None:
            self.set_payload(claim.key, payload, options=options, landed=self.claims.tier if claim.token else None)
        self.claims.end(claim, payload)
        return payload

    async def afulfil(
        self,
        claim: Claim,
        value: T,
        *,
        options: CallOptions | None = None,
        encode: Callable[[T], Any] = _identity,
    ) -> bytes | None:
        """:meth:`fulfil` for the event loop: the landed write and the lease release are awaited."""
        payload = self._payload_of(value, options, encode)
        if payload is not None:
            landed = self.claims.tier if claim.token else None
            await self.aset_payload(claim.key, payload, options=options, landed=landed)
        await self.claims.aend(claim, payload)
        return payload

    def abandon(self, claim: Claim) -> None:
        """The leader's computation failed: release the lease; followers wake at once and one of them leads."""
        self.claims.end(claim, None)

    async def aabandon(self, claim: Claim) -> None:
        await self.claims.aend(claim, None)

    def holds(self, key: str, *, max_age: float | None = None) -> bool:
        """Whether this process already holds a fresh answer for ``key`` (memory tier or a write not landed),
        without counting a lookup."""
        return self.peek_local(key, max_age=max_age) is not None

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], T],
        *,
        options: CallOptions | None = None,
        encode: Callable[[T], Any] = _identity,
        decode: Callable[[Any], T] = _identity,
    ) -> tuple[T, str]:
        """The cached value or ``compute()``'s, with concurrent identical misses sharing one ``compute()``.

        Returns ``(value, level)``: level is the tier that served it, ``"joined"`` when another caller's
        computation did, ``"miss"`` or ``"bypass"``. An exception from ``compute()`` reaches the caller unchanged,
        and the followers waiting on this call lead at once instead of waiting for a timeout.
        """
        hit = self.get(key, options=options)
        if hit is not None:
            return decode(hit.value), hit.level
        claim = self.claim(key, options)
        if claim.answer is not None:
            return decode(decode_value(claim.answer)), claim.level
        try:
            value = compute()
        except BaseException:
            self.abandon(claim)
            raise
        self.fulfil(claim, value, options=options, encode=encode)
        return value, self._miss_level(options)

    async def aget_or_compute(
        self,
        key: str,
        compute: Callable[[], Awaitable[T]],
        *,
        options: CallOptions | None = None,
        encode: Callable[[T], Any] = _identity,
        decode: Callable[[Any], T] = _identity,
    ) -> tuple[T, str]:
        hit = await self.aget(key, options=options)
        if hit is not None:
            return decode(hit.value), hit.level
        claim = await self.aclaim(key, options)
        if claim.answer is not None:
            return decode(decode_value(claim.answer)), claim.level
        try:
            value = await compute()
        except BaseException:
            await self.aabandon(claim)
            raise
        await self.afulfil(claim, value, options=options, encode=encode)
        return value, self._miss_level(options)

    def _may_share(self, options: CallOptions | None) -> bool:
        return self.settings.single_flight and self._miss_level(options) == "miss"

    def _payload_of(self, value: T, options: CallOptions | None, encode: Callable[[T], Any]) -> bytes | None:
        """A fresh answer's payload, or None (counted, warned once) when it cannot or should not be stored."""
        try:
            plain = encode(value)
        except Exception as exc:  # a door's converter failing must not fail the call
            self.stats.count("store_skipped")
            self.guard.warn_once(
                type(exc).__name__, "dspy_tiered_cache: cannot convert a %s for caching: %s", type(value).__name__, exc
            )
            return None
        return self.encode(plain, options)

    # -- operations features provide (hooks.py) ------------------------------------------------------
    def export(self, path: Any, *, namespaces: Iterable[str] | None = None, all_namespaces: bool = False) -> Any:
        """Write this cache's entries (the configured namespace, ``namespaces`` or all) to a portable recording
        file; see :mod:`dspy_tiered_cache.portable`. Returns an ``ExportSummary``."""
        return self._operation("export")(self, path, namespaces=namespaces, all_namespaces=all_namespaces)

    def import_(self, path: Any, *, namespace: str | None = None) -> Any:
        """Load a recording file into every tier (its namespace, or ``namespace``). Returns an ``ImportSummary``."""
        return self._operation("import")(self, path, namespace=namespace)

    def report(self) -> Any:
        """A :class:`~dspy_tiered_cache.report.StatsReport`: a table in a terminal, HTML in a notebook."""
        return self._operation("report")(self)

    def _operation(self, name: hooks.Operation) -> Callable[..., Any]:
        operation = self._operations.get(name)
        if operation is None:  # only a core built while the package was half imported lacks one
            raise CacheError(f"no feature provides {name!r}: import dspy_tiered_cache before building a CacheCore")
        return operation

    @property
    def fleet(self) -> Any:
        """The fleet publisher attached to this core (:mod:`dspy_tiered_cache.fleet`), None when it has none."""
        return self.attached.get("fleet")

    def close(self) -> None:
        """Close the features' attachments (the fleet's last batch, tiers still open), then the cascade."""
        for name, attachment in reversed(self.attached.items()):
            try:
                attachment.close()
            except Exception as exc:
                log.warning("dspy_tiered_cache: closing %s failed: %s", name, exc)
        super().close()

    def __enter__(self) -> CacheCore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- telemetry -----------------------------------------------------------------------------------
    def trace_call(
        self, door: str, *, model: str | None = None, namespace: str | None = None, operation: str = "chat"
    ) -> AbstractContextManager[telemetry.CallTrace]:
        """The span of one cached call through a door; a shared no-op when tracing is off or unconfigured."""
        if not self.settings.telemetry or not telemetry.tracing_active():
            return telemetry.NOOP_CONTEXT
        return telemetry.trace_call(
            door, model=model, namespace=namespace or self.settings.namespace, operation=operation
        )


_default_core: CacheCore | None = None
_default_lock = threading.Lock()


def default_core() -> CacheCore:
    """The process-wide core built from ``DSPY_TIERED_CACHE_*`` env vars, shared by every ``CachedLM(lm)``."""
    global _default_core
    core = _default_core
    if core is not None:
        return core
    with _default_lock:
        if _default_core is None:
            _default_core = CacheCore()
        return _default_core


def resolve_core(cache: Any, overrides: Mapping[str, Any]) -> CacheCore:
    """Turn what a user passes as ``cache=`` into a core.

    ``None`` -> the shared env-configured core (or a new one when settings overrides are given); a
    ``CacheSettings``; a ``CacheCore``; or anything exposing one as ``.core`` (the LiteLLM door's
    ``TieredCache``), so one cache can serve both doors.
    """
    if cache is None:
        return CacheCore(**overrides) if overrides else default_core()
    if isinstance(cache, CacheSettings):
        return CacheCore(cache, **overrides)
    core = cache if isinstance(cache, CacheCore) else getattr(cache, "core", None)
    if not isinstance(core, CacheCore):
        raise TypeError(
            f"cache= must be a CacheCore, a CacheSettings, a TieredCache or None, not {type(cache).__name__}"
        )
    if overrides:
        raise TypeError(
            f"settings {sorted(overrides)} cannot be applied to an existing cache; pass them when creating it "
            "(per-LM options namespace=, ttl=, max_age= are fine)"
        )
    return core
