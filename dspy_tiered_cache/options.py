"""The small value types every layer passes around: per-call options and a lookup's answer.

Kept apart from the core so that doors, tiers and tools can name them without importing the cascade.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final, NamedTuple


class _Unset:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = _Unset()


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
