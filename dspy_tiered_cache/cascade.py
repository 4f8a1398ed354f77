"""The cascade: request keys, lookups walking the tiers in order with promotion, write-through, invalidation.

This is the part of the core every call crosses; :class:`~dspy_tiered_cache.core.CacheCore` adds the lead/join
protocol (single-flight), the features' operations and the process-wide default core on top of it. Every tier
call goes through :class:`~dspy_tiered_cache.guard.TierGuard`, which times it, counts it, consults the tier's
circuit breaker and swallows its exceptions: "a broken tier is a miss, never an exception". Namespace generations
live in :mod:`.namespaces`. The sync and async lookups share every step but the awaited tier read itself.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from dspy_tiered_cache import telemetry
from dspy_tiered_cache.breaker import CircuitBreaker, breaker_for
from dspy_tiered_cache.codec import CodecError, CorruptEntry, Entry, FrameCodec, encode_value
from dspy_tiered_cache.coherence import SHARE_MAX_BYTES, AnswerSharing, InvalidationBus, PubSubSource
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
from dspy_tiered_cache.stats import Stats
from dspy_tiered_cache.tiers.base import Tier, TierHealth
from dspy_tiered_cache.tiers.build import build_tiers
from dspy_tiered_cache.tiers.memory import MemoryTier
from dspy_tiered_cache.writer import BackgroundWriter

log = logging.getLogger("dspy_tiered_cache")


def bare_replay_miss(core: Cascade, key: str, options: CallOptions, reason: str) -> ReplayMiss:
    """A replay miss when no feature describes it: the namespace and key only."""
    namespace = options.namespace or core.settings.namespace
    return ReplayMiss(model=None, namespace=namespace, prompt=None, key=key, reason=reason)


class Cascade:
    """Keys, lookups, stores and invalidation over a list of tiers (see the module docstring)."""

    #: Builds the error of a replay-mode miss; the record/replay feature provides a descriptive one (hooks.py).
    _describe_miss: Callable[..., ReplayMiss] = staticmethod(bare_replay_miss)

    def __init__(
        self, settings: CacheSettings | None = None, *, tiers: Iterable[Tier] | None = None, **overrides: Any
    ) -> None:
        self.settings = s = load_settings(settings, **overrides)
        if s.log_level is not None:  # the user's explicit choice for our own logger (never the root logger)
            log.setLevel(s.log_level)
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
        self.writer = BackgroundWriter(s.write_queue_size)
        self._digests: dict[bytes, str] = {}
        #: digest -> canonical request of recently keyed requests: what a replay miss or ``record_requests`` shows.
        self._requests: dict[str, bytes] = {}
        self._requests_bytes = 0
        self._mode = s.mode
        #: Every tier call goes through it: timed, counted, breaker-checked, exceptions swallowed.
        self.guard = TierGuard(self.stats, self.breakers)
        self.generations = Generations(s, self._authority, self.breakers, self.guard, self.memory)
        if s.telemetry:
            telemetry.register(self)
        self._bus: InvalidationBus | None = None
        #: Told of every answer another process shared with us (the core wakes a caller waiting for it).
        self._shared_arrived: Callable[[str], None] = _ignore
        # Nothing here may touch the network: the subscriber builds its client lazily, in its own thread.
        source = next((t for t in reversed(self.tiers) if t.remote and isinstance(t, PubSubSource)), None)
        if source is not None and s.invalidation_pubsub and self.memory is not None:
            self._bus = InvalidationBus(
                source.pubsub_client, f"{s.key_prefix}:inv", self._on_message, self.generations.forget
            )
            self.generations.listen(self._bus.live_since)
            if isinstance(source, AnswerSharing):
                source.share_answers(self._bus.answers_channel, self._bus.answer_message, SHARE_MAX_BYTES)

    def _on_message(self, message: dict[str, Any]) -> None:
        """A message from another instance: a shared answer, or an invalidation (:mod:`.namespaces`)."""
        if message.get("op") == "put":
            self._take_shared(message["key"], message["frame"])
        else:
            self.generations.apply(message)

    def _take_shared(self, key: str, frame: bytes) -> None:
        """Another process stored ``frame`` under ``key``: keep it in our memory tier, trusted no more than a Redis
        read. Only an entry key of our prefix, in a namespace we use, at the generation we use now (a message
        from before a bump never brings an invalidated answer back); the frame passes the codec's checks."""
        memory, prefix = self.memory, f"{self.settings.key_prefix}:e:"
        head, _, digest = key.rpartition(":")
        stem, _, gen = head.rpartition(":")
        if memory is None or len(frame) > SHARE_MAX_BYTES or not stem.startswith(prefix) or len(digest) != 40:
            return
        if not gen.isdigit():
            return
        if self.generations.known(stem[len(prefix) :]) != int(gen):
            return
        try:
            entry = self.codec.loads(frame)
        except ValueError:  # corrupt, forged, foreign, or a dictionary we have not fetched: a later GET decides
            self.stats.count("shared_rejected")
            return
        now = time.time()
        if not entry.expired(now):
            memory.set(key, entry.capped(memory.ttl, now))
            self.stats.count("shared_taken")
            self._shared_arrived(key)

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
            entry = self._remote_get(tier, key, opts) if tier.remote else self.guard.get(tier, key)
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
                entry = await self._aremote_get(tier, key, opts)
            else:
                entry = self.guard.get(tier, key)
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
        """The error of a replay-mode miss; the record/replay feature describes it (what was asked, how the
        closest recorded request differs)."""
        return self._describe_miss(self, key, opts, reason)

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

    def _remote_get(self, tier: Tier, key: str, opts: CallOptions) -> Entry | None:
        pending = self.writer.pending.get(key)  # our own write not yet landed: read-your-writes
        return pending if pending is not None else self.guard.get(tier, key)

    async def _aremote_get(self, tier: Tier, key: str, opts: CallOptions) -> Entry | None:
        return self.writer.pending.get(key) or await self.guard.aget(tier, key)

    @staticmethod
    def _fresh(entry: Entry, opts: CallOptions, now: float) -> bool:
        if entry.expires_at is not None and entry.expires_at <= now:
            return False
        return opts.max_age is None or now - entry.created_at <= opts.max_age

    def _hit(self, index: int, key: str, entry: Entry, now: float) -> Hit | None:
        try:
            value = orjson.loads(entry.payload)  # decode_value(), minus a call
        except ValueError as exc:  # only reachable if a tier hands back bytes it did not check
            self.guard.corrupt(self.tiers[index], key, CorruptEntry(f"payload is not JSON: {exc}"))
            return None
        if index:  # promote with the remaining lifetime, capped per tier
            self.promote(self.tiers[index], key, entry)
        self.stats.hit(key)
        # Hit(...) without the named tuple's generated __new__ (a Python call on every hit below L1).
        return tuple.__new__(Hit, (value, self.tiers[index].name, entry.created_at, entry.expires_at))

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
            self.guard.warn_once(str(exc).split(";")[0][:60], "dspy_tiered_cache: not caching a value: %s", exc)
            return None

    def set_payload(
        self, key: str, payload: bytes, *, options: CallOptions | None = None, landed: Tier | None = None
    ) -> None:
        """Write an encoded value to every tier; ``landed`` is written before returning even if remote."""
        last = self._fan_out(key, payload, options, landed)
        if last is not None:
            self.guard.set(last[0], key, last[1])

    async def aset_payload(
        self, key: str, payload: bytes, *, options: CallOptions | None = None, landed: Tier | None = None
    ) -> None:
        """:meth:`set_payload` for the event loop: the ``landed`` write is awaited, the rest never waits."""
        last = self._fan_out(key, payload, options, landed)
        if last is not None:
            await self.guard.aset(last[0], key, last[1])

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
            if canonical is not None:  # beside the answer: exports and replay-miss diagnoses (record/replay) read it
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
            self.writer.submit(key, entry, lambda: self.guard.set(tier, key, entry))
        else:
            self.guard.set(tier, key, entry)

    def _miss_level(self, options: CallOptions | None) -> str:
        reads = self._enabled and not (options and options.bypass_read) and self.mode_of(options) != REFRESH
        return "miss" if reads else "bypass"

    def promote(self, source: Tier, key: str, entry: Entry) -> None:
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
                self.guard.tier_failed(tier, "delete from", exc)
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
                self.guard.tier_failed(tier, "bump generation in", exc)
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
                self.guard.tier_failed(tier, "clear", exc)
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

    @property
    def shared_tier(self) -> Tier | None:
        """The most shared tier: it holds namespace generations, and exports read from it."""
        return self._authority

    def health(self) -> list[TierHealth]:
        return [tier.health() for tier in self.tiers]

    def close(self) -> None:
        """Stop the invalidation subscriber and the background writer, then release every tier."""
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


def _ignore(key: str) -> None:
    return None
