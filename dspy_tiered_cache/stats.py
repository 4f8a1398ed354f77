"""Counters a user reads to decide whether the cache pays: hits per tier, errors, latency, money saved.

Updates take one uncontended lock (a fraction of a microsecond) so counts stay exact under ``Parallel`` threads,
with one exception: on a memory-tier lookup the core bumps that tier's hits/misses and the total ``hits`` without
the lock (``CacheCore._l1_get``). That lookup is a few microseconds and the lock would be a visible part of it; the
price is that a thread switch between reading and writing a counter can drop an increment, so under many threads
those counts may read slightly low, never high. Everything else here is exact.
Latency keeps a sum and a bounded ring of recent samples per tier, enough for p50/p99 without unbounded memory.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from dspy_tiered_cache import forksafe
from dspy_tiered_cache.telemetry import LATENCY

_RING = 2048


@dataclass
class TierStats:
    name: str = ""
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
        LATENCY.record(seconds * 1000.0, {"tier": self.name})
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
        forksafe.register(self)
        self.tiers: dict[str, TierStats] = {name: TierStats(name) for name in tier_names}
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.joined = 0  # misses served by another caller's in-flight upstream call
        self.stores = 0
        self.store_skipped = 0  # unserializable or oversized values
        self.uncacheable = 0  # requests with no canonical key
        #: Answers other processes shared over the invalidation channel: kept in memory / dropped by the checks.
        self.shared_taken = 0
        self.shared_rejected = 0
        self.prompt_tokens_saved = 0
        self.completion_tokens_saved = 0
        #: model -> [prompt tokens, completion tokens] saved; priced only when read (pricing is slow).
        self.saved_by_model: dict[str, list[int]] = {}
        self.evictions: dict[str, int] = {}
        #: Per key stem (``prefix:e:namespace:generation``, see :func:`key_stem`): lookups that hit / missed.
        #: The fleet publisher folds them into namespaces off the hit path; a slice and a dict bump on it.
        self.stem_hits: defaultdict[str, int] = defaultdict(int)
        self.stem_misses: dict[str, int] = {}
        #: (key stem, model) -> [hits credited, prompt tokens, completion tokens] saved.
        self.saved_by_stem: dict[tuple[str, str], list[int]] = {}
        #: Bumped by :meth:`reset`, so the fleet publisher knows counters started over (a lower count alone
        #: can be a miss taken back).
        self.epoch = 0

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()

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

    def hit(self, key: str) -> None:
        """One lookup answered by a tier below L1; lock-free like the core's L1 hits (``stem_hits`` is a
        defaultdict: a rare lost increment under threads, never an error)."""
        self.hits += 1
        self.stem_hits[key[:-_DIGEST_TAIL]] += 1

    def miss(self, key: str, n: int = 1) -> None:
        """``n=-1`` takes back a miss the call's answer later turned into a hit (a semantic hit)."""
        stem = key_stem(key)
        with self._lock:
            self.misses += n
            self.stem_misses[stem] = self.stem_misses.get(stem, 0) + n

    def record_savings(self, model: str | None, usage: Mapping[str, Any] | None, key: str | None = None) -> int:
        """Credit a hit with the tokens the upstream call would have cost; returns how many.

        ``key`` (the entry's key) attributes the saving to its namespace in the fleet totals."""
        prompt = completion = 0
        if usage:
            prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
            completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
        model = fleet_model_name(model)
        with self._lock:
            by_stem = self.saved_by_stem.setdefault((key_stem(key) if key else "", model), [0, 0, 0])
            by_stem[0] += 1
            by_stem[1] += prompt
            by_stem[2] += completion
            if not usage:
                return 0
            self.prompt_tokens_saved += prompt
            self.completion_tokens_saved += completion
            tokens = self.saved_by_model.setdefault(model, [0, 0])
            tokens[0] += prompt
            tokens[1] += completion
        return prompt + completion

    @property
    def dollars_saved(self) -> float:
        """Priced from LiteLLM's cost map per token, per model; models without a known price count zero."""
        with self._lock:
            items = [(m, p, c) for m, (p, c) in self.saved_by_model.items()]
        total = 0.0
        for model, prompt, completion in items:
            in_price, out_price = _unit_prices(model)
            total += prompt * in_price + completion * out_price
        return total

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def snapshot(self) -> dict[str, Any]:
        dollars = self.dollars_saved
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "hit_rate": round(self.hit_rate, 4) if self.hit_rate is not None else None,
                "bypasses": self.bypasses,
                "joined_in_flight": self.joined,
                "shared_taken": self.shared_taken,  # answers other processes shared, kept in the memory tier
                "shared_rejected": self.shared_rejected,  # ... refused by the checks (corrupt, foreign)
                "stores": self.stores,
                "store_skipped": self.store_skipped,
                "uncacheable": self.uncacheable,
                "tokens_saved": self.prompt_tokens_saved + self.completion_tokens_saved,
                "prompt_tokens_saved": self.prompt_tokens_saved,
                "completion_tokens_saved": self.completion_tokens_saved,
                "dollars_saved": round(dollars, 6),
                "tiers": {name: t.snapshot() for name, t in self.tiers.items()},
                "evictions": dict(self.evictions),
            }

    def reset(self) -> None:
        """Zero every counter in place (the core holds references to the per-tier objects)."""
        with self._lock:
            tiers = self.tiers
            lock = self._lock
            epoch = self.epoch
            self.__init__(list(tiers))  # type: ignore[misc]
            for name, t in tiers.items():
                t.__init__(name)  # type: ignore[misc]
                self.tiers[name] = t
            self._lock = lock
            self.epoch = epoch + 1


#: Length of ``:<digest>`` at the end of every entry key (keys.entry_key, keys.request_digest).
_DIGEST_TAIL = 41


def key_stem(key: str) -> str:
    """``prefix:e:namespace:generation`` of an entry key: one slice, cheap enough for the hit path."""
    return key[:-_DIGEST_TAIL]


def namespace_of_stem(stem: str) -> str:
    """The namespace in a key stem; ``"(other)"`` for keys not built by :func:`keys.entry_key`."""
    parts = stem.split(":")
    return parts[2] if len(parts) == 4 and parts[1] == "e" else "(other)"


def saved_usd(model: str | None, usage: Mapping[str, Any] | None) -> float:
    """What ``usage`` would have cost upstream for ``model`` (LiteLLM's price map; 0.0 when unknown)."""
    if not usage or not model:
        return 0.0
    in_price, out_price = _unit_prices(model)
    prompt = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    completion = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    return prompt * in_price + completion * out_price


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


_PRICES: dict[str, tuple[float, float]] = {}
_TABLE: dict[str, Any] | None = None


def _price_table() -> dict[str, Any]:
    """LiteLLM's price map: the live one if LiteLLM is loaded, else the JSON copy it ships (importing LiteLLM
    takes seconds, and DSPy's native engine never does)."""
    global _TABLE
    litellm = sys.modules.get("litellm")
    live = getattr(litellm, "model_cost", None) if litellm is not None else None
    if isinstance(live, dict) and live:
        return live
    if _TABLE is None:
        _TABLE = {}
        spec = find_spec("litellm")
        for location in list(spec.submodule_search_locations or []) if spec is not None else []:
            path = Path(location) / "model_prices_and_context_window_backup.json"
            if path.exists():
                _TABLE = json.loads(path.read_text(encoding="utf-8"))
                break
    return _TABLE


def model_prices(model: str) -> tuple[float, float] | None:
    """(input, output) dollars per token, or None for a model without a known price."""
    table = _price_table()
    for name in (model, model.split("/", 1)[-1]):
        entry = table.get(name)
        if isinstance(entry, dict) and "input_cost_per_token" in entry:
            return float(entry["input_cost_per_token"]), float(entry.get("output_cost_per_token") or 0.0)
    return None


#: Prefixes ``litellm.get_llm_provider`` reads as a provider although LiteLLM's price map names no model under
#: them (the map's ``litellm_provider`` values supply the rest): serving stacks, routers, local runtimes.
_UNPRICED_PROVIDERS = frozenset(
    {
        "ai21_chat",
        "anthropic_text",
        "custom",
        "custom_openai",
        "databricks_agent",
        "docker_model_runner",
        "github",
        "hosted_vllm",
        "huggingface",
        "infinity",
        "litellm_proxy",
        "llamafile",
        "lm_studio",
        "ollama_chat",
        "oobabooga",
        "openai_like",
        "openrouter",
        "predibase",
        "reka",
        "sagemaker_chat",
        "triton",
        "vertex_ai_beta",
        "vllm",
        "watsonx_text",
        "xinference",
    }
)
_PROVIDERS: frozenset[str] | None = None


@lru_cache(maxsize=4096)
def fleet_model_name(model: str | None) -> str:
    """One name per model in the counts: ``openai/gpt-4o-mini`` (what a DSPy LM is given) and ``gpt-4o-mini``
    (what a LiteLLM response carries) are the same model, so the totals must not split it in two.

    The rule is ``litellm.get_llm_provider``'s: a first path segment naming a provider is dropped, once
    (``openrouter/openai/gpt-4o`` -> ``openai/gpt-4o``); other names stay as they are. Providers come from the
    price map LiteLLM ships, so counting a hit never imports LiteLLM (seconds, and the DSPy door may not need it).
    """
    if not model:
        return ""
    name = model.strip()
    prefix, slash, rest = name.partition("/")
    if not slash or not rest:
        return name
    global _PROVIDERS
    if _PROVIDERS is None:
        try:
            table = _price_table()
        except (OSError, ValueError):  # no readable price map: the serving stacks above still resolve
            table = {}
        known = {str(v.get("litellm_provider")) for v in table.values() if isinstance(v, dict)}
        _PROVIDERS = _UNPRICED_PROVIDERS | {p for p in known if p and " " not in p}
    return rest if prefix.lower() in _PROVIDERS else name


def _unit_prices(model: str) -> tuple[float, float]:
    """Per token, not per total, so tiered long-context prices are not misapplied; cached per model."""
    if not model:
        return 0.0, 0.0
    cached = _PRICES.get(model)
    if cached is None:
        try:
            cached = model_prices(model) or (0.0, 0.0)
        except (OSError, ValueError):  # an unreadable price map: no price, not an error
            cached = (0.0, 0.0)
        _PRICES[model] = cached
    return cached


@runtime_checkable
class SampledStorage(Protocol):
    """A shared tier that can say what its stored entries cost (Redis, the SQLite file)."""

    name: str

    def storage_sample(self, limit: int = 200) -> dict[str, Any]: ...


def storage_summary(tiers: Iterable[Any], limit: int = 200) -> list[dict[str, Any]]:
    """Bytes stored per entry and the compression ratio per shared tier, from a sample of ``limit`` entries each
    (``stats``): what a fleet pays for each cached answer. A tier that cannot be read is reported, not raised."""
    out = []
    for tier in tiers:
        if not isinstance(tier, SampledStorage):
            continue
        try:
            out.append({"tier": tier.name, **tier.storage_sample(limit)})
        except Exception as exc:
            out.append({"tier": tier.name, "error": f"{type(exc).__name__}: {exc}"[:300]})
    return out


def format_storage(st: Mapping[str, Any]) -> str:
    """One line of :func:`storage_summary` for a terminal."""
    if not st.get("sampled"):
        return "no entries to sample"
    parts = [f"{st['bytes_per_entry']:,.0f} B stored per entry (sample of {st['sampled']})"]
    if st.get("payload_bytes_per_entry"):
        parts.append(f"{st['payload_bytes_per_entry']:,.0f} B payload")
    if st.get("compression_ratio"):
        parts.append(f"compression {st['compression_ratio']:.2f}x")
    if st.get("memory_usage_per_entry"):
        parts.append(f"Redis MEMORY USAGE {st['memory_usage_per_entry']:,.0f} B per entry")
    return ", ".join(parts)
