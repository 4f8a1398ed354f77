"""The tiered-cache core both front doors share: keys, cascade, promotion, write-through, single-flight.

Every tier call goes through :class:`~dspy_tiered_cache.guard.TierGuard`, which times it, counts it, consults the
tier's circuit breaker and swallows its exceptions: "a broken tier is a miss, never an exception". Single-flight
lives in :mod:`.flights`, namespace generations in :mod:`.namespaces`. The sync and async lookups share every step
but the awaited tier read itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import orjson

from dspy_tiered_cache import fleet, telemetry
from dspy_tiered_cache.breaker import CircuitBreaker, breaker_for
from dspy_tiered_cache.codec import CodecError, CorruptEntry, Entry, FrameCodec, decode_value, encode_value
from dspy_tiered_cache.coherence import InvalidationBus, PubSubSource
from dspy_tiered_cache.flights import Claim, Claims, adrive, drive
from dspy_tiered_cache.guard import TierGuard
from dspy_tiered_cache.keys import (
    UncacheableRequest,
    canonical_request,
    entry_key,
    namespace_prefix,
    request_digest,
    request_key,
)
from dspy_tiered_cache.modes import REFRESH, REPLAY, ReplayMiss
from dspy_tiered_cache.namespaces import Generations
from dspy_tiered_cache.options import DEFAULT_OPTIONS, CallOptions, Hit, _Unset
from dspy_tiered_cache.settings import CacheSettings, ConfigError, check_namespace, load_settings
from dspy_tiered_cache.singleflight import SingleFlight
from dspy_tiered_cache.stats import Stats
from dspy_tiered_cache.tiers.base import Tier, TierHealth
from dspy_tiered_cache.tiers.build import build_tiers
from dspy_tiered_cache.tiers.memory import MemoryTier
from dspy_tiered_cache.writer import BackgroundWriter

log = logging.getLogger("dspy_tiered_cache")
T = TypeVar("T")


def _identity(value: Any) -> Any:
    return value


class CacheCore:
    def __init__(
        self, settings: CacheSettings | None = None, *, tiers: Iterable[Tier] | None = None, **overrides: Any
    ) -> None:
        self.settings = s = load_settings(settings, **overrides)
        self._secret = s.key_secret.get_secret_value().encode() if s.key_secret is not None else None
        try:
            self.codec = FrameCodec(
                secret=self._secret,
                compression_threshold=s.compression_threshold,
                max_bytes=s.max_value_bytes,
                encryption_keys=[k.get_secret_value().encode() for k in s.encryption_keys],
            )
        except CodecError as exc:
            raise ConfigError(str(exc)) from None
        self.tiers: list[Tier] = list(tiers) if tiers is not None else build_tiers(s, self.codec)
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ConfigError(f"tier names must be unique, got {names}")
        self.memory: MemoryTier | None = next((t for t in self.tiers if isinstance(t, MemoryTier)), None)
        self._l1 = self.tiers[0] if self.tiers and isinstance(self.tiers[0], MemoryTier) else None
        self._enabled = s.enabled
        #: The most shared tier holds namespace generations, so every process agrees on them.
        self._authority: Tier | None = self.tiers[-1] if self.tiers else None
        self.stats = Stats(names)
        self._l1_stats = self.stats.tiers[self._l1.name] if self._l1 is not None else None
        self.breakers: dict[str, CircuitBreaker] = {
            t.name: breaker_for(t, s.breaker_failures, s.breaker_reset_s) for t in self.tiers if t.remote
        }
        self._flights = SingleFlight()
        self.writer = BackgroundWriter(s.write_queue_size)
        self.generations = Generations(self)
        self._digests: dict[bytes, str] = {}
        #: digest -> canonical request of recently keyed requests: what a replay miss or ``record_requests`` shows.
        self._requests: dict[str, bytes] = {}
        self._requests_bytes = 0
        self._mode = s.mode
        self._guard = TierGuard(self.stats, self.breakers)
        if s.telemetry:
            telemetry.register(self)
        self.fleet = fleet.start_publisher(self) if s.fleet else None
        #: Single-flight: in-process flights and cross-process leases, behind one lead/join protocol.
        self.claims = Claims(self)
        self._bus: InvalidationBus | None = None
        # Nothing here may touch the network: the subscriber builds its client lazily, in its own thread.
        source = next((t for t in reversed(self.tiers) if t.remote and isinstance(t, PubSubSource)), None)
        if source is not None and s.invalidation_pubsub and self.memory is not None:
            self._bus = InvalidationBus(
                source.pubsub_client,
                f"{s.key_prefix}:inv",
                self.generations.apply,
                self.generations.forget,
            )

    def __repr__(self) -> str:
        return f"CacheCore(tiers={self.tiers!r}, namespace={self.settings.namespace!r})"

    # -- keys ----------------------------------------------------------------------------------------
    def key_for(self, request: Mapping[str, Any], *, namespace: str | None = None, ignore: Iterable[str] = ()) -> str:
        """The storage key of a request; raises :class:`UncacheableRequest` when it has no canonical form."""
        ns = self._namespace(namespace)
        if self._bus is not None:
            self._bus.ensure_started()
        canonical = canonical_request(request, ignore)
        digest = self._digests.get(canonical)
        if digest is None:
            # Hits repeat requests: remembering digests trades a SHA-256 (~3 us for 2 KB here) for a dict
            # lookup. Bounded by entries and by size of what is remembered.
            digest = request_digest(canonical, self._secret)
            self._remember_request(digest, canonical)
            if len(canonical) <= 16_384:
                if len(self._digests) >= 2048:
                    self._digests.clear()
                self._digests[canonical] = digest
        return entry_key(self.settings.key_prefix, ns, self.generations.generation(ns), digest)

    def _remember_request(self, digest: str, canonical: bytes) -> None:
        """Keep the request a digest was made from until its answer is stored (bounded by entries and bytes)."""
        if len(self._requests) >= 2048 or self._requests_bytes > 32 * 1024 * 1024:
            self._requests.clear()
            self._requests_bytes = 0
        self._requests[digest] = canonical
        self._requests_bytes += len(canonical)

    def request_of(self, key: str) -> bytes | None:
        """The canonical request this process keyed as ``key`` recently, if it still remembers it."""
        return self._requests.get(key.rsplit(":", 1)[-1])

    def mode_of(self, options: CallOptions | None) -> str:
        """The effective mode of a call: its own, else the configured one."""
        return (options.mode if options is not None and options.mode else None) or self._mode

    def full_digest(self, request: Mapping[str, Any], *, ignore: Iterable[str] = ()) -> str:
        """The 64-hex SHA-256 (HMAC under a key secret) of the canonical request; its first 40 hex digits are
        the digest in the request's storage key. For callers that expect a full-length hash (DSPy's
        ``cache_key``). Raises :class:`UncacheableRequest` like :meth:`key_for`."""
        canonical = canonical_request(request, ignore)
        if self._secret:
            return hmac.new(self._secret, canonical, "sha256").hexdigest()
        return hashlib.sha256(canonical).hexdigest()

    def storage_key(self, digest: str, *, namespace: str | None = None) -> str:
        """The storage key for a digest from :meth:`full_digest` (or :meth:`key_for`'s own), in ``namespace``."""
        ns = self._namespace(namespace)
        return entry_key(self.settings.key_prefix, ns, self.generation(ns), digest[:40])

    def _namespace(self, namespace: str | None) -> str:
        if namespace is None:
            return self.settings.namespace
        try:
            return check_namespace(namespace)
        except ValueError as exc:
            raise UncacheableRequest(str(exc)) from None

    def generation(self, namespace: str) -> int:
        return self.generations.generation(namespace)

    def peek_local(self, key: str, *, max_age: float | None = None) -> bytes | None:
        """The payload this process already holds for ``key`` (memory tier or a write not yet landed), without
        counting a lookup: for single-flight callers checking whether a leader just finished."""
        entry = self.memory.get(key) if self.memory is not None else None
        if entry is None:
            entry = self.writer.pending.get(key)
        if entry is None:
            return None
        now = time.time()
        if entry.expired(now) or (max_age is not None and now - entry.created_at > max_age):
            return None
        return entry.payload

    # -- lookups -------------------------------------------------------------------------------------
    def get(self, key: str, *, options: CallOptions | None = None) -> Hit | None:
        """Walk the tiers in order; never raises. ``None`` is a miss (or a bypass)."""
        opts = options or DEFAULT_OPTIONS
        hit, start, now = self._begin_lookup(key, opts)
        if start < 0 or hit is not None:
            return hit
        for index in range(start, len(self.tiers)):
            tier = self.tiers[index]
            entry = self._remote_get(tier, key) if tier.remote else self._guard.get(tier, key)
            if entry is not None and self._fresh(entry, opts, now):
                return self._hit(index, key, entry, now)
        self._missed(key, opts)
        return None

    async def aget(self, key: str, *, options: CallOptions | None = None) -> Hit | None:
        opts = options or DEFAULT_OPTIONS
        hit, start, now = self._begin_lookup(key, opts)
        if start < 0 or hit is not None:
            return hit
        for index in range(start, len(self.tiers)):
            tier = self.tiers[index]
            if tier.remote:
                entry = self.writer.pending.get(key) or await self._guard.aget(tier, key)
            else:
                entry = self._guard.get(tier, key)
            if entry is not None and self._fresh(entry, opts, now):
                return self._hit(index, key, entry, now)
        self._missed(key, opts)
        return None

    def _missed(self, key: str, opts: CallOptions) -> None:
        """Every tier missed: count it; in replay mode a miss is an error, never a call upstream."""
        self.stats.miss(key)
        if opts.mode == REPLAY or (opts.mode is None and self._mode == REPLAY):
            raise self._replay_miss(key, opts)

    def _begin_lookup(self, key: str, opts: CallOptions) -> tuple[Hit | None, int, float]:
        """What sync and async lookups share before any I/O: ``(hit, next tier index, now)``; index -1 is a
        bypass. The memory tier is read here: the hot path, no breaker, no lock beyond the tier's own."""
        mode = opts.mode or self._mode
        if not self._enabled or opts.bypass_read or mode == REFRESH:
            if mode == REPLAY:  # replay never goes upstream, even for a call that asks not to read the cache
                raise self._replay_miss(key, opts, reason="bypasses the cache (cache disabled or a no-cache call)")
            self.stats.count("bypasses")
            return None, -1, 0.0
        now = time.time()
        if self._l1 is None:
            return None, 0, now
        return self._l1_get(self._l1, key, opts, now), 1, now

    def _replay_miss(self, key: str, opts: CallOptions, reason: str = "was never recorded") -> ReplayMiss:
        """The error of a replay-mode miss: what was asked, and how the closest recorded request differs."""
        from dspy_tiered_cache.portable import replay_miss

        return replay_miss(self, key, opts, reason)

    def _l1_get(self, l1: MemoryTier, key: str, opts: CallOptions, now: float) -> Hit | None:
        tstats = self._l1_stats
        assert tstats is not None
        if (tstats.hits + tstats.misses) & 63:  # time 1 lookup in 64: timing costs as much as the lookup
            entry = l1.get(key)
            started = 0.0
        else:
            started = time.perf_counter()
            entry = l1.get(key)
        if entry is None or (opts.max_age is not None and now - entry.created_at > opts.max_age):
            tstats.misses += 1
            return None
        value = orjson.loads(entry.payload)
        # Lock-free counters (see stats.py): a rare lost increment is cheaper than a lock on every hit.
        tstats.hits += 1
        self.stats.hits += 1
        self.stats.stem_hits[key[:-41]] += 1  # per namespace, folded by the fleet publisher off this path
        if started:
            tstats.observe(time.perf_counter() - started)
        return tuple.__new__(Hit, (value, "l1", entry.created_at, entry.expires_at))  # Hit(...) minus a frame

    def _remote_get(self, tier: Tier, key: str) -> Entry | None:
        pending = self.writer.pending.get(key)  # our own write not yet landed: read-your-writes
        return pending if pending is not None else self._guard.get(tier, key)

    @staticmethod
    def _fresh(entry: Entry, opts: CallOptions, now: float) -> bool:
        if entry.expires_at is not None and entry.expires_at <= now:
            return False
        return opts.max_age is None or now - entry.created_at <= opts.max_age

    def _hit(self, index: int, key: str, entry: Entry, now: float) -> Hit | None:
        try:
            value = decode_value(entry.payload)
        except ValueError as exc:  # only reachable if a tier hands back bytes it did not check
            self._guard.corrupt(self.tiers[index], key, CorruptEntry(f"payload is not JSON: {exc}"))
            return None
        if index:  # promote with the remaining lifetime, capped per tier
            self._promote(self.tiers[index], key, entry)
        self.stats.hit(key)
        return Hit(value, self.tiers[index].name, entry.created_at, entry.expires_at)

    # -- stores --------------------------------------------------------------------------------------
    def set(self, key: str, value: Any, *, options: CallOptions | None = None) -> bool:
        """Store plain JSON data in every tier; never raises. False when nothing was stored."""
        payload = self.encode(value, options)
        if payload is None:
            return False
        self.set_payload(key, payload, options=options)
        return True

    async def aset(self, key: str, value: Any, *, options: CallOptions | None = None) -> bool:
        """:meth:`set` for the event loop: no tier write blocks the loop."""
        payload = self.encode(value, options)
        if payload is None:
            return False
        await self.aset_payload(key, payload, options=options)
        return True

    def encode(self, value: Any, options: CallOptions | None = None) -> bytes | None:
        """Payload bytes of a value, or None (logged and counted) when it cannot or should not be stored."""
        if not self.settings.enabled or (options is not None and options.bypass_write):
            return None
        if self.mode_of(options) == REPLAY:  # replay is read-only: nothing recorded in it may change
            return None
        try:
            return encode_value(value, self.settings.max_value_bytes)
        except CodecError as exc:
            self.stats.count("store_skipped")
            self._guard.warn_once(str(exc).split(";")[0][:60], "dspy_tiered_cache: not caching a value: %s", exc)
            return None

    def set_payload(
        self, key: str, payload: bytes, *, options: CallOptions | None = None, landed: Tier | None = None
    ) -> None:
        """Write an encoded value to every tier; ``landed`` is written before returning even if remote."""
        last = self._fan_out(key, payload, options, landed)
        if last is not None:
            self._guard.set(last[0], key, last[1])

    async def aset_payload(
        self, key: str, payload: bytes, *, options: CallOptions | None = None, landed: Tier | None = None
    ) -> None:
        """:meth:`set_payload` for the event loop: the ``landed`` write is awaited, the rest never waits."""
        last = self._fan_out(key, payload, options, landed)
        if last is not None:
            await self._guard.aset(last[0], key, last[1])

    def _fan_out(
        self, key: str, payload: bytes, options: CallOptions | None, landed: Tier | None
    ) -> tuple[Tier, Entry] | None:
        """Write to every tier but ``landed`` (memory now, remote tiers in the background); returns the write to
        ``landed`` for the sync or async caller to make itself."""
        now = time.time()
        entry = Entry(payload, now, self._expiry(options, now))
        self.stats.count("stores")
        last: tuple[Tier, Entry] | None = None
        for tier in self.tiers:
            if tier is landed:
                last = (tier, entry.capped(tier.ttl, now))
            else:
                self._store_in(tier, key, entry.capped(tier.ttl, now))
        if self.settings.record_requests and self._authority is not None:
            canonical = self.request_of(key)
            if canonical is not None:  # beside the answer, for exports and replay-miss diagnoses (portable.py)
                tier = self._authority
                self._store_in(tier, request_key(key), Entry(canonical, now, entry.expires_at).capped(tier.ttl, now))
        return last

    def _expiry(self, options: CallOptions | None, now: float) -> float | None:
        ttl = self.settings.ttl if options is None or isinstance(options.ttl, _Unset) else options.ttl
        if ttl is None:
            return None
        if self.settings.ttl_jitter:  # spread expiries so a batch written together does not expire together
            ttl *= 1.0 - random.random() * self.settings.ttl_jitter
        return now + ttl

    def _store_in(self, tier: Tier, key: str, entry: Entry) -> None:
        if tier.remote and self.settings.write_behind:
            self.writer.submit(key, entry, lambda: self._guard.set(tier, key, entry))
        else:
            self._guard.set(tier, key, entry)

    # -- single-flight -------------------------------------------------------------------------------
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

    def _miss_level(self, options: CallOptions | None) -> str:
        reads = self._enabled and not (options and options.bypass_read) and self.mode_of(options) != REFRESH
        return "miss" if reads else "bypass"

    def _payload_of(self, value: T, options: CallOptions | None, encode: Callable[[T], Any]) -> bytes | None:
        """A fresh answer's payload, or None (counted, warned once) when it cannot or should not be stored."""
        try:
            plain = encode(value)
        except Exception as exc:  # a door's converter failing must not fail the call
            self.stats.count("store_skipped")
            self._guard.warn_once(
                type(exc).__name__, "dspy_tiered_cache: cannot convert a %s for caching: %s", type(value).__name__, exc
            )
            return None
        return self.encode(plain, options)

    def _promote(self, source: Tier, key: str, entry: Entry) -> None:
        now = time.time()
        for upper in self.tiers[: self.tiers.index(source)]:
            self._store_in(upper, key, entry.capped(upper.ttl, now))

    # -- invalidation and housekeeping --------------------------------------------------------------
    def delete(self, key: str) -> None:
        self.writer.cancel(key)  # a write still queued must not bring the entry back after we delete it
        for tier in self.tiers:
            try:
                tier.delete(key)
            except Exception as exc:
                self._guard.tier_failed(tier, "delete from", exc)
        self._publish({"op": "del", "key": key})

    def invalidate_namespace(self, namespace: str | None = None) -> int:
        """O(1) at any size: bump the generation that every key of the namespace embeds."""
        ns = self._namespace(namespace)
        old = self.generation(ns)
        gen = old + 1
        for tier in self.tiers:  # every tier learns the new generation; the authority's answer wins
            try:
                bumped = tier.bump_generation(ns)
                if tier is self._authority:
                    gen = bumped
            except Exception as exc:
                self._guard.tier_failed(tier, "bump generation in", exc)
        self.generations.bumped(ns, gen)
        if self.memory is not None:
            self.memory.drop_namespace(namespace_prefix(self.settings.key_prefix, ns))
        self._publish({"op": "ns", "ns": ns, "gen": gen})
        return gen

    def clear(self) -> int:
        """Remove every entry under our prefix in every tier (generations are kept)."""
        self.flush()
        removed = 0
        for tier in self.tiers:
            try:
                removed += tier.clear()
            except Exception as exc:
                self._guard.tier_failed(tier, "clear", exc)
        self._publish({"op": "clear"})
        return removed

    def _publish(self, message: dict[str, Any]) -> None:
        """Tell other instances' memory tiers; a lost message is bounded by generation refresh / memory_ttl."""
        if self._bus is None:
            return
        try:
            self._bus.publish(message)
        except Exception as exc:
            log.warning(
                "dspy_tiered_cache: could not publish an invalidation (%s); other instances' memory "
                "tiers catch up within generation_refresh_s / memory_ttl",
                exc,
            )

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait for background writes to land (tests, batch jobs before exit, ``clear``)."""
        return self.writer.flush(timeout)

    def export(self, path: Any, *, namespaces: Iterable[str] | None = None, all_namespaces: bool = False) -> Any:
        """Write this cache's entries (the configured namespace, ``namespaces`` or all) to a portable recording
        file; see :mod:`dspy_tiered_cache.portable`. Returns an ``ExportSummary``."""
        from dspy_tiered_cache.portable import export_recording

        return export_recording(self, path, namespaces=namespaces, all_namespaces=all_namespaces)

    def import_(self, path: Any, *, namespace: str | None = None) -> Any:
        """Load a recording file into every tier (its namespace, or ``namespace``). Returns an ``ImportSummary``."""
        from dspy_tiered_cache.portable import import_recording

        return import_recording(self, path, namespace=namespace)

    @property
    def shared_tier(self) -> Tier | None:
        """The most shared tier: it holds namespace generations, and exports read from it."""
        return self._authority

    def report(self) -> Any:
        """A :class:`~dspy_tiered_cache.report.StatsReport`: a table in a terminal, HTML in a notebook."""
        from dspy_tiered_cache.report import report

        return report(self)

    def health(self) -> list[TierHealth]:
        return [tier.health() for tier in self.tiers]

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.close()  # the last batch, while the tiers are still open
        if self._bus is not None:
            self._bus.stop()
        for breaker in self.breakers.values():
            breaker.close()  # a probe scheduled while a tier was down must not outlive the cache
        self.writer.close()
        for tier in self.tiers:
            try:
                tier.close()
            except Exception as exc:
                log.debug("closing %r failed: %s", tier, exc)

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
