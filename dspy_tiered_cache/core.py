"""The tiered-cache core both front doors share: keys, cascade, promotion, write-through, single-flight.

Every tier call goes through :meth:`CacheCore._tier_get` / ``_tier_set`` (or their async twins), which time it,
count it, consult the tier's circuit breaker and swallow its exceptions: this is the one place where "a broken
tier is a miss, never an exception and never wrong data" is enforced. The sync and async lookups share every step
but the awaited tier read itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

import orjson

from dspy_tiered_cache import fleet, telemetry
from dspy_tiered_cache.breaker import CircuitBreaker, breaker_for
from dspy_tiered_cache.codec import CodecError, CorruptEntry, Entry, FrameCodec, decode_value, encode_value
from dspy_tiered_cache.coherence import InvalidationBus, PubSubSource
from dspy_tiered_cache.keys import (
    UncacheableRequest,
    canonical_request,
    entry_key,
    request_digest,
    request_key,
)
from dspy_tiered_cache.modes import REFRESH, REPLAY, ReplayMiss
from dspy_tiered_cache.settings import CacheSettings, ConfigError, check_namespace, load_settings
from dspy_tiered_cache.singleflight import SingleFlight
from dspy_tiered_cache.stats import Stats
from dspy_tiered_cache.tiers.base import Tier, TierHealth
from dspy_tiered_cache.tiers.memory import MemoryTier
from dspy_tiered_cache.writer import BackgroundWriter

log = logging.getLogger("dspy_tiered_cache")
T = TypeVar("T")


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Per-call controls, mirroring the HTTP-cache-like controls LiteLLM exposes."""

    bypass_read: bool = False  # refresh: skip lookups, still store the fresh answer
    bypass_write: bool = False  # no-store
    ttl: float | _Unset | None = UNSET  # None = no expiry; UNSET = the configured default
    max_age: float | None = None  # entries older than this many seconds are misses
    namespace: str | None = None
    mode: str | None = None  # read-write | replay | refresh; None = the configured mode (see modes.py)


DEFAULT_OPTIONS: Final = CallOptions()


class Hit(NamedTuple):
    """A lookup's answer. A named tuple: built on every hit, it must cost next to nothing."""

    value: Any
    level: str
    created_at: float
    expires_at: float | None

    @property
    def age(self) -> float:
        return time.time() - self.created_at


def build_tiers(settings: CacheSettings, codec: FrameCodec) -> list[Tier]:
    """Tier order is cost order: memory, then the local disk, then the network."""
    tiers: list[Tier] = []
    if settings.memory and settings.memory_max_entries > 0 and settings.memory_max_bytes > 0:
        tiers.append(
            MemoryTier(
                max_entries=settings.memory_max_entries, max_bytes=settings.memory_max_bytes, ttl=settings.memory_ttl
            )
        )
    if settings.uses_disk:
        from dspy_tiered_cache.tiers.disk import DiskTier

        tiers.append(
            DiskTier(settings.disk_path, codec=codec, ttl=settings.disk_ttl, max_bytes=settings.disk_max_bytes)
        )
    url = settings.redis_url_value
    if url:
        from dspy_tiered_cache.tiers.redis import RedisTier

        tiers.append(
            RedisTier(
                url,
                codec=codec,
                prefix=settings.key_prefix,
                ttl=settings.redis_ttl,
                connect_timeout_ms=settings.redis_connect_timeout_ms,
                timeout_ms=settings.redis_timeout_ms,
                max_connections=settings.redis_max_connections,
                cluster=settings.redis_cluster,
            )
        )
    return tiers


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
        self.singleflight = SingleFlight()
        self.writer = BackgroundWriter(s.write_queue_size)
        self._generations: dict[str, tuple[int, float]] = {}
        self._digests: dict[bytes, str] = {}
        #: digest -> canonical request of recently keyed requests: what a replay miss or ``record_requests`` shows.
        self._requests: dict[str, bytes] = {}
        self._requests_bytes = 0
        self._mode = s.mode
        self._warned: dict[str, float] = {}
        if s.telemetry:
            telemetry.register(self)
        self.fleet = fleet.start_publisher(self) if s.fleet else None
        # Leases live in the most shared tier that can hold them (Redis, else the machine's SQLite file).
        lockable = [t for t in self.tiers if hasattr(t, "acquire_lock")]
        self._lock_tier: Tier | None = lockable[-1] if lockable and s.distributed_single_flight else None
        self._bus: InvalidationBus | None = None
        # Nothing here may touch the network: the subscriber builds its client lazily, in its own thread.
        source = next((t for t in reversed(self.tiers) if t.remote and isinstance(t, PubSubSource)), None)
        if source is not None and s.invalidation_pubsub and self.memory is not None:
            self._bus = InvalidationBus(
                source.pubsub_client,
                f"{s.key_prefix}:inv",
                self._apply_invalidation,
                self._generations.clear,
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
        return entry_key(self.settings.key_prefix, ns, self.generation(ns), digest)

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

    def generation(self, namespace: str) -> int:
        """The namespace's generation, re-read from the shared tier at most every ``generation_refresh_s``."""
        cached = self._generations.get(namespace)
        now = time.monotonic()
        if cached is not None and now - cached[1] < self.settings.generation_refresh_s:
            return cached[0]
        authority = self._authority
        if authority is None:
            return 0
        breaker = self.breakers.get(authority.name)
        if breaker is not None and not breaker.allow():
            return cached[0] if cached else 0
        try:
            gen = authority.get_generation(namespace)
        except Exception as exc:
            self._tier_failed(authority, "read generation of", exc)
            # Remember the failure for a refresh period: a hanging Redis must cost one timeout, not one per key.
            gen = cached[0] if cached else 0
            self._generations[namespace] = (gen, now)
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
                self._tier_failed(authority, "restore the generation in", exc)
        self._generations[namespace] = (gen, now)
        return gen

    # -- lookups -------------------------------------------------------------------------------------
    def get(self, key: str, *, options: CallOptions | None = None) -> Hit | None:
        """Walk the tiers in order; never raises. ``None`` is a miss (or a bypass)."""
        opts = options or DEFAULT_OPTIONS
        hit, start, now = self._begin_lookup(key, opts)
        if start < 0 or hit is not None:
            return hit
        for index in range(start, len(self.tiers)):
            tier = self.tiers[index]
            entry = self._remote_get(tier, key) if tier.remote else self._tier_get(tier, key)
            if entry is not None and self._fresh(entry, opts, now):
                return self._hit(index, key, entry, now)
        self.stats.miss(key)
        if opts.mode == REPLAY or (opts.mode is None and self._mode == REPLAY):
            raise self._replay_miss(key, opts)
        return None

    async def aget(self, key: str, *, options: CallOptions | None = None) -> Hit | None:
        opts = options or DEFAULT_OPTIONS
        hit, start, now = self._begin_lookup(key, opts)
        if start < 0 or hit is not None:
            return hit
        for index in range(start, len(self.tiers)):
            tier = self.tiers[index]
            if tier.remote:
                entry = self.writer.pending.get(key) or await self._atier_get(tier, key)
            else:
                entry = self._tier_get(tier, key)
            if entry is not None and self._fresh(entry, opts, now):
                return self._hit(index, key, entry, now)
        self.stats.miss(key)
        if opts.mode == REPLAY or (opts.mode is None and self._mode == REPLAY):
            raise self._replay_miss(key, opts)
        return None

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
        return pending if pending is not None else self._tier_get(tier, key)

    @staticmethod
    def _fresh(entry: Entry, opts: CallOptions, now: float) -> bool:
        if entry.expires_at is not None and entry.expires_at <= now:
            return False
        return opts.max_age is None or now - entry.created_at <= opts.max_age

    def _hit(self, index: int, key: str, entry: Entry, now: float) -> Hit | None:
        try:
            value = decode_value(entry.payload)
        except ValueError as exc:  # only reachable if a tier hands back bytes it did not check
            self._corrupt(self.tiers[index], key, CorruptEntry(f"payload is not JSON: {exc}"))
            return None
        if index:  # promote with the remaining lifetime, capped per tier
            self._promote(self.tiers[index], key, entry)
        self.stats.hit(key)
        return Hit(value, self.tiers[index].name, entry.created_at, entry.expires_at)

    def _tier_get(self, tier: Tier, key: str) -> Entry | None:
        if not self._may_read(tier):
            return None
        started = time.perf_counter()
        try:
            entry = tier.get(key)
        except Exception as exc:
            return self._read_failed(tier, key, exc, started)
        return self._read_done(tier, entry, started)

    async def _atier_get(self, tier: Tier, key: str) -> Entry | None:
        if not self._may_read(tier):
            return None
        started = time.perf_counter()
        try:
            entry = await tier.aget(key)
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
        breaker = self.breakers.get(tier.name)
        if breaker is not None:
            breaker.success()
        self.stats.record(tier.name, hit=entry is not None, seconds=time.perf_counter() - started)
        return entry

    def _read_failed(self, tier: Tier, key: str, exc: Exception, started: float) -> Entry | None:
        """Count the failure (a corrupt entry is also deleted); the read is a miss."""
        if isinstance(exc, CorruptEntry):
            self._corrupt(tier, key, exc)
        else:
            self._tier_failed(tier, "read from", exc, started)
        return None

    # -- stores --------------------------------------------------------------------------------------
    def set(self, key: str, value: Any, *, options: CallOptions | None = None) -> bool:
        """Store plain JSON data in every tier; never raises. False when nothing was stored."""
        payload = self.encode(value, options)
        if payload is None:
            return False
        self.set_payload(key, payload, options=options)
        return True

    async def aset(self, key: str, value: Any, *, options: CallOptions | None = None) -> bool:
        """Same as :meth:`set`: the memory write is immediate and remote writes go to the background writer."""
        return self.set(key, value, options=options)

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
            self._warn_once(str(exc).split(";")[0][:60], "dspy_tiered_cache: not caching a value: %s", exc)
            return None

    def set_payload(
        self, key: str, payload: bytes, *, options: CallOptions | None = None, landed: Tier | None = None
    ) -> None:
        """Write an encoded value to every tier; ``landed`` is written before returning even if remote."""
        now = time.time()
        entry = Entry(payload, now, self._expiry(options, now))
        self.stats.count("stores")
        for tier in self.tiers:
            if tier is landed:
                self._tier_set(tier, key, entry.capped(tier.ttl, now))
            else:
                self._store_in(tier, key, entry.capped(tier.ttl, now))
        if self.settings.record_requests and self._authority is not None:
            canonical = self.request_of(key)
            if canonical is not None:  # beside the answer, for exports and replay-miss diagnoses (portable.py)
                tier = self._authority
                self._store_in(tier, request_key(key), Entry(canonical, now, entry.expires_at).capped(tier.ttl, now))

    def _expiry(self, options: CallOptions | None, now: float) -> float | None:
        ttl = self.settings.ttl if options is None or isinstance(options.ttl, _Unset) else options.ttl
        if ttl is None:
            return None
        if self.settings.ttl_jitter:  # spread expiries so a batch written together does not expire together
            ttl *= 1.0 - random.random() * self.settings.ttl_jitter
        return now + ttl

    def _store_in(self, tier: Tier, key: str, entry: Entry) -> None:
        if tier.remote and self.settings.write_behind:
            self.writer.submit(key, entry, lambda: self._tier_set(tier, key, entry))
        else:
            self._tier_set(tier, key, entry)

    def _tier_set(self, tier: Tier, key: str, entry: Entry) -> None:
        breaker = self.breakers.get(tier.name)
        if breaker is not None and not breaker.allow():
            self.stats.record(tier.name, skipped=True)
            return
        started = time.perf_counter()
        try:
            tier.set(key, entry)
        except Exception as exc:
            self._tier_failed(tier, "write to", exc, started)
            return
        if breaker is not None:
            breaker.success()
        self.stats.record(tier.name, set_=True)

    # -- single-flight -------------------------------------------------------------------------------
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

        Within a process, followers wait for the leader; across processes, the leader holds a short lease in the
        shared tier while the other processes' leaders poll for its answer. Returns ``(value, level)``: level is
        the tier that served it, ``"joined"`` when another caller's computation did, ``"miss"`` or ``"bypass"``.
        """
        hit = self.get(key, options=options)
        if hit is not None:
            return decode(hit.value), hit.level
        if not self._may_share(options):
            value = compute()
            self._store_computed(key, value, options, encode)
            return value, self._miss_level(options)
        flight, leader = self.singleflight.begin(key)
        if not leader:
            payload = flight.wait(self.settings.single_flight_timeout)
            if payload is not None:
                self.stats.count("joined")
                return decode(decode_value(payload)), "joined"
            value = compute()
            self._store_computed(key, value, options, encode)
            return value, "miss"
        payload = None
        try:
            # A leader that finished between our lookup and begin() has left its answer here: do not repeat it.
            payload = self.peek_local(key, max_age=options.max_age if options else None)
            if payload is not None:
                self.stats.count("joined")
                return decode(decode_value(payload)), "joined"
            token, entry, level = self.acquire_or_wait(key)
            if entry is not None:
                payload = entry.payload
                return decode(decode_value(payload)), level
            try:
                value = compute()
                payload = self._store_computed(key, value, options, encode, landed=bool(token))
            finally:
                self._release_lease(key, token)
            return value, "miss"
        finally:
            self.singleflight.finish(key, flight, payload)

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
        if not self._may_share(options):
            value = await compute()
            self._store_computed(key, value, options, encode)
            return value, self._miss_level(options)
        flight, leader = self.singleflight.begin(key)
        if not leader:
            payload = await flight.wait_async(self.settings.single_flight_timeout)
            if payload is not None:
                self.stats.count("joined")
                return decode(decode_value(payload)), "joined"
            value = await compute()
            self._store_computed(key, value, options, encode)
            return value, "miss"
        payload = None
        try:
            payload = self.peek_local(key, max_age=options.max_age if options else None)
            if payload is not None:
                self.stats.count("joined")
                return decode(decode_value(payload)), "joined"
            token, entry, level = await self.aacquire_or_wait(key)
            if entry is not None:
                payload = entry.payload
                return decode(decode_value(payload)), level
            try:
                value = await compute()
                payload = self._store_computed(key, value, options, encode, landed=bool(token))
            finally:
                await self._arelease_lease(key, token)
            return value, "miss"
        finally:
            self.singleflight.finish(key, flight, payload)

    def _may_share(self, options: CallOptions | None) -> bool:
        return self.settings.single_flight and self._miss_level(options) == "miss"

    def _miss_level(self, options: CallOptions | None) -> str:
        reads = self._enabled and not (options and options.bypass_read) and self.mode_of(options) != REFRESH
        return "miss" if reads else "bypass"

    def _store_computed(
        self, key: str, value: T, options: CallOptions | None, encode: Callable[[T], Any], *, landed: bool = False
    ) -> bytes | None:
        """Store a fresh answer. ``landed``: write the lease tier before returning, so that the processes
        polling it find the answer before they find the lease gone."""
        try:
            plain = encode(value)
        except Exception as exc:  # a door's converter failing must not fail the call
            self.stats.count("store_skipped")
            self._warn_once(
                type(exc).__name__, "dspy_tiered_cache: cannot convert a %s for caching: %s", type(value).__name__, exc
            )
            return None
        payload = self.encode(plain, options)
        if payload is not None:
            self.set_payload(key, payload, options=options, landed=self._lock_tier if landed else None)
        return payload

    # -- cross-process leases ------------------------------------------------------------------------
    def acquire_or_wait(self, key: str) -> tuple[str, Entry | None, str]:
        """For an in-process leader: take the cross-process lease on ``key``, or wait for the process holding
        it to store its answer. Returns ``(token, None, "")`` to go upstream (``token`` is ``""`` when leases
        are unavailable: compute anyway) or ``("", entry, level)`` when another process answered. A token
        must be given back with :meth:`release_lease` after the answer was stored with ``landed=``."""
        token = self._acquire_lease(key)
        deadline = time.monotonic() + self.settings.single_flight_timeout
        while token is None:  # another process is computing it: wait for its answer in the shared tier
            time.sleep(self.settings.lock_poll_s)
            entry, level = self._peek_shared(key)
            if entry is not None:
                self.stats.count("joined")
                return "", entry, level
            token = self._acquire_lease(key) if time.monotonic() < deadline else ""
        if token:  # double-check: the previous holder may have stored the answer just before we took it
            entry, level = self._peek_shared(key)
            if entry is not None:
                self._release_lease(key, token)
                self.stats.count("joined")
                return "", entry, level
        return token, None, ""

    async def aacquire_or_wait(self, key: str) -> tuple[str, Entry | None, str]:
        token = await self._aacquire_lease(key)
        deadline = time.monotonic() + self.settings.single_flight_timeout
        while token is None:
            await asyncio.sleep(self.settings.lock_poll_s)
            entry, level = await self._apeek_shared(key)
            if entry is not None:
                self.stats.count("joined")
                return "", entry, level
            token = await self._aacquire_lease(key) if time.monotonic() < deadline else ""
        if token:
            entry, level = await self._apeek_shared(key)
            if entry is not None:
                await self._arelease_lease(key, token)
                self.stats.count("joined")
                return "", entry, level
        return token, None, ""

    @property
    def lease_tier(self) -> Tier | None:
        """Where answers must land before a lease is released (pass as ``set_payload(landed=...)``)."""
        return self._lock_tier

    def release_lease(self, key: str, token: str) -> None:
        self._release_lease(key, token)

    def _lock_name(self, key: str) -> str:
        return key.replace(":e:", ":lock:", 1)

    def _lease_tier(self) -> Tier | None:
        """The tier holding leases, unless there is none or its breaker is open (then: no lease, fail open)."""
        tier = self._lock_tier
        if tier is None:
            return None
        breaker = self.breakers.get(tier.name)
        return tier if breaker is None or breaker.allow() else None

    def _acquire_lease(self, key: str) -> str | None:
        """A token when we hold the lease; ``""`` when leases are unavailable (compute anyway); ``None`` when
        another process holds it."""
        tier = self._lease_tier()
        if tier is None:
            return ""
        token = uuid.uuid4().hex
        try:
            return token if tier.acquire_lock(self._lock_name(key), token, self.settings.lock_lease_s) else None  # type: ignore[attr-defined]
        except Exception as exc:
            self._tier_failed(tier, "take a lease in", exc)
            return ""

    async def _aacquire_lease(self, key: str) -> str | None:
        tier = self._lease_tier()
        if tier is None:
            return ""
        token = uuid.uuid4().hex
        try:
            acquire = getattr(tier, "aacquire_lock", None)
            name, lease = self._lock_name(key), self.settings.lock_lease_s
            held = await acquire(name, token, lease) if acquire else tier.acquire_lock(name, token, lease)  # type: ignore[attr-defined]
            return token if held else None
        except Exception as exc:
            self._tier_failed(tier, "take a lease in", exc)
            return ""

    def _release_lease(self, key: str, token: str) -> None:
        tier = self._lock_tier
        if not token or tier is None:
            return
        name = self._lock_name(key)
        try:
            tier.release_lock(name, token)  # type: ignore[attr-defined]
        except Exception as exc:
            self._tier_failed(tier, "release a lease in", exc)
            self._release_later(tier, name, token)

    def _release_later(self, tier: Tier, name: str, token: str) -> None:
        """A lease we could not release (Redis hung) would stall other instances until it expires: keep trying
        in the background until it is released or would have expired anyway."""
        self.writer.retry(
            lambda: tier.release_lock(name, token),  # type: ignore[attr-defined]
            until=time.monotonic() + self.settings.lock_lease_s,
        )

    async def _arelease_lease(self, key: str, token: str) -> None:
        tier = self._lock_tier
        if not token or tier is None:
            return
        name = self._lock_name(key)
        try:
            release = getattr(tier, "arelease_lock", None)
            if release is not None:
                await release(name, token)
            else:
                tier.release_lock(name, token)  # type: ignore[attr-defined]
        except Exception as exc:
            self._tier_failed(tier, "release a lease in", exc)
            self._release_later(tier, name, token)

    def _peek_shared(self, key: str) -> tuple[Entry | None, str]:
        tier = self._lock_tier
        assert tier is not None
        entry = self._tier_get(tier, key)
        if entry is not None:
            self._promote(tier, key, entry)
        return entry, tier.name

    async def _apeek_shared(self, key: str) -> tuple[Entry | None, str]:
        tier = self._lock_tier
        assert tier is not None
        entry = await self._atier_get(tier, key)
        if entry is not None:
            self._promote(tier, key, entry)
        return entry, tier.name

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
                self._tier_failed(tier, "delete from", exc)
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
                self._tier_failed(tier, "bump generation in", exc)
        self._generations[ns] = (gen, time.monotonic())
        if self.memory is not None:
            self.memory.drop_namespace(f"{self.settings.key_prefix}:e:{ns}:")
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
                self._tier_failed(tier, "clear", exc)
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

    def _apply_invalidation(self, message: dict[str, Any]) -> None:
        """Another instance invalidated something: drop it from our memory tier."""
        mem = self.memory
        if mem is None:
            return
        op = message.get("op")
        if op == "del" and isinstance(message.get("key"), str):
            mem.delete(message["key"])
        elif op == "ns" and isinstance(message.get("ns"), str) and isinstance(message.get("gen"), int):
            ns, gen = message["ns"], message["gen"]
            current = self._generations.get(ns)
            if current is None or current[0] < gen:
                self._generations[ns] = (gen, time.monotonic())
            mem.drop_namespace(f"{self.settings.key_prefix}:e:{ns}:")
        elif op == "clear":
            mem.clear()

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

    # -- failure accounting --------------------------------------------------------------------------
    def _tier_failed(self, tier: Tier, action: str, exc: BaseException, started: float | None = None) -> None:
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
        self._warn_once(
            f"{tier.name}:{type(exc).__name__}",
            "dspy_tiered_cache: cannot %s tier %s (%r): %s: %s%s; serving as a miss",
            action,
            tier.name,
            tier,
            type(exc).__name__,
            exc,
            state,
        )

    def _corrupt(self, tier: Tier, key: str, exc: CorruptEntry) -> None:
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

    def _warn_once(self, token: str, msg: str, *args: Any) -> None:
        """Log a kind of failure loudly at most once a minute: a dead Redis must not flood the logs."""
        now = time.monotonic()
        if now - self._warned.get(token, -1e9) < 60.0:
            log.debug(msg, *args)
        else:
            self._warned[token] = now
            log.warning(msg, *args)


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
