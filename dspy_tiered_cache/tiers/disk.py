"""The embedded persistent tier: one SQLite file, shared safely by every process on one machine.

SQLite in WAL mode gives concurrent readers, one writer at a time across processes, and crash safety, with no
server to run: the default second tier when no Redis URL is configured. Values are stored as the same checked
frames as in Redis, so a damaged file reads as misses, never as wrong answers.

Writes under contention. SQLite lets one connection write at a time and makes the others wait in its busy
handler, which sleeps and retries with growing pauses (up to 100 ms each): under load a thread that keeps losing
sleeps while others keep winning, and after ``busy_timeout`` its write fails ("database is locked") and the
entry is lost. So the threads of one process take turns on a lock of their own (one per file, granted in arrival
order, no sleeping), SQLite's busy handler is left to arbitrate between processes, and a write SQLite still
answers "busy" (it does so without waiting in some WAL cases) is retried until its ``busy_timeout`` is spent.
Only then does it fail, as an error the core counts and logs, never silently.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from dspy_tiered_cache import forksafe
from dspy_tiered_cache.codec import CorruptEntry, Entry, FrameCodec
from dspy_tiered_cache.tiers.base import Tier, TierHealth, storage_figures

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at REAL,
    size INTEGER NOT NULL,
    stored_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_stored_at ON entries (stored_at);
CREATE TABLE IF NOT EXISTS generations (namespace TEXT PRIMARY KEY, generation INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL);
"""
_INSERT = "INSERT OR REPLACE INTO entries (key, value, expires_at, size, stored_at) VALUES (?, ?, ?, ?, ?)"
_CULL_EVERY = 256
_T = TypeVar("_T")

#: One lock per file for the writes of this process (see the module docstring); new ones in a forked child.
_write_locks: dict[str, threading.RLock] = {}
_write_locks_guard = threading.Lock()


def _write_lock(path: Path) -> threading.RLock:
    key = os.path.abspath(path)
    lock = _write_locks.get(key)
    if lock is None:
        with _write_locks_guard:
            lock = _write_locks.setdefault(key, threading.RLock())
    return lock


def _fresh_write_locks() -> None:
    global _write_locks_guard
    _write_locks.clear()
    _write_locks_guard = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_write_locks)


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


class DiskTier(Tier):
    name = "disk"
    # Written from the background writer like Redis: an fsync-bound write must not sit on the caller's path.
    remote = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        codec: FrameCodec,
        ttl: float | None = None,
        max_bytes: int = 1024**3,
        busy_timeout_ms: int = 5000,
    ) -> None:
        """``busy_timeout_ms``: how long a write may wait for other writers (threads and processes) before it
        fails; writes run on the background writer, off the caller's path."""
        self.path = Path(path).expanduser()
        self.codec = codec
        self.ttl = ttl
        self.max_bytes = max_bytes
        self.busy_timeout_ms = busy_timeout_ms
        self.evictions = 0
        self._local = threading.local()
        self._sets = 0
        self._lock = threading.Lock()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()  # connections are per pid already (see _conn)

    def __repr__(self) -> str:
        return f"DiskTier({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        """One connection per thread and per process: sqlite3 connections must not cross either."""
        pid = os.getpid()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == pid:
            return conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            # Switching a new file to WAL and creating the schema write: in turn with this process's writes.
            self._retrying(lambda: self._setup(conn), _write_lock(self.path))
        except (sqlite3.Error, OSError) as exc:
            raise OSError(
                f"disk tier cannot open {self.path}: {exc}; set DSPY_TIERED_CACHE_DISK_PATH to a writable file "
                "or DSPY_TIERED_CACHE_DISK=false"
            ) from exc
        self._local.conn, self._local.pid = conn, pid
        return conn

    @staticmethod
    def _setup(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)

    def _retrying(self, fn: Callable[[], _T], lock: threading.RLock | None) -> _T:
        """``fn()`` holding ``lock`` (this process's writes to the file, in turn), retried while SQLite answers
        busy, until ``busy_timeout_ms`` is spent; then the error is raised (the core counts a failed write)."""
        timeout = self.busy_timeout_ms / 1000
        deadline = time.monotonic() + timeout
        if lock is not None and not lock.acquire(timeout=timeout):
            raise sqlite3.OperationalError(
                f"database is locked: this process's other writes to {self.path} held it for {timeout:.1f} s"
            )
        try:
            pause = 0.001
            while True:
                try:
                    return fn()
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() + pause > deadline:
                        raise
                time.sleep(pause)  # another process holds the file and SQLite gave up before our timeout
                pause = min(pause * 2, 0.05)
        finally:
            if lock is not None:
                lock.release()

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn()
        return self._retrying(lambda: fn(conn), _write_lock(self.path))

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn()
        return self._retrying(lambda: fn(conn), None)

    def get(self, key: str) -> Entry | None:
        row = self._read(lambda c: c.execute("SELECT value, expires_at FROM entries WHERE key = ?", (key,)).fetchone())
        if row is None:
            return None
        if row[1] is not None and row[1] <= time.time():
            return None
        return self.codec.loads(bytes(row[0]))

    def set(self, key: str, entry: Entry) -> None:
        now = time.time()
        if entry.expired(now):
            return
        blob = self.codec.dumps(entry)
        self.count_stored(len(entry.payload), len(blob))
        row = (key, blob, entry.expires_at, len(blob) + len(key), now)
        self._write(lambda c: c.execute(_INSERT, row))
        with self._lock:
            self._sets += 1
            cull = self._sets % _CULL_EVERY == 0
        if cull:
            self.cull()

    def cull(self) -> int:
        """Drop expired rows, then the oldest rows while the file holds more than ``max_bytes`` of values."""
        return self._write(self._cull)

    def _cull(self, conn: sqlite3.Connection) -> int:
        removed = conn.execute(
            "DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at <= ?", (time.time(),)
        ).rowcount
        total = conn.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
        if total > self.max_bytes:
            target = int(self.max_bytes * 0.9)
            cutoff = None
            acc = total
            for stored_at, size in conn.execute("SELECT stored_at, size FROM entries ORDER BY stored_at"):
                acc -= size
                cutoff = stored_at
                if acc <= target:
                    break
            if cutoff is not None:
                evicted = conn.execute("DELETE FROM entries WHERE stored_at <= ?", (cutoff,)).rowcount
                self.evictions += evicted
                removed += evicted
        return int(removed)

    def delete(self, key: str) -> None:
        self._write(lambda c: c.execute("DELETE FROM entries WHERE key = ?", (key,)))

    def clear(self) -> int:
        return int(self._write(lambda c: c.execute("DELETE FROM entries").rowcount))

    def scan_prefix(self, prefix: str) -> Iterator[tuple[str, Entry | None]]:
        """Live entries whose keys start with ``prefix``, in key order (an index range, not a full scan); None for
        a value that does not decode. For exports: read in one snapshot, never on a call's path."""
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = (
            self._conn()
            .execute(
                "SELECT key, value FROM entries WHERE key >= ? AND key < ? AND (expires_at IS NULL OR expires_at > ?)"
                " ORDER BY key",
                (prefix, upper, time.time()),
            )
            .fetchall()
        )
        for key, blob in rows:
            try:
                yield key, self.codec.loads(bytes(blob))
            except CorruptEntry:
                yield key, None

    def storage_sample(self, limit: int = 200) -> dict[str, Any]:
        """What ``limit`` stored entries cost: value bytes and their payload bytes (for ``stats``, which must not
        create the file by looking)."""
        if not Path(self.path).exists():
            return storage_figures(0, 0, [], [])
        rows = self._conn().execute("SELECT value FROM entries WHERE key LIKE ? LIMIT ?", ("%:e:%", limit)).fetchall()
        payloads = []
        for (blob,) in rows:
            try:
                payloads.append(len(self.codec.loads(bytes(blob)).payload))
            except CorruptEntry:
                continue
        return storage_figures(len(rows), sum(len(blob) for (blob,) in rows), payloads, [])

    def set_many(self, items: Iterable[tuple[str, Entry]]) -> None:
        """Write many entries in one transaction (imports): all land, or none do."""
        now = time.time()
        rows = []
        for key, entry in items:
            if not entry.expired(now):
                blob = self.codec.dumps(entry)
                self.count_stored(len(entry.payload), len(blob))
                rows.append((key, blob, entry.expires_at, len(blob) + len(key), now))
        self._write(lambda c: self._insert_all(c, rows))

    @staticmethod
    def _insert_all(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def get_generation(self, namespace: str) -> int:
        row = self._read(
            lambda c: c.execute("SELECT generation FROM generations WHERE namespace = ?", (namespace,)).fetchone()
        )
        return int(row[0]) if row else 0

    def bump_generation(self, namespace: str) -> int:
        row = self._write(
            lambda c: c.execute(
                "INSERT INTO generations (namespace, generation) VALUES (?, 1) "
                "ON CONFLICT(namespace) DO UPDATE SET generation = generation + 1 RETURNING generation",
                (namespace,),
            ).fetchone()
        )
        return int(row[0])

    def raise_generation(self, namespace: str, at_least: int) -> int:
        row = self._write(
            lambda c: c.execute(
                "INSERT INTO generations (namespace, generation) VALUES (?, ?) "
                "ON CONFLICT(namespace) DO UPDATE SET generation = MAX(generation, excluded.generation) "
                "RETURNING generation",
                (namespace, at_least),
            ).fetchone()
        )
        return int(row[0])

    # -- cross-process leases for processes sharing this file ---------------------------------------
    def acquire_lock(self, name: str, token: str, lease_s: float) -> bool:
        now = time.time()

        def take(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM locks WHERE name = ? AND expires_at <= ?", (name, now))
            cursor = conn.execute(
                "INSERT OR IGNORE INTO locks (name, token, expires_at) VALUES (?, ?, ?)", (name, token, now + lease_s)
            )
            return cursor.rowcount == 1

        return self._write(take)

    def release_lock(self, name: str, token: str) -> None:
        self._write(lambda c: c.execute("DELETE FROM locks WHERE name = ? AND token = ?", (name, token)))

    def unusable(self) -> str | None:
        """Why the file cannot be created or written (None: it can), found without creating it.

        A path that cannot be created (``/proc/nope/cache.sqlite3``) or a read-only file would otherwise make every
        write a silent miss: ``health``, ``warm`` and ``clear`` ask this first and say so. The probe for a missing
        file creates and removes one temporary file in the nearest existing directory, and nothing else."""
        path = self.path
        fix = "set DSPY_TIERED_CACHE_DISK_PATH to a writable file or DSPY_TIERED_CACHE_DISK=false"
        if path.exists():
            if not path.is_file():
                return f"disk tier path {path} is not a file; {fix}"
            if not os.access(path, os.R_OK | os.W_OK):
                return f"disk tier file {path} is not writable; {fix}"
            return None
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"disk tier cannot create {path}: {ancestor} is not a directory; {fix}"
        try:
            fd, probe = tempfile.mkstemp(dir=ancestor, prefix=".dspy-tiered-cache-probe-")
        except OSError as exc:
            return f"disk tier cannot create {path}: {exc.strerror or exc} in {ancestor}; {fix}"
        os.close(fd)
        os.unlink(probe)
        return None

    def health(self) -> TierHealth:
        started = time.perf_counter()
        try:
            problem = self.unusable()
            if problem is not None:
                return TierHealth(self.name, False, None, None, detail=problem)
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")  # a file we can read but not write is not a working tier
            conn.execute("ROLLBACK")
            count, size = conn.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries").fetchone()
            latency = (time.perf_counter() - started) * 1000
            return TierHealth(
                self.name,
                True,
                latency,
                f"sqlite {sqlite3.sqlite_version}",
                detail=str(self.path),
                extra={"entries": count, "bytes": size},
            )
        except Exception as exc:
            return TierHealth(self.name, False, None, None, detail=str(exc))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
