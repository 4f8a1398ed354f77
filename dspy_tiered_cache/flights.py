"""Who answers a missed key: the lead/join protocol, written once and driven sync or async.

After a miss, N identical callers (threads, asyncio tasks, other processes) should make one upstream call. The
decisions — join this process's leader or lead; take the cross-process lease or wait for its holder's answer in
the shared tier; re-check what a leader that just finished left behind — are made by one generator,
:func:`_claim_steps`, which *yields* the I/O it needs (:class:`Wait`, :class:`Sleep`, :class:`TakeLease`,
:class:`PeekShared`) and receives the results. :func:`drive` runs those steps with blocking calls and
:func:`adrive` awaits them, so the sync and async paths cannot drift apart (httpx's sans-I/O pattern).

A caller gets a :class:`Claim`. Either it carries an ``answer`` (another caller's payload: nothing to compute),
or the caller leads and must end the claim exactly once: :meth:`Claims.fulfil` with the value it computed (the
answer lands in the lease tier before the lease is given back, then followers wake with it), or
:meth:`Claims.abandon` when the computation failed (lease released, followers wake at once and one of them
leads). Both are idempotent, so an error path that ends a claim twice is harmless — LiteLLM's retries re-enter
the lookup of the same call, and a claim left open would strand every later identical request.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dspy_tiered_cache import forksafe
from dspy_tiered_cache.keys import lease_key
from dspy_tiered_cache.singleflight import Flight, SingleFlight

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from dspy_tiered_cache.breaker import CircuitBreaker
    from dspy_tiered_cache.codec import Entry
    from dspy_tiered_cache.guard import TierGuard
    from dspy_tiered_cache.options import CallOptions
    from dspy_tiered_cache.settings import CacheSettings
    from dspy_tiered_cache.stats import Stats
    from dspy_tiered_cache.tiers.base import Tier
    from dspy_tiered_cache.writer import BackgroundWriter

__all__ = ["Claim", "ClaimHost", "Claims", "EntryLeaseTier", "LeaseTier", "Taken", "adrive", "drive"]

#: Rounds a follower makes when the flight it joined ended without an answer (its leader failed): it then leads.
_MAX_ROUNDS = 3


@runtime_checkable
class LeaseTier(Protocol):
    """A tier that can hold short cross-process leases (Redis, the shared SQLite file)."""

    name: str

    def acquire_lock(self, name: str, token: str, lease_s: float) -> bool: ...

    def release_lock(self, name: str, token: str) -> None: ...


@runtime_checkable
class EntryLeaseTier(Protocol):
    """A tier that can hold the lease on the entry key itself, the lookup and the claim in one command (Redis 7):
    see :mod:`dspy_tiered_cache.tiers.redis_leases` for the outcomes of :meth:`lease_get`."""

    name: str

    def entry_leases(self) -> bool | None: ...

    def lease_get(self, key: str, token: str, lease_s: float) -> Entry | None: ...

    async def alease_get(self, key: str, token: str, lease_s: float) -> Entry | None: ...

    def lease_outcome(self, token: str) -> str: ...

    def holds_entry_lease(self, key: str, token: str) -> bool: ...

    def held_token(self, key: str) -> str | None: ...

    def release_entry_lease(self, key: str, token: str) -> int: ...

    async def arelease_entry_lease(self, key: str, token: str) -> int: ...


class ClaimHost(Protocol):
    """What the protocol needs of the cache it serves (the core): public parts only, so this module is typed by
    what it uses, and the core drives it without it reaching back into the core's internals."""

    @property
    def settings(self) -> CacheSettings: ...
    @property
    def tiers(self) -> Sequence[Tier]: ...
    @property
    def stats(self) -> Stats: ...
    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]: ...
    @property
    def guard(self) -> TierGuard: ...
    @property
    def writer(self) -> BackgroundWriter: ...

    def peek_local(self, key: str, *, max_age: float | None = None) -> bytes | None: ...

    def promote(self, source: Tier, key: str, entry: Entry) -> None: ...


@dataclass(slots=True)
class Claim:
    """One caller's part in answering ``key`` after a miss."""

    key: str
    #: Another caller's encoded answer; when set there is nothing to compute.
    answer: bytes | None = None
    #: The tier that served ``answer``: ``"joined"`` for a leader in this process, else the shared tier's name.
    level: str = "miss"
    #: The in-process flight this caller leads (its followers wait on it), if any.
    flight: Flight | None = None
    #: The cross-process lease this caller holds, ``""`` when none.
    token: str = ""
    #: Whether that lease lives on the entry key (the answer's write ends it) rather than on a lease key.
    on_entry: bool = False
    ended: bool = field(default=False, repr=False)

    @property
    def leads(self) -> bool:
        """Whether this caller must compute the value (and then fulfil or abandon the claim)."""
        return self.answer is None


# -- the steps the protocol asks its driver to perform ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Wait:
    flight: Flight
    timeout: float


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float
    #: The key whose answer would end the sleep early when it arrives over the invalidation channel.
    key: str = ""


@dataclass(frozen=True, slots=True)
class TakeLease:
    key: str
    max_age: float | None = None


@dataclass(frozen=True, slots=True)
class Taken:
    """What taking a lease gave: a token (``""``: no lease, compute anyway), ``busy`` (another process holds it),
    or, for a lease on the entry key, the answer found there instead (``found``, read from tier ``level``)."""

    token: str = ""
    busy: bool = False
    on_entry: bool = False
    found: Entry | None = None
    level: str = ""


_BUSY = "busy"  # a pre-taken "lease" that records another process's lease (tokens are hex)
#: How long a lease a lookup took waits for the claim that follows (normally at once) before it is given back.
REAP_S = 2.0


@dataclass(frozen=True, slots=True)
class PeekShared:
    key: str


Step = Wait | Sleep | TakeLease | PeekShared
Steps = Generator[Step, Any, Claim]


class Claims:
    """The core's single-flight: the in-process flights and the cross-process leases, behind one protocol."""

    def __init__(self, core: ClaimHost) -> None:
        self.core = core
        self.flights = SingleFlight()
        lockable = [t for t in core.tiers if isinstance(t, LeaseTier)]
        #: Leases live in the most shared tier that can hold them (Redis, else the machine's SQLite file).
        self.tier: Tier | None = lockable[-1] if lockable and core.settings.distributed_single_flight else None
        self._leases: LeaseTier | None = self.tier if isinstance(self.tier, LeaseTier) else None
        #: The same tier when it can hold leases on the entry keys (Redis 7: see :meth:`lookup`).
        self._entry: EntryLeaseTier | None = self.tier if isinstance(self.tier, EntryLeaseTier) else None
        #: key -> (token of a lease a lookup took, or _BUSY: it saw another's; when), for the claim that follows.
        self._pretaken: dict[str, tuple[str, float]] = {}
        self._pre_lock = threading.Lock()
        #: key -> the event a thread waiting for another process's answer sleeps on (see :meth:`nap`).
        self._arrivals: dict[str, threading.Event] = {}
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._pre_lock = threading.Lock()  # another thread may have held it at the fork
        self._pretaken = {}  # the parent's leases are the parent's to end

    def arrived(self, key: str) -> None:
        """Another process's answer for ``key`` reached our memory tier (shared over the invalidation channel):
        wake the thread polling for it now instead of at its next ``lock_poll_s``."""
        event = self._arrivals.get(key)
        if event is not None:
            event.set()

    def nap(self, step: Sleep) -> None:
        """A blocking poll interval that ends early when the awaited answer arrives (an answer that arrived just
        before is found by the memory-tier look that follows every nap). One waiter per key per process: the
        others follow its in-process flight."""
        if not step.key:
            time.sleep(step.seconds)
            return
        event = self._arrivals[step.key] = threading.Event()
        try:
            event.wait(step.seconds)
        finally:
            self._arrivals.pop(step.key, None)

    def __len__(self) -> int:
        """Flights under way in this process (each has a leader that must still end its claim)."""
        return len(self.flights)

    # -- the decisions, once ----------------------------------------------------------------------------------
    def steps(self, key: str, options: CallOptions | None) -> Steps:
        settings = self.core.settings
        max_age = options.max_age if options is not None else None
        for _ in range(_MAX_ROUNDS):
            flight, leader = self.flights.begin(key)
            if not leader:
                payload = yield Wait(flight, settings.single_flight_timeout)
                if payload is not None:
                    return self._joined(key, payload, "joined")
                if not flight.done:  # the leader is still going after the timeout: compute, uncoordinated
                    return Claim(key)
                continue  # the leader failed: lead now (or join whoever did first)
            # A leader that finished between our lookup and begin() left its answer here: do not repeat it.
            payload = self.core.peek_local(key, max_age=max_age)
            if payload is not None:
                self.flights.finish(key, flight, payload)
                return self._joined(key, payload, "joined")
            claim = Claim(key, flight=flight)
            if self._lease_tier() is None:
                return claim
            taken: Taken = yield TakeLease(key, max_age)
            deadline = time.monotonic() + settings.single_flight_timeout
            while taken.busy:  # another process computes it: wait for its answer in the shared tier
                yield Sleep(settings.lock_poll_s, key)
                # Its answer may already be here: shared over the invalidation channel into our memory tier.
                payload = self.core.peek_local(key, max_age=max_age)
                if payload is not None:
                    return self._answered(claim, payload, "l1")
                if not taken.on_entry:  # a lease on the entry key is read by the next TakeLease itself
                    entry, level = yield PeekShared(key)
                    if entry is not None:
                        return self._answered(claim, entry.payload, level)
                taken = (yield TakeLease(key, max_age)) if time.monotonic() < deadline else Taken()
            if taken.found is not None:
                return self._answered(claim, taken.found.payload, taken.level)
            claim.token, claim.on_entry = taken.token, taken.on_entry
            if taken.token and not taken.on_entry:  # the previous holder may have stored its answer just before
                entry, level = yield PeekShared(key)
                if entry is not None:
                    return self._answered(claim, entry.payload, level)
            return claim
        return Claim(key)

    def _joined(self, key: str, payload: bytes, level: str) -> Claim:
        self.core.stats.count("joined")
        return Claim(key, answer=payload, level=level, ended=True)

    def _answered(self, claim: Claim, payload: bytes, level: str) -> Claim:
        """Another process answered while we led in this process: hand its answer to our followers."""
        self.end(claim, payload)
        self.core.stats.count("joined")
        return Claim(claim.key, answer=payload, level=level, ended=True)

    # -- ending a claim ---------------------------------------------------------------------------------------
    def end(self, claim: Claim, payload: bytes | None) -> None:
        """Give the lease back and wake the followers with ``payload`` (None: lead yourselves). Idempotent."""
        on_entry = claim.on_entry
        token = self._close(claim)
        if token:
            self.release(claim.key, token, on_entry=on_entry)
        self._wake(claim, payload)

    async def aend(self, claim: Claim, payload: bytes | None) -> None:
        """:meth:`end` for the event loop: the lease release is awaited."""
        on_entry = claim.on_entry
        token = self._close(claim)
        if token:
            await self.arelease(claim.key, token, on_entry=on_entry)
        self._wake(claim, payload)

    @staticmethod
    def _close(claim: Claim) -> str:
        """Mark the claim ended (once) and hand back the lease token to release, if any."""
        if claim.ended:
            return ""
        claim.ended = True
        token, claim.token = claim.token, ""
        return token

    def _wake(self, claim: Claim, payload: bytes | None) -> None:
        if claim.flight is not None:
            flight, claim.flight = claim.flight, None
            self.flights.finish(claim.key, flight, payload)

    # -- leases -----------------------------------------------------------------------------------------------
    def _lease_tier(self) -> LeaseTier | None:
        """The tier holding leases, unless there is none or its breaker is open (then: no lease, fail open)."""
        tier = self._leases
        if tier is None:
            return None
        breaker = self.core.breakers.get(tier.name)
        return tier if breaker is None or breaker.allow() else None

    def on_entry(self) -> bool:
        """Whether leases may live on the entry keys (then a lookup about to claim reads with :meth:`lookup`)."""
        tier = self._entry  # (every L2 lookup asks: one call, not two)
        return tier is not None and tier.entry_leases() is not False

    def _on_entry(self) -> EntryLeaseTier | None:
        """The lease tier when leases may live on the entry keys (Redis 7, or not asked yet)."""
        return self._entry if self.on_entry() else None

    # A lookup about to claim reads with the lease itself (SET NX GET): finding nothing, it holds the lease for
    # the claim that follows; finding another's, the claim starts by waiting. A lease no claim comes for (a caller
    # that only looks up: a stream, an embedding) is given back after REAP_S: others wait no longer than that.
    def lookup(self, key: str) -> Entry | None:
        """The shared tier's read of a lookup that will claim on a miss (see above); never raises."""
        tier, token, lease_s = self._entry, os.urandom(16).hex(), self.core.settings.lock_lease_s
        assert tier is not None
        entry = self.core.guard.get(self._shared(), key, lambda: tier.lease_get(key, token, lease_s))
        self._looked(key, token, tier.lease_outcome(token))
        return entry

    async def alookup(self, key: str) -> Entry | None:
        tier, token, lease_s = self._entry, os.urandom(16).hex(), self.core.settings.lock_lease_s
        assert tier is not None
        entry = await self.core.guard.aget(self._shared(), key, lambda: tier.alease_get(key, token, lease_s))
        self._looked(key, token, tier.lease_outcome(token))
        return entry

    def _looked(self, key: str, token: str, outcome: str) -> None:
        if len(self._pretaken) > 4096:  # a lookup of a key this process leads itself sees its own lease: forget
            self._forget_stale()
        if outcome == "held":
            with self._pre_lock:
                self._pretaken[key] = (token, time.monotonic())
            self._reap_later(key, token)
        elif outcome == "busy":
            with self._pre_lock:
                self._pretaken.setdefault(key, (_BUSY, time.monotonic()))
        elif outcome == "sent":
            self._clean_up(key, token)

    def _forget_stale(self) -> None:
        """Drop records of other leases seen, and leases past their lifetime (the rest are reaped in time)."""
        expired = time.monotonic() - self.core.settings.lock_lease_s
        with self._pre_lock:
            for key, (token, when) in list(self._pretaken.items()):
                if token == _BUSY or when < expired:
                    del self._pretaken[key]

    def _pre(self, key: str) -> tuple[str, float] | None:
        if not self._pretaken:
            return None
        with self._pre_lock:
            return self._pretaken.pop(key, None)

    def _reap_later(self, key: str, token: str) -> None:
        tier = self._entry
        assert tier is not None
        reaping = False

        def reap() -> None:
            nonlocal reaping
            if not reaping:
                with self._pre_lock:
                    if self._pretaken.get(key, ("",))[0] != token:
                        return  # a claim took it over
                    del self._pretaken[key]
                reaping = True
            if tier.holds_entry_lease(key, token):
                tier.release_entry_lease(key, token)  # raises while the tier is down: retried

        self.core.writer.retry(reap, until=time.monotonic() + self.core.settings.lock_lease_s, every=REAP_S)

    def _clean_up(self, key: str, token: str) -> None:
        """A lease command without reply (a hung Redis) may land when the server resumes: give it back then (an
        empty key is checked again for a while: the command may still be in the server's input)."""
        tier = self._entry
        assert tier is not None
        answered_at = 0.0

        def clean() -> None:
            nonlocal answered_at
            if tier.release_entry_lease(key, token) == -1:
                answered_at = answered_at or time.monotonic()
                if time.monotonic() - answered_at < REAP_S:
                    raise LookupError("nothing there yet")

        self.core.writer.retry(clean, until=time.monotonic() + self.core.settings.lock_lease_s)

    def take(self, key: str, max_age: float | None = None) -> Taken:
        """The lease for ``key``, or what stands in for it (see :class:`Taken`)."""
        tier = self._lease_tier()
        if tier is None:
            return Taken()
        entry_tier, taken = self._before_taking(key)
        if entry_tier is not None and taken is None:
            token, lease_s = os.urandom(16).hex(), self.core.settings.lock_lease_s
            entry = self.core.guard.get(self._shared(), key, lambda: entry_tier.lease_get(key, token, lease_s))
            taken = self._taken(entry_tier, key, token, entry, max_age)
        if taken is not None:
            return taken
        token = os.urandom(16).hex()
        try:
            held = tier.acquire_lock(lease_key(key), token, self.core.settings.lock_lease_s)
        except Exception as exc:
            self._failed("take a lease in", exc)
            return Taken()
        return Taken(token) if held else Taken(busy=True)

    async def atake(self, key: str, max_age: float | None = None) -> Taken:
        tier = self._lease_tier()
        acquire = getattr(tier, "aacquire_lock", None)
        if tier is None or acquire is None:
            return self.take(key, max_age)
        entry_tier, taken = self._before_taking(key)
        if entry_tier is not None and taken is None:
            token, lease_s = os.urandom(16).hex(), self.core.settings.lock_lease_s
            entry = await self.core.guard.aget(self._shared(), key, lambda: entry_tier.alease_get(key, token, lease_s))
            taken = self._taken(entry_tier, key, token, entry, max_age)
        if taken is not None:
            return taken
        token = os.urandom(16).hex()
        try:
            held = await acquire(lease_key(key), token, self.core.settings.lock_lease_s)
        except Exception as exc:
            self._failed("take a lease in", exc)
            return Taken()
        return Taken(token) if held else Taken(busy=True)

    def _before_taking(self, key: str) -> tuple[EntryLeaseTier | None, Taken | None]:
        """The tier for a lease on the entry key (if any), and what this process's lookup already found."""
        pre = self._pre(key)
        if pre is not None and pre[0] != _BUSY:
            return self._entry, Taken(pre[0], on_entry=True)  # the lookup took it
        entry_tier = self._on_entry()
        if entry_tier is not None and pre is not None and time.monotonic() - pre[1] < self.core.settings.lock_poll_s:
            return entry_tier, Taken(busy=True, on_entry=True)  # the lookup just saw another's lease
        return entry_tier, None

    def _taken(
        self, tier: EntryLeaseTier, key: str, token: str, entry: Entry | None, max_age: float | None
    ) -> Taken | None:
        """What ``SET NX GET`` on the entry key gave; None: the server does not take it (use a lease key).
        A foreign type under the key (WRONGTYPE) or a value too old for this call took nothing: compute without a
        lease (never wait on a lease nobody holds)."""
        outcome = tier.lease_outcome(token)
        if outcome == "ours":  # a lease a lookup of this process took, for this claim (the flight's leader)
            held = tier.held_token(key)
            with self._pre_lock:
                if held is not None and self._pretaken.get(key, ("",))[0] == held:
                    del self._pretaken[key]
            return Taken(held, on_entry=True) if held else Taken(busy=True, on_entry=True)
        if outcome == "held":
            return Taken(token, on_entry=True)
        if outcome == "busy":
            return Taken(busy=True, on_entry=True)
        if outcome == "sent":
            self._clean_up(key, token)
        if entry is not None and outcome in ("none", "old"):
            now = time.time()
            if not entry.expired(now) and (max_age is None or now - entry.created_at <= max_age):
                assert self.tier is not None
                self.core.promote(self.tier, key, entry)
                return Taken(found=entry, level=tier.name)
        if outcome == "old":  # the server does not take NX GET: a separate lease key, as before
            return None
        return Taken()

    def _shared(self) -> Tier:
        return self.tier  # type: ignore[return-value]  # only called when leases are on (a lease tier exists)

    def release(self, key: str, token: str, *, on_entry: bool = False) -> None:
        """Give a lease back (see :meth:`_release_failed` for one that cannot be). A lease on the entry key that
        the answer's write replaced needs nothing."""
        if on_entry:
            self._release_entry(key, token)
            return
        tier = self._leases
        if not token or tier is None:
            return
        name = lease_key(key)
        try:
            tier.release_lock(name, token)
        except Exception as exc:
            self._release_failed(lambda: tier.release_lock(name, token), exc)

    def _release_entry(self, key: str, token: str) -> None:
        tier = self._entry
        if not token or tier is None or not tier.holds_entry_lease(key, token):
            return
        try:
            tier.release_entry_lease(key, token)
        except Exception as exc:
            self._release_failed(lambda: tier.release_entry_lease(key, token), exc)

    def _failed(self, action: str, exc: Exception) -> None:
        if self.tier is not None:
            self.core.guard.tier_failed(self.tier, action, exc)

    async def arelease(self, key: str, token: str, *, on_entry: bool = False) -> None:
        if on_entry:
            tier = self._entry
            if not token or tier is None or not tier.holds_entry_lease(key, token):
                return
            try:
                await tier.arelease_entry_lease(key, token)
            except Exception as exc:
                self._release_failed(lambda: tier.release_entry_lease(key, token), exc)
            return
        lease_tier = self._leases
        release = getattr(lease_tier, "arelease_lock", None)
        if not token or lease_tier is None or release is None:
            self.release(key, token)
            return
        name = lease_key(key)
        try:
            await release(name, token)
        except Exception as exc:
            self._release_failed(lambda: lease_tier.release_lock(name, token), exc)

    def _release_failed(self, again: Callable[[], object], exc: Exception) -> None:
        """A lease we cannot release (Redis hung) would stall other processes until it expires: the background
        writer keeps trying until it is released or would have expired anyway (the tier keeps its bookkeeping of
        the lease until a release really went through)."""
        self._failed("release a lease in", exc)

        def retry() -> None:
            again()

        self.core.writer.retry(retry, until=time.monotonic() + self.core.settings.lock_lease_s)

    def peek(self, key: str) -> tuple[Entry | None, str]:
        tier = self.tier
        assert tier is not None
        entry = self.core.guard.get(tier, key)
        if entry is not None:
            self.core.promote(tier, key, entry)
        return entry, tier.name

    async def apeek(self, key: str) -> tuple[Entry | None, str]:
        tier = self.tier
        assert tier is not None
        entry = await self.core.guard.aget(tier, key)
        if entry is not None:
            self.core.promote(tier, key, entry)
        return entry, tier.name


def drive(claims: Claims, steps: Steps) -> Claim:
    """Run the protocol with blocking calls (threads, sync doors)."""
    result: Any = None
    try:
        while True:
            step = steps.send(result)
            if isinstance(step, Wait):
                result = step.flight.wait(step.timeout)
            elif isinstance(step, Sleep):
                claims.nap(step)
                result = None
            elif isinstance(step, TakeLease):
                result = claims.take(step.key, step.max_age)
            else:
                result = claims.peek(step.key)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def adrive(claims: Claims, steps: Steps) -> Claim:
    """Run the protocol on the event loop: every wait is awaited, no blocking I/O on the loop."""
    result: Any = None
    try:
        while True:
            step = steps.send(result)
            if isinstance(step, Wait):
                result = await step.flight.wait_async(step.timeout)
            elif isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                result = None
            elif isinstance(step, TakeLease):
                result = await claims.atake(step.key, step.max_age)
            else:
                result = await claims.apeek(step.key)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
