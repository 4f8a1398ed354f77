"""OpenTelemetry: one span per cached call saying which tier served it, and metrics read from :class:`Stats`.

Cost matters more than coverage on a path that takes microseconds. Without an SDK configured, ``trace_call``
hands back a shared no-op object after one provider check. Metrics are observable instruments whose callbacks
read the counters the core keeps anyway, so the hit path pays nothing for them; only the latency histogram is
recorded as it happens (every remote lookup, one L1 lookup in 64).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, Span, StatusCode

SCOPE = "dspy_tiered_cache"
LEVELS = ("l1", "l2", "disk", "miss", "bypass", "joined", "replay-miss")

_MISSING = object()
_PROVIDER_FROM_ENV = bool(os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"))
_tracer = trace.get_tracer(SCOPE)
_meter = metrics.get_meter(SCOPE)


class Observed(Protocol):
    """What the metric callbacks read of a cache (the core): its settings, counters, memory tier and breakers.
    Typed by use, not by the core's class: this module sits below the core and knows nothing above it."""

    @property
    def settings(self) -> Any: ...
    @property
    def stats(self) -> Any: ...
    @property
    def memory(self) -> Any: ...
    @property
    def breakers(self) -> Any: ...


_cores: weakref.WeakSet[Observed] = weakref.WeakSet()


def tracing_active() -> bool:
    """True once an SDK tracer provider is installed (checked per call: it may be installed later).

    Reads the global that ``set_tracer_provider`` sets: the public ``get_tracer_provider()`` costs ~2 us per
    call, as much as the rest of an L1 hit. Falls back to it where that global is missing, or unset while an
    environment variable names a provider (which ``get_tracer_provider`` then loads)."""
    provider = getattr(trace, "_TRACER_PROVIDER", _MISSING)
    if provider is _MISSING or (provider is None and _PROVIDER_FROM_ENV):
        provider = trace.get_tracer_provider()
    return provider is not None and not isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))


class CallTrace:
    """What a door tells the span about one cached call."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def record(
        self,
        level: str,
        *,
        key: str | None = None,
        tokens_saved: int | None = None,
        model: str | None = None,
        similarity: float | None = None,
    ) -> None:
        span = self.span
        span.set_attribute("cache.level", level)
        span.set_attribute("cache.hit", level in ("l1", "l2", "disk", "joined", "semantic"))
        if similarity is not None:
            span.set_attribute("cache.similarity", round(similarity, 4))
        if key is not None:
            span.set_attribute("cache.key_hash", key.rsplit(":", 1)[-1][:12])
        if tokens_saved:
            span.set_attribute("cache.tokens_saved", tokens_saved)
        if model:
            span.set_attribute("gen_ai.request.model", model)


class _NoopTrace(CallTrace):
    __slots__ = ()

    def __init__(self) -> None:
        pass

    def record(self, level: str, **attributes: Any) -> None:
        """Tracing is off: nothing to record (accepts every keyword :meth:`CallTrace.record` does)."""
        return None


NOOP = _NoopTrace()


class _NoopContext:
    """The context manager handed out when tracing is off: one shared object, no generator per call."""

    __slots__ = ()

    def __enter__(self) -> CallTrace:
        return NOOP

    def __exit__(self, *exc: object) -> None:
        return None


NOOP_CONTEXT = _NoopContext()


@contextmanager
def trace_call(door: str, *, model: str | None, namespace: str, operation: str = "chat") -> Iterator[CallTrace]:
    """One span around a door's cached call, nested under the caller's current span (LiteLLM's, DSPy's)."""
    if not tracing_active():
        yield NOOP
        return
    attributes: dict[str, Any] = {"cache.door": door, "cache.namespace": namespace, "gen_ai.operation.name": operation}
    if model:
        attributes["gen_ai.request.model"] = model
        if "/" in model:
            attributes["gen_ai.system"] = model.split("/", 1)[0]
    with _tracer.start_as_current_span(f"dspy_tiered_cache {operation}", attributes=attributes) as span:
        yield CallTrace(span)


def mark_tier_error(tier: str, exc: BaseException) -> None:
    """Flag the caller's current span when a tier failed: the call still succeeds, but the trace says why it
    was slow or missed. Failures are rare, so looking up the current span here costs nothing that matters."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("cache.error", f"{tier}: {type(exc).__name__}")
        span.set_attribute("cache.error_tier", tier)
        span.set_status(StatusCode.UNSET)


def register(core: Observed) -> None:
    _cores.add(core)


def _observe(fn: Any) -> Any:
    def callback(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        out: list[metrics.Observation] = []
        for core in list(_cores):
            out.extend(fn(core))
        return out

    return callback


def _per_tier(field: str) -> Any:
    def read(core: Observed) -> list[metrics.Observation]:
        ns = core.settings.namespace
        return [
            metrics.Observation(getattr(t, field), {"tier": name, "namespace": ns})
            for name, t in core.stats.tiers.items()
        ]

    return _observe(read)


def _memory(field: str) -> Any:
    def read(core: Observed) -> list[metrics.Observation]:
        mem = core.memory
        return [] if mem is None else [metrics.Observation(getattr(mem, field), {"tier": mem.name})]

    return _observe(read)


def _overall(fn: Any) -> Any:
    return _observe(lambda core: [metrics.Observation(fn(core), {"namespace": core.settings.namespace})])


_meter.create_observable_counter("dspy_tiered_cache.hits", [_per_tier("hits")], description="Hits per tier")
_meter.create_observable_counter("dspy_tiered_cache.misses", [_per_tier("misses")], description="Misses per tier")
_meter.create_observable_counter("dspy_tiered_cache.errors", [_per_tier("errors")], description="Tier failures")
_meter.create_observable_counter(
    "dspy_tiered_cache.corrupt", [_per_tier("corrupt")], description="Entries that failed their integrity check"
)
_meter.create_observable_counter(
    "dspy_tiered_cache.evictions", [_memory("evictions")], description="Memory-tier evictions"
)
_meter.create_observable_gauge("dspy_tiered_cache.memory.entries", [_memory("entries")])
_meter.create_observable_gauge("dspy_tiered_cache.memory.bytes", [_memory("bytes")], unit="By")
_meter.create_observable_counter(
    "dspy_tiered_cache.tokens_saved",
    [_overall(lambda c: c.stats.prompt_tokens_saved + c.stats.completion_tokens_saved)],
    description="Tokens not paid for thanks to hits",
)
_meter.create_observable_counter(
    "dspy_tiered_cache.dollars_saved",
    [_overall(lambda c: c.stats.dollars_saved)],
    unit="USD",
    description="Dollars saved (LiteLLM price map)",
)
LATENCY = _meter.create_histogram(
    "dspy_tiered_cache.lookup.duration", unit="ms", description="Tier lookup latency (L1 sampled 1 in 64)"
)

#: Circuit breaker state per remote tier as a number a dashboard can colour: 0 closed, 1 half-open, 2 open.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


def _breakers(field: str) -> Any:
    """Per tier name across the process's cores: the worst state, the sum of openings (one series per tier, as
    two cores reporting the same attributes would overwrite each other)."""

    def callback(options: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        per_tier: dict[str, int] = {}
        seen: set[int] = set()  # cores over one tier share its breaker: count it once
        for core in list(_cores):
            for name, breaker in core.breakers.items():
                if id(breaker) in seen:
                    continue
                seen.add(id(breaker))
                if field == "state":
                    per_tier[name] = max(per_tier.get(name, 0), BREAKER_STATES.get(breaker.state, 2))
                else:
                    per_tier[name] = per_tier.get(name, 0) + breaker.opened
        return [metrics.Observation(value, {"tier": name}) for name, value in per_tier.items()]

    return callback


_meter.create_observable_gauge(
    "dspy_tiered_cache.breaker.state",
    [_breakers("state")],
    description="Circuit breaker of a remote tier: 0 closed, 1 half-open (probing), 2 open (calls skipped)",
)
_meter.create_observable_counter(
    "dspy_tiered_cache.breaker.opened", [_breakers("opened")], description="Times a tier's circuit breaker opened"
)
