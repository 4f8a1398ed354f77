"""The shared tier (L2) on Redis or Valkey: standalone, TLS (``rediss://``), unix socket, Sentinel or Cluster.

We own the clients so we own their failure behaviour: redis-py 8 retries with backoff by default, which makes a
refused port cost seconds per command. Here every command has explicit connect and operation timeouts in
milliseconds and no retries; the core's circuit breaker decides when to try again. Only single-key commands are
used (GET, SET PX, DEL, INCR), so Cluster needs no hash tags and never sees CROSSSLOT.

Constructing a tier never touches the network, in any topology: clients are built on first use, inside a tier
operation, so a Cluster or Sentinel that is down when the application starts is a counted tier failure (a miss),
never an exception out of ``TieredCache()``. Failures are classified for the breaker here, because only this
module knows what redis-py's errors mean per topology: a failed discovery (no sentinel, no cluster node
answering, CLUSTERDOWN) trips it at once, while one dead Cluster node (its slots refuse connections, the other
nodes answer) is a miss for those keys only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from dspy_tiered_cache import forksafe
from dspy_tiered_cache.codec import CorruptEntry, Entry, FrameCodec
from dspy_tiered_cache.dictionary import Dictionary, pack
from dspy_tiered_cache.keys import entry_pattern, generation_key
from dspy_tiered_cache.settings import mask_url
from dspy_tiered_cache.tiers.base import Tier, TierHealth, storage_figures
from dspy_tiered_cache.tiers.redis_direct import adirect, direct, get_command
from dspy_tiered_cache.tiers.redis_leases import RedisLeases, is_lease
from dspy_tiered_cache.tiers.redis_topology import cluster_seeds, sentinel_master
from dspy_tiered_cache.tiers.stored_dictionaries import StoredDictionaries

_RAISE = (
    "local v = tonumber(redis.call('get', KEYS[1])) "
    "if v == nil or v < tonumber(ARGV[1]) then redis.call('set', KEYS[1], ARGV[1]) return tonumber(ARGV[1]) end "
    "return v"
)
log = logging.getLogger("dspy_tiered_cache")


class ClientBuildError(redis.ConnectionError):
    """No client could be built (no seed node or sentinel answered): a tier failure like any other."""


#: Failures that mean the whole deployment could not be reached or used, whatever the key.
#: (RedisClusterUnreachableError, "the slot-map refresh reached no node", came with redis-py 5.1; older releases raise
#: ClientBuildError or ClusterDownError there, both below.)
_DISCOVERY_FAILED: tuple[type[BaseException], ...] = tuple(
    kind
    for kind in (
        ClientBuildError,
        getattr(redis.exceptions, "RedisClusterUnreachableError", None),
        redis.exceptions.ClusterDownError,
        redis.sentinel.MasterNotFoundError,
        redis.asyncio.sentinel.MasterNotFoundError,
    )
    if isinstance(kind, type)
)


def _generation(raw: bytes | None, namespace: str) -> int:
    """A generation read from Redis; a foreign non-integer reads as 0 until the next bump replaces it."""
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        log.warning("dspy_tiered_cache: the generation of namespace %r is not an integer; reading it as 0", namespace)
        return 0


class RedisTier(RedisLeases, Tier):
    name = "l2"
    remote = True

    def __init__(
        self,
        url: str,
        *,
        codec: FrameCodec,
        prefix: str = "dtc",
        ttl: float | None = None,
        connect_timeout_ms: int = 250,
        timeout_ms: int = 150,
        max_connections: int = 64,
        cluster: bool = False,
    ) -> None:
        self.url = url
        self.codec = codec
        self.prefix = prefix
        self.ttl = ttl
        self.cluster = cluster or url.startswith("redis+cluster")
        self._options: dict[str, Any] = {
            "socket_connect_timeout": connect_timeout_ms / 1000.0,
            "socket_timeout": timeout_ms / 1000.0,
            "max_connections": max_connections,
        }
        self._client: redis.Redis | redis.cluster.RedisCluster | None = None
        self._stale = False
        #: (client, its direct command runner or None): the hit's read skips redis-py's dispatch (redis_direct.py).
        self._direct: tuple[Any, Callable[[bytes], Any] | None] = (None, None)
        #: The same for the asyncio client of the last event loop that read (a client per loop: see aclient).
        self._adirect: tuple[Any, Callable[[bytes], Awaitable[Any]] | None] = (None, None)
        #: How long a caller waits for a client build (its own, or the invalidation subscriber's) before it gives
        #: up with a miss: one timeout, like any other operation. The build itself goes on in the background.
        self._build_wait_s = max(connect_timeout_ms, timeout_ms) / 1000.0
        self._build_error = ""
        self._building: threading.Event | None = None  # set when the build in flight ends
        self._unready: weakref.WeakSet[Any] = weakref.WeakSet()  # asyncio Cluster clients not initialized yet
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._dictionaries = StoredDictionaries(codec, prefix)
        self._init_leases()
        #: (channel, message builder, largest frame sent) when fresh answers are shared (see share_answers()).
        self._share: tuple[str, Callable[[str, bytes], bytes], int] | None = None
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        # redis-py's pools notice the new pid themselves; our lazy-build lock and asyncio clients do not.
        self._lock = threading.Lock()
        self._aclients = weakref.WeakKeyDictionary()
        self._building = None  # a build thread of the parent did not survive the fork
        self._entry_held, self._outcomes = {}, {}  # the parent's leases are the parent's to end

    def __repr__(self) -> str:
        return f"RedisTier({mask_url(self.url)!r})"

    # -- clients -------------------------------------------------------------------------------------
    def _url(self) -> str:
        return self.url.replace("redis+cluster://", "redis://", 1)

    @property
    def client(self) -> Any:
        """The sync client, built on first use (so constructing a cache never touches the network).

        Building a Cluster client reads the slot map, so it can fail or take a timeout: that happens inside the
        tier operation that asked for it and is counted as that operation's failure. Concurrent callers do not
        queue behind a build for longer than it may take, and do not repeat a build that just failed.
        """
        client = self._client
        if client is not None and not self._stale:
            return client
        return self._build_sync()

    def _command_table(self) -> dict[str, Any] | None:
        for client in (self._client, *self._aclients.values()):
            commands = getattr(getattr(client, "commands_parser", None), "commands", None)
            if commands:
                return dict(commands)
        return None

    def probe(self) -> object:
        """One round trip, for the breaker's background probe: builds the client if needed (Sentinel: finds the
        master again; Cluster: runs the slot-map refresh redis-py asked for after the outage)."""
        return self.client.ping()

    def pubsub_client(self) -> Any:
        """The client invalidations travel on (:class:`~dspy_tiered_cache.coherence.PubSubSource`)."""
        return self.client

    def _build_sync(self) -> Any:
        """Build the client in a thread of its own and wait for it at most one timeout.

        A Cluster build reads the slot map and the command table, trying seed after seed: with every seed hanging
        that is one timeout per seed. No caller pays for more than one; the build goes on in the background and
        its client is used as soon as it is ready. A build that failed is not repeated by the callers that were
        waiting for it (the breaker's probe retries later).
        """
        with self._lock:
            if self._client is not None and not self._stale:
                return self._client
            done = self._building
            if done is None:
                done = self._building = threading.Event()
                threading.Thread(
                    target=self._run_build, args=(done,), name="dspy-tiered-cache-connect", daemon=True
                ).start()
        if not done.wait(self._build_wait_s):
            raise ClientBuildError(f"{self!r}: still connecting after {self._build_wait_s * 1000:.0f} ms")
        client = self._client
        if client is None or self._stale:
            raise ClientBuildError(self._build_error)
        return client

    def _run_build(self, done: threading.Event) -> None:
        old = None
        try:
            built = self._build(asyncio_client=False)
        except Exception as exc:
            self._build_error = f"cannot connect to {mask_url(self.url)}: {type(exc).__name__}: {exc}"
            log.debug("dspy_tiered_cache: %s", self._build_error)
        else:
            with self._lock:
                old, self._client, self._stale = self._client, built, False
                self._entry_leases = None  # a new client may reach another server: ask its version again
        finally:
            with self._lock:
                self._building = None
            done.set()
        if old is not None:
            with contextlib.suppress(Exception):
                old.close()

    @property
    def aclient(self) -> Any:
        """One asyncio client per event loop: redis-py's asyncio connections are bound to the loop they ran on."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._aclients[loop] = self._build(asyncio_client=True)
            if self.cluster:
                self._unready.add(client)
        return client

    async def _ac(self) -> Any:
        """The asyncio client, ready: an asyncio Cluster client reads its slot map on first use, trying seed after
        seed; a caller waits for that at most one timeout (then it is a miss, and the
        next call in this loop starts over)."""
        client = self.aclient
        if client in self._unready:
            # An asyncio Cluster client reads the command table from the first primary of the slot map, with no
            # retry on another node: while that master is gone, every new event loop's client would fail to
            # start. The table is the same on every node, so hand over the one a client of ours already has.
            known = self._command_table()
            if known:
                client.commands_parser.commands = known
            try:
                await asyncio.wait_for(client.initialize(), self._build_wait_s)
            except Exception as exc:
                self._aclients.pop(asyncio.get_running_loop(), None)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_aclose(client), 0.05)
                raise ClientBuildError(f"cannot connect to {mask_url(self.url)}: {type(exc).__name__}: {exc}") from exc
            from redis.asyncio.retry import Retry as AsyncRetry

            client.set_retry(AsyncRetry(NoBackoff(), 0))  # ready: from now on the breaker decides, not retries
            self._unready.discard(client)
        return client

    def _build(self, *, asyncio_client: bool) -> Any:
        """A client with no retries: the breaker, not a backoff loop, decides when to try a dead server again.

        Cluster: redis-py refreshes the slot map by itself after connection errors (at most once a second), so a
        client is built once and kept; ``require_full_coverage=False`` lets it start, and keep serving the other
        slots, while one master without a replica is gone.
        """
        from redis.asyncio.retry import Retry as AsyncRetry

        if asyncio_client:
            retry: Any = AsyncRetry(NoBackoff(), 0)
        else:
            retry = Retry(NoBackoff(), 0)
        if self.url.startswith("redis+sentinel://"):
            return sentinel_master(self.url, self._options, asyncio_client, retry)
        if self.cluster:
            cls: Any = redis.asyncio.cluster.RedisCluster if asyncio_client else redis.cluster.RedisCluster
            seeds = cluster_seeds(self._url(), asyncio_client)
            # While it is built, the client reads the command table from one node: let it move on to another node
            # if that one is dead, then run every command with no retries.
            building = (AsyncRetry if asyncio_client else Retry)(NoBackoff(), len(seeds[0]) if seeds else 1)
            if seeds is not None:
                client = cls(startup_nodes=seeds[0], retry=building, require_full_coverage=False, **seeds[1],
                             **self._options)  # fmt: skip
            else:
                client = cls.from_url(self._url(), retry=building, require_full_coverage=False, **self._options)
            if not asyncio_client:  # an asyncio client reads its command table on first use: see _ac()
                client.set_retry(retry)
            return client
        cls = redis.asyncio.Redis if asyncio_client else redis.Redis
        return cls.from_url(self._url(), retry=retry, retry_on_timeout=False, **self._options)

    # -- protocol ------------------------------------------------------------------------------------
    def _decode(self, raw: bytes | None) -> Entry | None:
        if raw is None or is_lease(raw):  # another process's lease: no answer yet
            return None
        entry = self.codec.loads(raw)
        if entry.expires_at is not None and entry.expires_at <= time.time():
            return None
        return entry

    def _encode(self, entry: Entry) -> tuple[bytes, int | None] | None:
        remaining = entry.remaining(time.time())
        if remaining is not None and remaining <= 0.001:
            return None
        frame = self.codec.dumps(entry)
        self.count_stored(len(entry.payload), len(frame))
        return frame, None if remaining is None else max(1, int(remaining * 1000))

    def _runner(self) -> tuple[Any, Callable[[bytes], Any] | None]:
        """The sync client and, when it is a plain one, the function sending one command on its pool directly."""
        client, bound = self.client, self._direct
        if bound[0] is not client:
            bound = self._direct = (client, direct(client))
        return bound

    async def _arunner(self) -> tuple[Any, Callable[[bytes], Awaitable[Any]] | None]:
        """:meth:`_runner` for this event loop's asyncio client, ready (:meth:`_ac`)."""
        client = await self._ac()
        bound = self._adirect
        if bound[0] is not client:
            bound = self._adirect = (client, adirect(client))
        return bound

    def get(self, key: str) -> Entry | None:
        client, run = self._runner()
        return self._decode_fetching(run(get_command(key)) if run is not None else client.get(key))

    async def aget(self, key: str) -> Entry | None:
        client, run = await self._arunner()
        raw = await (run(get_command(key)) if run is not None else client.get(key))
        return await self._adecode_fetching(client, raw)

    def set(self, key: str, entry: Entry) -> None:
        stored = self._dictionaries
        if stored.due():  # a trained dictionary adopted by the fleet: fetch it, then write with it
            number = stored.adoptable(self.client.get(stored.current_key))
            if number is not None and stored.missing(number):
                stored.found(number, self.client.get(stored.key(number)))
            stored.adopt(number)
        encoded = self._encode(entry)
        if encoded is None:
            return
        share = self._sharing(encoded[0])
        if share is None:
            self.client.set(key, encoded[0], px=encoded[1])
        else:
            pipe = self.client.pipeline(transaction=False)  # one round trip for both
            pipe.set(key, encoded[0], px=encoded[1])
            pipe.publish(share[0], share[1](key, encoded[0]))
            pipe.execute()
        self._written(key)

    async def aset(self, key: str, entry: Entry) -> None:
        client = await self._ac()
        stored = self._dictionaries
        if stored.due():
            number = stored.adoptable(await client.get(stored.current_key))
            if number is not None and stored.missing(number):
                stored.found(number, await client.get(stored.key(number)))
            stored.adopt(number)
        encoded = self._encode(entry)
        if encoded is None:
            return
        share = self._sharing(encoded[0])
        if share is None:
            await client.set(key, encoded[0], px=encoded[1])
        else:
            pipe = client.pipeline(transaction=False)
            pipe.set(key, encoded[0], px=encoded[1])
            pipe.publish(share[0], share[1](key, encoded[0]))
            await pipe.execute()
        self._written(key)

    # -- fresh answers for other processes' memory tiers ---------------------------------------------
    def share_answers(self, channel: str, message: Callable[[str, bytes], bytes] | None, max_bytes: int) -> None:
        """Publish every entry this tier stores (frames up to ``max_bytes``) on ``channel``, in the same round trip
        as its SET, as ``message(key, frame)``: other processes put it in their memory tiers instead of each
        GETting it on first use (:mod:`dspy_tiered_cache.coherence`). ``None`` stops it. Not on a Cluster (a
        pipeline there is per slot; PUBLISH has none)."""
        self._share = None if message is None or self.cluster else (channel, message, max_bytes)

    def _sharing(self, frame: bytes) -> tuple[str, Callable[[str, bytes], bytes], int] | None:
        share = self._share
        return share if share is not None and len(frame) <= share[2] else None

    # -- trained dictionaries ------------------------------------------------------------------------
    def store_dictionary(self, dictionary: Dictionary, *, adopt: bool = True) -> None:
        """Share a trained dictionary with every process of the fleet (``dspy-tiered-cache dictionary train``):
        readers fetch it the first time a frame names it; with ``adopt``, writers switch to it within
        ``ADOPT_CHECK_S`` (:mod:`.stored_dictionaries`). Kept without expiry: entries compressed with it need it."""
        client = self.client
        client.set(self._dictionaries.key(dictionary.id), pack(dictionary))
        if adopt:
            client.set(self._dictionaries.current_key, str(dictionary.id))
        self.codec.add_dictionary(dictionary, adopt=adopt)

    def adopted_dictionary(self) -> int | None:
        """The number of the trained dictionary writers use, if one was adopted."""
        raw = self.client.get(self._dictionaries.current_key)
        return int(raw) if raw and raw.isdigit() else None

    def delete(self, key: str) -> None:
        self.client.delete(key)

    async def adelete(self, key: str) -> None:
        await (await self._ac()).delete(key)

    def clear(self) -> int:
        """SCAN + UNLINK of our prefix only: never FLUSHDB a server other programs may share."""
        client = self.client
        removed = 0
        batch: list[bytes] = []
        for pattern in (entry_pattern(self.prefix), f"{self.prefix}:q:*"):  # entries, then recorded requests
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    removed += self._unlink(batch)
                    batch = []
        if batch:
            removed += self._unlink(batch)
        return removed

    def scan_prefix(self, prefix: str, batch: int = 500) -> Iterator[tuple[str, Entry | None]]:
        """Live entries whose keys start with ``prefix`` (SCAN MATCH, then GETs in pipelined batches); None for a
        value that does not decode. For exports, never on a call's path: SCAN walks the whole keyspace."""
        client = self.client
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.get(key)
            for key, raw in zip(chunk, pipe.execute(), strict=True):
                if raw is None:
                    continue
                try:
                    entry = self._decode(raw)
                except CorruptEntry:
                    yield key, None
                    continue
                if entry is not None:
                    yield key, entry

    def storage_sample(self, limit: int = 200) -> dict[str, Any]:
        """What ``limit`` stored entries cost: value bytes, their payload bytes, and Redis's own ``MEMORY USAGE``
        (key + value + per-key overhead). For ``stats``; SCANs, so never on a call's path."""
        client = self.client
        keys = []
        for key in client.scan_iter(match=entry_pattern(self.prefix), count=1000):
            keys.append(key)
            if len(keys) >= limit:
                break
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.get(key)
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute(raise_on_error=False) if keys else []
        frames = [
            (raw, used)
            for raw, used in zip(replies[::2], replies[1::2], strict=True)
            if isinstance(raw, bytes) and not is_lease(raw)  # a lease is no stored entry
        ]
        payloads = []
        for raw, _ in frames:
            try:
                payloads.append(len(self.codec.loads(raw).payload))
            except CorruptEntry:
                continue
        usage = [int(used) for _, used in frames if isinstance(used, int)]
        return storage_figures(len(frames), sum(len(raw) for raw, _ in frames), payloads, usage)

    def set_many(self, items: Iterable[tuple[str, Entry]], batch: int = 500) -> None:
        """Write many entries with pipelined SETs (imports): one round trip per ``batch``, not per entry."""
        pending = list(items)
        for start in range(0, len(pending), batch):
            pipe = self.client.pipeline(transaction=False)
            for key, entry in pending[start : start + batch]:
                encoded = self._encode(entry)
                if encoded is not None:
                    pipe.set(key, encoded[0], px=encoded[1])
            pipe.execute()

    def _unlink(self, keys: list[bytes]) -> int:
        if self.cluster:  # keys of one batch live in many slots: one command per key, never CROSSSLOT
            return sum(int(self.client.unlink(k)) for k in keys)
        return int(self.client.unlink(*keys))

    def get_generation(self, namespace: str) -> int:
        return _generation(self.client.get(generation_key(self.prefix, namespace)), namespace)

    async def aget_generation(self, namespace: str) -> int:
        return _generation(await (await self._ac()).get(generation_key(self.prefix, namespace)), namespace)

    def bump_generation(self, namespace: str) -> int:
        key = generation_key(self.prefix, namespace)
        try:
            return int(self.client.incr(key))
        except redis.ResponseError:
            # Not an integer (a foreign value): replace it by one above any counter ever used, so invalidation
            # still happens and INCR works again.
            log.warning("dspy_tiered_cache: %s held a non-integer; replacing it to invalidate the namespace", key)
            return self.raise_generation(namespace, int(time.time()))

    def raise_generation(self, namespace: str, at_least: int) -> int:
        return int(self.client.eval(_RAISE, 1, generation_key(self.prefix, namespace), at_least))

    def is_outage(self, exc: BaseException) -> bool:
        if isinstance(exc, _DISCOVERY_FAILED):
            return True
        if self.cluster and isinstance(exc, (redis.ConnectionError, redis.exceptions.SlotNotCoveredError)):
            # One node refused us while a slot map could still be read: the cluster is partly up. Keys of that
            # node's slots are misses (refused connections cost no timeout), keys elsewhere keep hitting; redis-py
            # re-reads the slot map in the background of the next calls. When no node answers any more, redis-py
            # says so with RedisClusterUnreachableError, which is an outage.
            return False
        # A ResponseError (OOM under noeviction, READONLY replica, WRONGTYPE) is an answer: the server is up.
        return not isinstance(exc, redis.ResponseError) or isinstance(exc, redis.exceptions.ReadOnlyError)

    def is_timeout(self, exc: BaseException) -> bool:
        """Trip at once on anything the next call would pay for again in full: a timeout, or a failed discovery
        (every sentinel or seed tried, CLUSTERDOWN after redis-py's fixed 0.25 s wait)."""
        return isinstance(exc, (redis.TimeoutError, TimeoutError, *_DISCOVERY_FAILED))

    def health(self) -> TierHealth:
        started = time.perf_counter()
        try:
            self.client.ping()
            latency = (time.perf_counter() - started) * 1000
            info = self.client.info("server")
            if self.cluster:  # one dict per node
                info = next(iter(info.values())) if info and isinstance(next(iter(info.values())), dict) else info
            version = info.get("valkey_version") or info.get("redis_version")
            return TierHealth(self.name, True, latency, str(version), detail=mask_url(self.url) or "")
        except Exception as exc:
            return TierHealth(self.name, False, None, None, detail=f"{mask_url(self.url)}: {exc}")

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        client = self._aclients.pop(loop, None) if loop is not None else None
        if client is not None:
            await _aclose(client)
        self.close()


def _aclose(client: Any) -> Awaitable[None]:
    """Close an asyncio client: ``aclose()`` from redis-py 5.0.1 on; 5.0.0 has only ``close()`` (a coroutine)."""
    closer = getattr(client, "aclose", None) or client.close
    return closer()  # type: ignore[no-any-return]
