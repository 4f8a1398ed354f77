"""Cross-process leases in Redis (single-flight across processes), for :class:`~.redis.RedisTier`.

Two kinds. On Redis >= 7 the lease lives on the entry key itself: ``SET <entry key> <lease marker> NX GET PX <lease>``
is the lookup and the claim in one command, the answer's SET replaces the lease, and only an abandoned lease is
compare-and-deleted. Older servers (and a server that refuses ``NX GET``) keep a separate lease key per entry
(``<prefix>:lock:...``: SET NX, then DEL or compare-and-delete). The server version is asked once per client.

A lease marker is ``dtc-lease:<token>``; frames start with the codec's magic byte (0xD7), so every reader of
entry keys can tell a lease from a value (:func:`is_lease`) and treats a lease as a miss, never as a value.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis

from dspy_tiered_cache.codec import MissingDictionary
from dspy_tiered_cache.tiers.redis_direct import lease_get_command

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from dspy_tiered_cache.codec import Entry
    from dspy_tiered_cache.tiers.stored_dictionaries import StoredDictionaries

_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
#: Compare-and-delete of a lease on an entry key: 1 deleted (it was ours), 0 something else is there, -1 nothing is.
_RELEASE_ENTRY = (
    "local v = redis.call('get', KEYS[1]) if v == ARGV[1] then return redis.call('del', KEYS[1]) end "
    "if v then return 0 end return -1"
)
#: What a cross-process lease on an entry key holds: this, then the holder's token. Frames start with the codec's
#: magic byte (0xD7), so a lease marker is never taken for a frame, nor a frame for a lease.
LEASE_MARK = b"dtc-lease:"
_MARK_LEN = len(LEASE_MARK)
_WRITES_REFUSED: tuple[type[BaseException], ...] = tuple(
    kind
    for kind in (getattr(redis.exceptions, "OutOfMemoryError", None), redis.exceptions.ReadOnlyError)
    if isinstance(kind, type)
)
#: Redis 7 takes ``SET ... NX GET``: the lookup and the lease in one command.
_ENTRY_LEASE_MIN = (7, 0)


def is_lease(raw: object) -> bool:
    """Whether a value read from an entry key is a lease marker (another process computes it), not a frame: every
    reader of entry keys treats it as a miss."""
    return isinstance(raw, bytes) and raw[:_MARK_LEN] == LEASE_MARK


def _version(info: Any) -> tuple[int, ...] | None:
    """The lowest server version in an ``INFO server`` reply (a Cluster answers once per node)."""
    replies = list(info.values()) if info and all(isinstance(v, dict) for v in info.values()) else [info]
    versions = []
    for reply in replies:
        text = str((reply or {}).get("redis_version") or "")
        try:
            versions.append(tuple(int(p) for p in text.split(".")[:2]))
        except ValueError:
            return None
    return min(versions) if versions else None


class RedisLeases:
    """The lease operations of the Redis tier (a mixin: the tier provides its clients and decoding)."""

    if TYPE_CHECKING:

        @property
        def client(self) -> Any: ...

        async def _ac(self) -> Any: ...

        def get(self, key: str) -> Entry | None: ...

        def _runner(self) -> tuple[Any, Callable[[bytes], Any] | None]: ...

        async def _arunner(self) -> tuple[Any, Callable[[bytes], Awaitable[Any]] | None]: ...

        async def aget(self, key: str) -> Entry | None: ...

        def _decode(self, raw: bytes | None) -> Entry | None: ...

        _dictionaries: StoredDictionaries

    def _init_leases(self) -> None:
        #: token -> monotonic time until which the lease it names is surely still held (see acquire_lock).
        self._leases: dict[str, float] = {}
        #: Whether leases live on the entry keys (Redis >= 7): None until the server was asked (see lease_get).
        self._entry_leases: bool | None = None
        #: entry key -> token of the lease this tier took on it and that no write has replaced yet.
        self._entry_held: dict[str, str] = {}
        #: token -> what the last lease_get with it found (see lease_outcome).
        self._outcomes: dict[str, str] = {}

    # -- cross-process leases (single-flight across processes) -------------------------------------
    # A lease is released after every miss. The safe release is a compare-and-delete script (EVAL + GET + DEL:
    # three commands in Redis's accounting) because a lease that expired may belong to another process by now.
    # A lease taken by this tier less than half its lifetime ago cannot have expired (Redis keeps it for the whole
    # lifetime), so it is released with one DEL; only older leases pay for the script.
    def acquire_lock(self, name: str, token: str, lease_s: float) -> bool:
        held = bool(self.client.set(name, token, nx=True, px=max(1, int(lease_s * 1000))))
        return self._took(name, token, lease_s, held)

    async def aacquire_lock(self, name: str, token: str, lease_s: float) -> bool:
        held = bool(await (await self._ac()).set(name, token, nx=True, px=max(1, int(lease_s * 1000))))
        return self._took(name, token, lease_s, held)

    def _took(self, name: str, token: str, lease_s: float, held: bool) -> bool:
        if held:
            if len(self._leases) > 4096:  # leases never released (a crashed caller): forget the oldest half
                for stale in list(self._leases)[:2048]:
                    self._leases.pop(stale, None)
            self._leases[token] = time.monotonic() + lease_s / 2
        return held

    def _surely_ours(self, token: str) -> bool:
        safe_until = self._leases.pop(token, None)
        return safe_until is not None and time.monotonic() < safe_until

    def release_lock(self, name: str, token: str) -> None:
        """Delete the lock only if it is still ours (a lease that expired may now belong to another process)."""
        if self._surely_ours(token):
            self.client.delete(name)
        else:
            self.client.eval(_RELEASE, 1, name, token)

    async def arelease_lock(self, name: str, token: str) -> None:
        client = await self._ac()
        if self._surely_ours(token):
            await client.delete(name)
        else:
            await client.eval(_RELEASE, 1, name, token)

    # -- leases on the entry keys themselves (Redis >= 7) --------------------------------------------
    # ``SET <entry key> <lease marker> NX GET PX <lease>`` both looks the key up and claims it: nil means we hold the
    # lease, a lease marker means another process computes the answer, a frame is a hit. The answer's SET replaces
    # the lease (no DEL, no re-check GET); an abandoned lease is compare-and-deleted (rare: a failed computation).
    def entry_leases(self) -> bool | None:
        """Whether leases live on the entry keys: None until the server's version is known (see lease_get)."""
        return self._entry_leases

    def lease_get(self, key: str, token: str, lease_s: float) -> Entry | None:
        """Read ``key`` and take the lease on it when it holds nothing, in one command. What happened is kept for
        :meth:`lease_outcome`: ``held``, ``busy`` (another process's lease), ``ours`` (this process's, see
        :meth:`held_token`), ``none`` (a value is there, or a foreign type:
        WRONGTYPE raises and nothing was taken), ``old`` (a server before 7: a plain GET, leases on separate keys)
        or ``sent`` (no reply: the lease may land later, so the caller cleans it up)."""
        if self._entry_leases is None:
            self._entry_leases = self._supports(self.client.info("server"))
        if not self._entry_leases:
            self._outcomes[token] = "old"
            return self.get(key)
        self._outcomes[token] = "sent"
        try:
            client, run = self._runner()
            mark, px = LEASE_MARK + token.encode(), max(1, int(lease_s * 1000))
            if run is not None:
                raw = run(lease_get_command(key, mark, px))
            else:
                raw = client.set(key, mark, nx=True, get=True, px=px)
        except redis.ResponseError as exc:
            refused = self._refused(exc)
            self._outcomes[token] = "old" if refused == "old" else "none"
            if refused != "none":  # the server takes no lease (older, or full / read-only): a plain read
                return self.get(key)
            raise
        return self._decode_fetching(self._looked(key, token, raw))

    async def alease_get(self, key: str, token: str, lease_s: float) -> Entry | None:
        client, run = await self._arunner()
        if self._entry_leases is None:
            self._entry_leases = self._supports(await client.info("server"))
        if not self._entry_leases:
            self._outcomes[token] = "old"
            return await self.aget(key)
        self._outcomes[token] = "sent"
        try:
            mark, px = LEASE_MARK + token.encode(), max(1, int(lease_s * 1000))
            if run is not None:
                raw = await run(lease_get_command(key, mark, px))
            else:
                raw = await client.set(key, mark, nx=True, get=True, px=px)
        except redis.ResponseError as exc:
            refused = self._refused(exc)
            self._outcomes[token] = "old" if refused == "old" else "none"
            if refused != "none":  # the server takes no lease (older, or full / read-only): a plain read
                return await self.aget(key)
            raise
        return await self._adecode_fetching(client, self._looked(key, token, raw))

    @staticmethod
    def _supports(info: Any) -> bool:
        version = _version(info)
        return version is not None and version >= _ENTRY_LEASE_MIN

    def _refused(self, exc: redis.ResponseError) -> str:
        """Why ``SET NX GET`` was refused. ``old``: the server does not take it after all (a proxy, an older
        replica after a failover): back to separate lease keys. ``read``: it refuses writes now (full under
        ``noeviction``, a read-only replica): the lookup still reads, without a lease. ``none``: anything else
        (WRONGTYPE: a foreign value under the key) took nothing, and is the lookup's error."""
        text = str(exc)
        if "syntax" in text.lower():
            self._entry_leases = False
            return "old"
        if isinstance(exc, _WRITES_REFUSED) or text.startswith(("OOM", "READONLY", "command not allowed when used")):
            return "read"
        return "none"

    def _looked(self, key: str, token: str, raw: Any) -> bytes | None:
        """Record what ``SET NX GET`` found; the frame to decode, if it found one. Shared by the sync and async
        lookups; the value case (every L2 hit) is tested first."""
        if type(raw) is bytes and raw[:_MARK_LEN] != LEASE_MARK:
            self._outcomes[token] = "none"  # a value: a hit, or one too old/unreadable to serve (nothing taken)
            return raw
        if raw is None:
            self._outcomes[token] = "held"
            if len(self._entry_held) > 4096:  # leases never ended (a crashed caller): forget the oldest half
                for stale in list(self._entry_held)[:2048]:
                    self._entry_held.pop(stale, None)
            self._entry_held[key] = token
            return None
        if is_lease(raw):  # "ours": a lease this process took (a lookup's, for the claim that follows it)
            ours = self._entry_held.get(key)
            self._outcomes[token] = "ours" if ours is not None and raw == LEASE_MARK + ours.encode() else "busy"
            return None
        self._outcomes[token] = "none"  # a value of another type (memoryview, bytearray): as bytes
        return bytes(raw)

    def _decode_fetching(self, raw: bytes | None) -> Entry | None:
        """Decode a frame; one written with a dictionary trained since we started: fetch that once, then decode."""
        try:
            return self._decode(raw)
        except MissingDictionary as missing:
            if not self._dictionaries.wanted(missing.number):
                raise
            self._dictionaries.found(missing.number, self.client.get(self._dictionaries.key(missing.number)))
            return self._decode(raw)

    async def _adecode_fetching(self, client: Any, raw: bytes | None) -> Entry | None:
        """:meth:`_decode_fetching` for the async client."""
        try:
            return self._decode(raw)
        except MissingDictionary as missing:
            if not self._dictionaries.wanted(missing.number):
                raise
            self._dictionaries.found(missing.number, await client.get(self._dictionaries.key(missing.number)))
            return self._decode(raw)

    def lease_outcome(self, token: str) -> str:
        """What the last :meth:`lease_get` with ``token`` found (``none`` when it raised before sending)."""
        if len(self._outcomes) > 4096:
            self._outcomes.clear()
        return self._outcomes.pop(token, "none")

    def _written(self, key: str) -> None:
        """An answer's SET went through: it replaced any lease this tier held on the key."""
        if self._entry_held:
            self._entry_held.pop(key, None)

    def release_entry_lease(self, key: str, token: str) -> int:
        """Give back a lease on ``key`` that no answer replaced: compare-and-delete, so a value or another
        process's lease (ours expired) is never removed. Keeps the bookkeeping until it went through, so a retry
        after a hung Redis still releases it. Returns 1 deleted, 0 something else there, -1 nothing there."""
        if self._entry_held.get(key) not in (token, None):
            return 0  # this tier took a newer lease on the key since: that one is not ours to end here
        done = int(self.client.eval(_RELEASE_ENTRY, 1, key, LEASE_MARK + token.encode()))
        if self._entry_held.get(key) == token:
            self._entry_held.pop(key, None)
        return done

    async def arelease_entry_lease(self, key: str, token: str) -> int:
        if self._entry_held.get(key) not in (token, None):
            return 0
        done = int(await (await self._ac()).eval(_RELEASE_ENTRY, 1, key, LEASE_MARK + token.encode()))
        if self._entry_held.get(key) == token:
            self._entry_held.pop(key, None)
        return done

    def held_token(self, key: str) -> str | None:
        """The token of the lease this tier holds on ``key``, if any."""
        return self._entry_held.get(key)

    def holds_entry_lease(self, key: str, token: str) -> bool:
        """Whether the lease ``token`` on ``key`` is still this tier's to give back (no answer replaced it)."""
        return self._entry_held.get(key) == token
