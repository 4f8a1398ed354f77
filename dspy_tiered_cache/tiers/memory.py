"""The in-process tier (L1): an LRU bounded by entry count and by payload bytes, with per-entry expiry.

Built on ``OrderedDict`` rather than cachetools: the hit path is one C-level dict lookup plus ``move_to_end``
under a lock, and we need two bounds at once (cachetools' caches take one ``maxsize``). Entries hold JSON bytes,
not live objects, so a hit decodes a fresh object the caller may mutate and the byte bound is exact.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from dspy_tiered_cache.codec import Entry
from dspy_tiered_cache.tiers.base import Tier, TierHealth


class MemoryTier(Tier):
    name = "l1"
    remote = False

    def __init__(self, *, max_entries: int = 10_000, max_bytes: int = 128 * 1024 * 1024, ttl: float | None = None):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.evictions = 0
        self._data: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._generations: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def entries(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> Entry | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if entry.expires_at is not None and entry.expires_at <= time.time():
                del self._data[key]
                self._bytes -= entry.size
                return None
            self._data.move_to_end(key)
            return entry

    def set(self, key: str, entry: Entry) -> None:
        size = entry.size
        if size > self.max_bytes or self.max_entries <= 0:
            return  # would evict everything else and still not fit
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._data[key] = entry
            self._bytes += size
            while len(self._data) > self.max_entries or self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.size
                self.evictions += 1

    def delete(self, key: str) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.size

    def clear(self) -> int:
        with self._lock:
            n = len(self._data)
            self._data.clear()
            self._bytes = 0
            return n

    def drop_namespace(self, prefix: str) -> int:
        """Forget entries of one namespace (keys starting with ``prefix``) after another process bumped it."""
        with self._lock:
            doomed = [k for k in self._data if k.startswith(prefix)]
            for k in doomed:
                self._bytes -= self._data.pop(k).size
            return len(doomed)

    def get_generation(self, namespace: str) -> int:
        return self._generations.get(namespace, 0)

    def bump_generation(self, namespace: str) -> int:
        with self._lock:
            gen = self._generations.get(namespace, 0) + 1
            self._generations[namespace] = gen
            return gen

    def health(self) -> TierHealth:
        return TierHealth(
            self.name,
            True,
            0.0,
            detail=f"{self.entries} entries, {self._bytes} bytes",
            extra={
                "entries": self.entries,
                "bytes": self._bytes,
                "max_entries": self.max_entries,
                "max_bytes": self.max_bytes,
            },
        )
