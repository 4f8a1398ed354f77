"""The fleet view: every process's hits, misses and savings, summed in the shared tier.

Counters in :mod:`~dspy_tiered_cache.stats` live and die with their process; the question a fleet's owner asks
— *what did the cache save us, by namespace and model, today?* — needs them summed across every worker. Each
process therefore adds its *deltas* to hourly buckets in the most shared tier it has (Redis/Valkey, else the
SQLite file of the disk tier), under these rules:

* never on the hit path: the counters are the ones :class:`~dspy_tiered_cache.stats.Stats` already keeps; one
  background thread per process diffs them against what it last published and at exit (``atexit`` and
  ``CacheCore.close``). A batch is one command in Redis (``HSET`` of this process's totals for the hour, see
  :class:`RedisFleetStore`), and goes out every ``fleet_flush_s`` seconds only once the process has counted
  :data:`BATCH_LOOKUPS` lookups since the last one, and otherwise every :data:`QUIET_FLUSH_S` seconds. A busy
  process pays about 0.001 commands per lookup for the fleet view, a quiet one a batch a minute; nothing is lost
  at exit (the last batch is sent then, whatever its size).
* exactly once: a batch carries (publisher id, sequence number) and the store applies a sequence number only
  once (Redis: it sets the process's running totals, which a retry sets again), so a batch whose reply was lost
  is retried without being counted twice. While the shared tier is down the batch is kept and retried; only a
  process that exits during an outage loses its last batch, and says so (``CacheCore.fleet.lost_batches``).
* bounded: a hash (Redis: a field per process) or a few rows (SQLite) per hour, expiring after :data:`RETENTION_S`.

Field names inside a bucket: ``n<TAB>namespace<TAB>h|m`` (lookups that hit/missed), ``s<TAB>namespace<TAB>model<TAB>
h|p|c|usd`` (hits credited to a model; prompt and completion tokens saved; dollars saved, priced at publish time
from LiteLLM's price map) and ``t<TAB>tier<TAB>h|m|e|w|pb|sb`` (per tier hits, misses, errors, and the entries
written with their payload and stored bytes: the fleet's bytes per entry and compression ratio; all namespaces),
``x<TAB>shared<TAB>taken|rejected`` (answers other processes shared: kept in memory, refused; all namespaces).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing.util
import os
import sqlite3
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import orjson

from dspy_tiered_cache import forksafe, hooks
from dspy_tiered_cache.coherence import PubSubSource
from dspy_tiered_cache.stats import _unit_prices, fleet_model_name, namespace_of_stem

if TYPE_CHECKING:
    from dspy_tiered_cache.core import CacheCore

log = logging.getLogger("dspy_tiered_cache")

BUCKET_S: Final = 3600
#: Buckets live 8 days, so ``--since 7d`` always finds a full week.
RETENTION_S: Final = 8 * 24 * 3600
#: A publisher's last applied sequence number is kept this long (enough to retry a batch across an outage).
_SEQ_TTL_S: Final = 2 * 24 * 3600
SINCE: Final = {"1h": 3600, "24h": 24 * 3600, "7d": 7 * 24 * 3600}
SEP: Final = "\t"
#: Lookups counted since the last batch that make the next one worth a Redis command at ``fleet_flush_s``.
BATCH_LOOKUPS: Final = 1000
#: Below :data:`BATCH_LOOKUPS`, the longest a process's counts wait for the fleet view (or ``fleet_flush_s``).
QUIET_FLUSH_S: Final = 60.0

Number = int | float


class FleetStore(Protocol):
    """Where fleet counters are summed. ``apply`` is idempotent per (publisher, seq)."""

    kind: str
    tier: str  # the name of the tier it lives in

    def apply(self, publisher: str, seq: int, bucket: int, fields: Mapping[str, Number]) -> bool: ...

    def read(self, buckets: Iterable[int]) -> dict[str, float]: ...


# ------------------------------------------------------------------------------------------------- Redis store


class RedisFleetStore:
    """Hourly hashes ``{prefix:fleet}:p:<hour>``, a field per process: its totals in that hour, as a JSON object.

    A batch is one ``HSET`` (and an ``EXPIRE`` on a process's first batch of the hour); the first layout's script
    (``:h:<hour>``, still read) counted about ten commands. Setting totals again is harmless: a lost reply is
    simply followed by the next batch. One hash tag keeps every bucket in one Cluster slot."""

    kind = "redis"
    tier = "l2"

    def __init__(self, client_of: Any, prefix: str) -> None:
        self._client_of = client_of  # a callable: the tier rebuilds its client after failures
        self._tag = "{" + prefix + ":fleet}"
        #: (publisher, bucket) -> that publisher's totals in that bucket, as last stored.
        self._totals: dict[tuple[str, int], dict[str, Number]] = {}
        self._applied: dict[str, int] = {}

    def _bucket_key(self, bucket: int, layout: str = "p") -> str:
        return f"{self._tag}:{layout}:{bucket}"

    def apply(self, publisher: str, seq: int, bucket: int, fields: Mapping[str, Number]) -> bool:
        if seq <= self._applied.get(publisher, 0):
            return False  # applied already
        slot = (publisher, bucket)
        totals = dict(self._totals.get(slot, {}))
        for name, value in fields.items():
            totals[name] = totals.get(name, 0) + value
        key, blob = self._bucket_key(bucket), orjson.dumps(totals)
        client = self._client_of()
        if slot in self._totals:
            client.hset(key, publisher, blob)
        else:  # the first batch of this process in this hour: the bucket's lifetime too
            pipe = client.pipeline(transaction=False)
            pipe.hset(key, publisher, blob)
            pipe.expire(key, RETENTION_S)
            pipe.execute()
        for old in [s for s in self._totals if s[1] < bucket - 1]:
            del self._totals[old]
        self._totals[slot] = totals
        self._applied[publisher] = seq
        return True

    def read(self, buckets: Iterable[int]) -> dict[str, float]:
        client = self._client_of()
        pipe = client.pipeline(transaction=False)
        for bucket in buckets:
            pipe.hgetall(self._bucket_key(bucket))
            pipe.hgetall(self._bucket_key(bucket, "h"))  # the first layout: deltas
        out: dict[str, float] = {}
        for index, data in enumerate(pipe.execute()):
            for name, value in (data or {}).items():
                try:
                    totals = {name.decode(): value} if index % 2 else orjson.loads(value)
                    for field, number in totals.items():
                        out[field] = out.get(field, 0.0) + float(number)
                except (ValueError, TypeError, AttributeError):
                    continue  # not ours: a foreign field in our hash
        return out


# ------------------------------------------------------------------------------------------------ SQLite store

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS fleet (
    prefix TEXT NOT NULL, bucket INTEGER NOT NULL, field TEXT NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (prefix, bucket, field)
);
CREATE TABLE IF NOT EXISTS fleet_batches (publisher TEXT PRIMARY KEY, seq INTEGER NOT NULL, at REAL NOT NULL);
"""


class DiskFleetStore:
    """A table in the disk tier's SQLite file: the processes of one machine share it as they share entries."""

    kind = "disk"
    tier = "disk"

    def __init__(self, path: Path, prefix: str, busy_timeout_ms: int = 2000) -> None:
        self.path = path
        self.prefix = prefix
        self._busy_ms = busy_timeout_ms
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(_SCHEMA)
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def apply(self, publisher: str, seq: int, bucket: int, fields: Mapping[str, Number]) -> bool:
        conn = self._conn()
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT seq FROM fleet_batches WHERE publisher = ?", (publisher,)).fetchone()
            if row is not None and int(row[0]) >= seq:
                conn.execute("ROLLBACK")
                return False
            conn.executemany(
                "INSERT INTO fleet (prefix, bucket, field, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (prefix, bucket, field) DO UPDATE SET value = value + excluded.value",
                [(self.prefix, bucket, name, float(value)) for name, value in fields.items()],
            )
            conn.execute(
                "INSERT INTO fleet_batches (publisher, seq, at) VALUES (?, ?, ?) "
                "ON CONFLICT (publisher) DO UPDATE SET seq = excluded.seq, at = excluded.at",
                (publisher, seq, now),
            )
            conn.execute("DELETE FROM fleet WHERE bucket < ?", (int((now - RETENTION_S) // BUCKET_S),))
            conn.execute("DELETE FROM fleet_batches WHERE at < ?", (now - _SEQ_TTL_S,))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return True

    def read(self, buckets: Iterable[int]) -> dict[str, float]:
        """Read-only: a missing file or table is an empty fleet, and reading never creates either."""
        wanted = sorted(set(buckets))
        if not wanted or not self.path.exists():
            return {}
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self._busy_ms / 1000)
        try:
            rows = conn.execute(
                "SELECT field, SUM(value) FROM fleet WHERE prefix = ? AND bucket BETWEEN ? AND ? GROUP BY field",
                (self.prefix, wanted[0], wanted[-1]),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return {}
            raise
        finally:
            conn.close()
        return {str(field): float(value) for field, value in rows}


@runtime_checkable
class FileTier(Protocol):
    """A tier kept in a local SQLite file (the disk tier): the fleet's rows go into the same file."""

    path: Path


def store_for(core: CacheCore) -> FleetStore | None:
    """The most shared tier's store (Redis, else the disk file); None when the cache has only a memory tier.

    Tiers are told apart by protocol, never by class: a Redis server is a tier that carries invalidations
    (:class:`~dspy_tiered_cache.coherence.PubSubSource`, a method, so the check builds no client), a file tier has
    a ``path``."""
    prefix = core.settings.key_prefix
    for tier in reversed(core.tiers):
        if isinstance(tier, PubSubSource):
            return RedisFleetStore(tier.pubsub_client, prefix)
        if isinstance(tier, FileTier):
            return DiskFleetStore(tier.path, prefix)
    return None


# -------------------------------------------------------------------------------------------------- publisher


class FleetPublisher:
    """Publishes one core's counter deltas to its fleet store (see the module docstring)."""

    def __init__(self, core: CacheCore, store: FleetStore) -> None:
        self._core = weakref.ref(core)
        self.store = store
        self.interval = core.settings.fleet_flush_s
        self.id = uuid.uuid4().hex
        self._seq = 0
        self._last: dict[str, Number] = {}
        self._epoch = core.stats.epoch
        self._pending: tuple[int, int, dict[str, Number]] | None = None
        self._lock = threading.Lock()
        self._due = time.monotonic() + self.interval
        #: Lookups counted and when, at the last batch (see :meth:`_worth_a_batch`).
        self._sent_lookups = core.stats.hits + core.stats.misses
        self._sent_at = time.monotonic()
        self.batches = 0
        self.failures = 0
        self.lost_batches = 0
        self._warned = -1e9
        self.closed = False
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        """A forked worker inherits its parent's counters: it publishes only what it counts itself."""
        self._lock = threading.Lock()
        self.id = uuid.uuid4().hex
        self._seq = 0
        self._pending = None
        core = self._core()
        self._sent_lookups = core.stats.hits + core.stats.misses if core is not None else 0
        # The only thread in the child: read without the stats lock (another thread may have held it at fork).
        self._last = self._collect(core, locked=False) if core is not None else {}

    def _collect(self, core: CacheCore, *, locked: bool = True) -> dict[str, Number]:
        """The core's counters now, as fleet fields (cumulative since the process started)."""
        stats = core.stats
        default_ns = core.settings.namespace
        out: dict[str, Number] = {}

        def ns_of(stem: str) -> str:
            return namespace_of_stem(stem) if stem else default_ns

        for stem, n in dict(stats.stem_hits).items():
            name = f"n{SEP}{ns_of(stem)}{SEP}h"
            out[name] = int(out.get(name, 0)) + n
        with stats._lock if locked else contextlib.nullcontext():
            misses = dict(stats.stem_misses)
            saved = [(stem, model, list(v)) for (stem, model), v in stats.saved_by_stem.items()]
            tiers = [(name, t.hits, t.misses, t.errors) for name, t in stats.tiers.items()]
        written = [(t.name, t.writes, t.payload_bytes, t.stored_bytes) for t in core.tiers]
        for stem, n in misses.items():
            name = f"n{SEP}{ns_of(stem)}{SEP}m"
            out[name] = int(out.get(name, 0)) + n
        for stem, model, (hits, prompt, completion) in saved:
            base = f"s{SEP}{ns_of(stem)}{SEP}{model}{SEP}"
            for suffix, n in (("h", hits), ("p", prompt), ("c", completion)):
                out[base + suffix] = int(out.get(base + suffix, 0)) + n
        out[f"x{SEP}shared{SEP}taken"], out[f"x{SEP}shared{SEP}rejected"] = stats.shared_taken, stats.shared_rejected
        for name, hits, misses_, errors in tiers:
            for suffix, n in (("h", hits), ("m", misses_), ("e", errors)):
                out[f"t{SEP}{name}{SEP}{suffix}"] = n
        for name, writes, payload, stored in written:  # what the tier was given to store, and what it stored
            if writes:
                for suffix, n in (("w", writes), ("pb", payload), ("sb", stored)):
                    out[f"t{SEP}{name}{SEP}{suffix}"] = n
        return out

    def _next_batch(self, core: CacheCore) -> dict[str, Number]:
        epoch = core.stats.epoch
        current = self._collect(core)
        if epoch != self._epoch:  # the counters were reset: they start over from zero
            self._epoch, self._last = epoch, {}
        delta: dict[str, Number] = {}
        for name, value in current.items():
            before = self._last.get(name, 0)
            if value != before:
                delta[name] = value - before
        self._last = current
        dollars: dict[str, float] = {}
        for name, n in delta.items():
            if name[0] == "s" and name[-2:] in (f"{SEP}p", f"{SEP}c"):
                _, ns, model, kind = name.split(SEP)
                in_price, out_price = _unit_prices(model)
                usd = n * (in_price if kind == "p" else out_price)
                if usd:
                    key = f"s{SEP}{ns}{SEP}{model}{SEP}usd"
                    dollars[key] = dollars.get(key, 0.0) + usd
        delta.update(dollars)
        return delta

    def _worth_a_batch(self, core: CacheCore, now: float) -> bool:
        """Whether a periodic batch should go out now (see the module docstring): enough lookups, or long enough."""
        counted = core.stats.hits + core.stats.misses
        if counted < self._sent_lookups:  # the counters were reset
            self._sent_lookups = 0
        return counted - self._sent_lookups >= BATCH_LOOKUPS or now - self._sent_at >= max(QUIET_FLUSH_S, self.interval)

    def flush(self, *, periodic: bool = False) -> bool:
        """Publish what was counted since the last batch (``periodic``: only if :meth:`_worth_a_batch`). Never
        raises; False when the store failed."""
        core = self._core()
        if core is None:
            return True
        with self._lock:
            now = time.monotonic()
            self._due = now + self.interval
            if self._pending is None:
                if periodic and not self._worth_a_batch(core, now):
                    return True
                self._sent_lookups, self._sent_at = core.stats.hits + core.stats.misses, now
                fields = self._next_batch(core)
                if not fields:
                    return True
                self._seq += 1
                self._pending = (self._seq, int(time.time() // BUCKET_S), fields)
            seq, bucket, fields = self._pending
            try:
                self.store.apply(self.id, seq, bucket, fields)
            except Exception as exc:
                self.failures += 1
                now = time.monotonic()
                if now - self._warned >= 60.0:
                    self._warned = now
                    self._log(core)(
                        "dspy_tiered_cache: cannot add this process's counts to the fleet totals in the %s tier "
                        "(%s: %s); keeping them and retrying every %.0f s",
                        self.store.kind,
                        type(exc).__name__,
                        exc,
                        self.interval,
                    )
                return False
            self._pending = None
            self.batches += 1
            return True

    def _log(self, core: CacheCore | None) -> Any:
        """A warning, unless the tier itself already failed: the core has said so, once is enough."""
        tier = core.stats.tiers.get(self.store.tier) if core is not None else None
        return log.debug if tier is not None and tier.errors else log.warning

    def close(self) -> None:
        """The last batch (called by ``CacheCore.close`` and at exit); a failure here is a lost batch."""
        if self.closed:
            return
        if not self.flush() or self._pending is not None:
            self.lost_batches += 1
            core = self._core()
            self._log(core)(
                "dspy_tiered_cache: the %s tier is unreachable at exit: this process's last fleet batch "
                "(%d counters) is lost",
                self.store.kind,
                len(self._pending[2]) if self._pending else 0,
            )
        self.closed = True
        _publishers.discard(self)


_publishers: weakref.WeakSet[FleetPublisher] = weakref.WeakSet()
_thread: threading.Thread | None = None
_thread_lock = threading.Lock()
_wake = threading.Event()


def start_publisher(core: CacheCore) -> FleetPublisher | None:
    """A publisher for ``core`` when it has a shared tier (memory-only caches have no fleet)."""
    store = store_for(core)
    if store is None:
        return None
    publisher = FleetPublisher(core, store)
    _publishers.add(publisher)
    _ensure_thread()
    return publisher


def _attach(core: CacheCore) -> FleetPublisher | None:
    """The fleet feature's hook (:mod:`dspy_tiered_cache.hooks`): a publisher for every core with ``fleet`` on."""
    return start_publisher(core) if core.settings.fleet else None


hooks.on_attach("fleet", _attach)


def _ensure_thread() -> None:
    global _thread
    with _thread_lock:
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="dspy-tiered-cache-fleet", daemon=True)
            _thread.start()


def _run() -> None:
    """One thread for every core of the process: each flushes when its interval is due."""
    while True:
        now = time.monotonic()
        publishers = [p for p in list(_publishers) if not p.closed]
        for publisher in publishers:
            if publisher._due <= now:
                publisher.flush(periodic=True)
        soonest = min((p._due for p in publishers), default=now + 1.0)
        _wake.wait(max(0.05, min(1.0, soonest - time.monotonic())))
        _wake.clear()


class _ForkHook:
    def _after_fork_in_child(self) -> None:
        global _thread, _thread_lock
        _thread_lock = threading.Lock()
        _thread = None
        if _publishers:
            _ensure_thread()


_FORK_HOOK: Final = _ForkHook()
forksafe.register(_FORK_HOOK)


@atexit.register
def _flush_at_exit() -> None:
    for publisher in list(_publishers):
        with contextlib.suppress(Exception):
            publisher.close()


def _finalize_in_mp_child(hook: _ForkHook) -> None:
    """``multiprocessing`` children end with ``os._exit``, which skips ``atexit``: flush from its finalizers."""
    multiprocessing.util.Finalize(None, _flush_at_exit, exitpriority=0)


multiprocessing.util.register_after_fork(_FORK_HOOK, _finalize_in_mp_child)


# ----------------------------------------------------------------------------------------------------- reader


def buckets_since(since_s: float, now: float | None = None) -> list[int]:
    """Hour buckets overlapping the last ``since_s`` seconds (hour resolution: ``1h`` covers up to two)."""
    now = time.time() if now is None else now
    return list(range(int((now - since_s) // BUCKET_S), int(now // BUCKET_S) + 1))


def summarize(fields: Mapping[str, float], *, namespace: str | None = None) -> dict[str, Any]:
    """The ``"fleet"`` object of ``stats --format json`` from summed bucket fields."""
    by_ns: dict[str, dict[str, Any]] = {}
    by_model: dict[str, dict[str, Any]] = {}
    tiers: dict[str, dict[str, int]] = {}

    shared = {"shared_taken": 0, "shared_rejected": 0}

    def ns_row(ns: str) -> dict[str, Any]:
        return by_ns.setdefault(ns, {**dict.fromkeys(("hits", "misses", *_SAVED), 0), "dollars_saved": 0.0})

    for name, value in fields.items():
        parts = name.split(SEP)
        kind = parts[0]
        if kind == "x" and len(parts) == 3 and f"{parts[1]}_{parts[2]}" in shared:
            shared[f"{parts[1]}_{parts[2]}"] += int(value)
        if kind == "t" and len(parts) == 3:
            tier = tiers.setdefault(parts[1], {"hits": 0, "misses": 0, "errors": 0})
            tier[_TIER_FIELDS.get(parts[2], parts[2])] = int(value)
            continue
        if kind not in ("n", "s") or len(parts) < 3 or (namespace is not None and parts[1] != namespace):
            continue
        row = ns_row(parts[1])
        if kind == "n":
            row["hits" if parts[2] == "h" else "misses"] += int(value)
            continue
        if len(parts) != 4:
            continue
        model = fleet_model_name(parts[2]) or "(unknown)"  # batches of older releases too
        mrow = by_model.setdefault(model, {**dict.fromkeys(("hits", *_SAVED), 0), "dollars_saved": 0.0})
        if parts[3] == "h":
            mrow["hits"] += int(value)
        elif parts[3] in ("p", "c"):
            field = "prompt_tokens_saved" if parts[3] == "p" else "completion_tokens_saved"
            for target in (row, mrow):
                target[field] += int(value)
                target["tokens_saved"] += int(value)
        elif parts[3] == "usd":
            row["dollars_saved"] += value
            mrow["dollars_saved"] += value
    for row in (*by_ns.values(), *by_model.values()):
        row["dollars_saved"] = round(row["dollars_saved"], 9)
    for row in by_ns.values():
        lookups = row["hits"] + row["misses"]
        row["hit_rate"] = round(row["hits"] / lookups, 4) if lookups else None
    hits = sum(r["hits"] for r in by_ns.values())
    misses = sum(r["misses"] for r in by_ns.values())
    out: dict[str, Any] = {
        "namespace": namespace,
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
        "tokens_saved": sum(r["tokens_saved"] for r in by_ns.values()),
        "prompt_tokens_saved": sum(r["prompt_tokens_saved"] for r in by_ns.values()),
        "completion_tokens_saved": sum(r["completion_tokens_saved"] for r in by_ns.values()),
        "dollars_saved": round(sum(r["dollars_saved"] for r in by_ns.values()), 9),
        "by_namespace": dict(sorted(by_ns.items())),
        "by_model": dict(sorted(by_model.items())),
    }
    if namespace is None:
        for tier in tiers.values():
            _storage_figures(tier)
        out["tiers"] = dict(sorted(tiers.items()))
        out.update(shared)  # answers other processes shared over the channel: kept in memory / refused
    return out


_SAVED: Final = ("tokens_saved", "prompt_tokens_saved", "completion_tokens_saved")


#: Per-tier field suffixes in a bucket: counters, then what the tier stored (``stats`` shows bytes per entry).
_TIER_FIELDS: Final = {"h": "hits", "m": "misses", "e": "errors", "w": "writes", "pb": "payload_bytes",
                       "sb": "stored_bytes"}  # fmt: skip


def _storage_figures(tier: dict[str, Any]) -> None:
    """Bytes stored per entry written and the compression ratio (payload / stored) of a tier, fleet-wide."""
    writes, stored = tier.get("writes", 0), tier.get("stored_bytes", 0)
    tier["bytes_per_entry"] = round(stored / writes, 1) if writes else None
    tier["compression_ratio"] = round(tier.get("payload_bytes", 0) / stored, 3) if stored else None


def read_fleet(core: CacheCore, *, since: str = "24h", namespace: str | None = None) -> dict[str, Any] | None:
    """The fleet's totals over ``since`` (``1h``, ``24h`` or ``7d``), optionally for one namespace.

    None when the cache has no shared tier. Raises the store's error when it is unreachable (callers decide
    whether that is an error: the CLI says so, :func:`report` shows the process's own counters only).
    """
    if since not in SINCE:
        raise ValueError(f"since={since!r} is not one of {', '.join(SINCE)}")
    store = store_for(core)
    if store is None:
        return None
    buckets = buckets_since(SINCE[since])
    out = summarize(store.read(buckets), namespace=namespace)
    out.update(since=since, store=store.kind, bucket_s=BUCKET_S)
    return out
