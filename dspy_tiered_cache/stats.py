"""Counters a user reads to decide whether the cache pays: hits per tier, errors, latency, money saved.

Updates take one uncontended lock (a fraction of a microsecond) so counts stay exact under ``Parallel`` threads.
Latency keeps a sum and a bounded ring of recent samples per tier, enough for p50/p99 without unbounded memory.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_RING = 2048


@dataclass
class TierStats:
    hits: int = 0
    misses: int = 0
    sets: int = 0
    errors: int = 0
    corrupt: int = 0
    skipped: int = 0  # calls not made because the breaker was open
    latency_sum: float = 0.0
    latency_count: int = 0
    samples: list[float] = field(default_factory=list)
    _pos: int = 0

    def observe(self, seconds: float) -> None:
        self.latency_sum += seconds
        self.latency_count += 1
        if len(self.samples) < _RING:
            self.samples.append(seconds)
        else:
            self.samples[self._pos] = seconds
            self._pos = (self._pos + 1) % _RING

    def snapshot(self) -> dict[str, Any]:
        ordered = sorted(self.samples)

        def pct(p: float) -> float | None:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e6, 1) if ordered else None

        lookups = self.hits + self.misses
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hits / lookups, 4) if lookups else None,
            "sets": self.sets,
            "errors": self.errors,
            "corrupt": self.corrupt,
            "skipped_breaker_open": self.skipped,
            "latency_us_mean": round(self.latency_sum / self.latency_count * 1e6, 1) if self.latency_count else None,
            "latency_us_p50": pct(0.5),
            "latency_us_p99": pct(0.99),
        }


class Stats:
    def __init__(self, tier_names: list[str]) -> None:
        self._lock = threading.Lock()
        self.tiers: dict[str, TierStats] = {name: TierStats() for name in tier_names}
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.joined = 0  # misses served by another caller's in-flight upstream call
        self.stores = 0
        self.store_skipped = 0  # unserializable or oversized values
        self.uncacheable = 0  # requests with no canonical key
        self.prompt_tokens_saved = 0
        self.completion_tokens_saved = 0
        self.dollars_saved = 0.0
        self.evictions: dict[str, int] = {}

    def tier(self, name: str) -> TierStats:
        return self.tiers[name]

    def record(
        self,
        tier: str,
        *,
        hit: bool | None = None,
        seconds: float | None = None,
        error: bool = False,
        corrupt: bool = False,
        skipped: bool = False,
        set_: bool = False,
    ) -> None:
        with self._lock:
            t = self.tiers[tier]
            if hit is True:
                t.hits += 1
            elif hit is False:
                t.misses += 1
            if seconds is not None:
                t.observe(seconds)
            if error:
                t.errors += 1
            if corrupt:
                t.corrupt += 1
            if skipped:
                t.skipped += 1
            if set_:
                t.sets += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def record_savings(self, model: str | None, usage: Mapping[str, Any] | None) -> None:
        """Credit a hit with the tokens (and, with a known price, dollars) the upstream call would have cost."""
        if not usage:
            return
        prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
        completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        dollars = _price(model, prompt, completion) if model else 0.0
        with self._lock:
            self.prompt_tokens_saved += prompt
            self.completion_tokens_saved += completion
            self.dollars_saved += dollars

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hit_rate, 4) if self.hit_rate is not None else None,
                "bypasses": self.bypasses,
                "joined_in_flight": self.joined,
                "stores": self.stores,
                "store_skipped": self.store_skipped,
                "uncacheable": self.uncacheable,
                "tokens_saved": self.prompt_tokens_saved + self.completion_tokens_saved,
                "prompt_tokens_saved": self.prompt_tokens_saved,
                "completion_tokens_saved": self.completion_tokens_saved,
                "dollars_saved": round(self.dollars_saved, 6),
                "tiers": {name: t.snapshot() for name, t in self.tiers.items()},
                "evictions": dict(self.evictions),
            }

    def reset(self) -> None:
        """Zero every counter in place (the core holds references to the per-tier objects)."""
        with self._lock:
            tiers = self.tiers
            lock = self._lock
            self.__init__(list(tiers))  # type: ignore[misc]
            for name, t in tiers.items():
                t.__init__()  # type: ignore[misc]
                self.tiers[name] = t
            self._lock = lock


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _price(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """Dollars from LiteLLM's cost map, only when a door already imported LiteLLM (importing it costs seconds)."""
    litellm = sys.modules.get("litellm")
    if litellm is None:
        return 0.0
    try:
        prompt_cost, completion_cost = litellm.cost_per_token(
            model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )
        return float(prompt_cost) + float(completion_cost)
    except Exception:  # unknown model: no price, not an error
        return 0.0
