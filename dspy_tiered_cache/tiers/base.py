"""The one protocol every tier implements, sync and async.

Tiers store :class:`~dspy_tiered_cache.codec.Entry` objects and may raise on failure: catching, counting,
breaking circuits and failing open is the core's job, done once for all tiers. The async methods default to the
sync ones because the local tiers never wait on a network; the Redis tier overrides them with a real asyncio
client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from dspy_tiered_cache.codec import Entry


@dataclass(slots=True)
class TierHealth:
    name: str
    ok: bool
    latency_ms: float | None = None
    version: str | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def storage_figures(entries: int, stored: int, payloads: list[int], usage: list[int]) -> dict[str, Any]:
    """Per-entry figures of a sample of stored entries (``stats``): bytes stored, payload bytes (decoded), the
    compression ratio, and the backend's own accounting where it has one (Redis ``MEMORY USAGE``)."""
    return {
        "sampled": entries,
        "bytes_per_entry": round(stored / entries, 1) if entries else None,
        "payload_bytes_per_entry": round(sum(payloads) / len(payloads), 1) if payloads else None,
        "compression_ratio": round(sum(payloads) / stored, 3) if stored and len(payloads) == entries else None,
        "memory_usage_per_entry": round(sum(usage) / len(usage), 1) if usage else None,
    }


class Tier(ABC):
    #: "l1", "l2" or "disk": the value of the ``cache.level`` span attribute for a hit here.
    name: str = "tier"
    #: Remote tiers are written in the background and guarded by a circuit breaker.
    remote: bool = False
    #: Default lifetime cap of this tier, applied on top of the entry's own expiry.
    ttl: float | None = None
    evictions: int = 0
    #: Writes counted by :meth:`count_stored`: how many, their payload bytes and the bytes actually stored (after
    #: the frame and compression). Plain ints bumped without a lock, like the hit counters: a rare lost update
    #: under threads skews an average by a hair, never a stored value.
    writes: int = 0
    payload_bytes: int = 0
    stored_bytes: int = 0

    def count_stored(self, payload: int, stored: int) -> None:
        self.writes += 1
        self.payload_bytes += payload
        self.stored_bytes += stored

    def storage(self) -> dict[str, Any]:
        """Bytes stored per entry and the compression ratio (payload bytes / stored bytes) of what this tier
        wrote since it started; ``stats`` and the fleet view show it per tier."""
        if not self.writes:
            return {"writes": 0, "bytes_per_entry": None, "payload_bytes_per_entry": None, "compression_ratio": None}
        return {
            "writes": self.writes,
            "bytes_per_entry": round(self.stored_bytes / self.writes, 1),
            "payload_bytes_per_entry": round(self.payload_bytes / self.writes, 1),
            "compression_ratio": round(self.payload_bytes / self.stored_bytes, 3) if self.stored_bytes else None,
        }

    @abstractmethod
    def get(self, key: str) -> Entry | None: ...

    @abstractmethod
    def set(self, key: str, entry: Entry) -> None: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def clear(self) -> int:
        """Drop every entry this tier holds under our prefix; returns how many (best effort)."""

    @abstractmethod
    def get_generation(self, namespace: str) -> int: ...

    @abstractmethod
    def bump_generation(self, namespace: str) -> int: ...

    @abstractmethod
    def raise_generation(self, namespace: str, at_least: int) -> int:
        """Set the generation to at least ``at_least`` (a restarted Redis must not rewind it); returns it."""

    @abstractmethod
    def health(self) -> TierHealth: ...

    def is_outage(self, exc: BaseException) -> bool:
        """Whether a failure means the tier is unreachable (trip its breaker) rather than that it answered
        with an error for this one request (e.g. Redis out of memory refusing a write, while reads work)."""
        return True

    def is_timeout(self, exc: BaseException) -> bool:
        """A timeout opens the breaker at once: each further call would block for the whole timeout again."""
        return isinstance(exc, TimeoutError)

    def close(self) -> None:  # noqa: B027 - most tiers hold nothing to release
        """Release connections or files; the tier may be used again afterwards (it reopens lazily)."""

    async def aget(self, key: str) -> Entry | None:
        return self.get(key)

    async def aset(self, key: str, entry: Entry) -> None:
        self.set(key, entry)

    async def adelete(self, key: str) -> None:
        self.delete(key)

    async def aget_generation(self, namespace: str) -> int:
        return self.get_generation(namespace)

    async def aclose(self) -> None:
        self.close()
