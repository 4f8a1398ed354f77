"""The LiteLLM front door: ``litellm.cache = TieredCache()``.

``TieredCache`` *is* a LiteLLM :class:`~litellm.caching.caching.Cache`: it subclasses it and hands LiteLLM our
backend through ``_backend=``, so every control LiteLLM parses per request keeps working unchanged
(``cache={"no-cache"|"no-store"|"ttl"|"s-maxage"|"namespace"|"use-cache": ...}``, ``caching=False``,
``mode="default_off"``), the hit is converted, marked (``_hidden_params["cache_hit"]``) and logged at zero cost by
LiteLLM itself, and streams are assembled and replayed by LiteLLM's own code. We only replace what LiteLLM does
badly for a shared tiered cache:

* the store: :class:`TieredBackend`, a ``BaseCache`` over :class:`~dspy_tiered_cache.core.CacheCore` (memory,
  then Redis/Valkey or the disk tier; timeouts, circuit breaker, write-behind), storing plain JSON only;
* the key: built by the core from the same whitelisted request parameters LiteLLM keys on, under a namespace and
  its generation (so invalidating a namespace is O(1)), never including credentials or the endpoint;
* ``max_messages=None``: LiteLLM's default of 4 silently stops caching conversations of 5+ messages;
* ``caching=False`` means "do not touch the cache" (LiteLLM still *writes* such a call);
* read-your-writes for ``acompletion``: LiteLLM writes from a fire-and-forget task, so the same request issued
  right after the first returns would miss; our lookup joins LiteLLM's pending write first (see
  :meth:`TieredBackend._join_pending_writes`).

Streams: LiteLLM stores a stream only once it has been consumed to its end (it assembles the chunks into one
response when the finish chunk arrives). A stream abandoned half way, or closed early, stores nothing and the
next identical request goes upstream again. A hit on a streamed request is replayed by LiteLLM as a stream
(``custom_llm_provider="cached_response"``). Streamed and non-streamed requests share entries (``stream`` and
``stream_options`` are not part of the key): the answer is the same, only its delivery differs.

Embeddings: ``aembedding`` caches each input of a list separately (LiteLLM's pipeline write), so a later call
that shares some inputs sends only the new ones upstream. The synchronous ``embedding`` is cached by LiteLLM as
one entry per whole input list. (LiteLLM's per-item lookup does not pass the request's ``cache`` controls, so
with ``mode="default_off"`` an ``aembedding`` never hits even with ``{"use-cache": True}``: a LiteLLM limitation.)

Call types: by default every one LiteLLM's own ``Cache`` caches on the installed LiteLLM
(:data:`DEFAULT_CALL_TYPES`, read from LiteLLM): chat, text completion, embeddings, transcription (keyed on the
audio's bytes), rerank, the Responses API and Anthropic messages. What differs between them (keys, bypasses,
savings) is in :mod:`._litellm_calls`; ``docs/compatibility-litellm.md`` has the table. A streamed
``text_completion`` hit replays text-completion chunks (LiteLLM's own caches replay chat chunks there).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

import litellm
from litellm.caching.base_cache import BaseCache
from litellm.caching.caching import Cache, CacheMode
from litellm.litellm_core_utils.model_param_helper import ModelParamHelper

try:  # litellm < 1.109 lacks it: TieredCache() then refuses to build, in one line (_litellm_version)
    from litellm.types.utils import is_litellm_owned_kwarg
except ImportError:
    is_litellm_owned_kwarg = None  # type: ignore[assignment]

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.flights import Claim
from dspy_tiered_cache.integrations._dspy_litellm_reset import settle_dspy_litellm_defaults
from dspy_tiered_cache.integrations._litellm_args import translate_cache_args
from dspy_tiered_cache.integrations._litellm_backend import (
    _LOOKUP,
    _REPLAY_MISS,
    UNCACHEABLE_KEY,
    TieredBackend,
    from_stored,
    hit_note,
)
from dspy_tiered_cache.integrations._litellm_calls import (
    audio_digest,
    bypass_reason,
    call_type_of,
    default_call_types,
    fits,
    operation_of,
    saved_of,
)
from dspy_tiered_cache.integrations._litellm_flights import FlightsMixin, register_for_failures
from dspy_tiered_cache.integrations._litellm_hit_path import HIT_NOTES, MissingLiteLLMDependency, ensure_hit_path
from dspy_tiered_cache.integrations._litellm_version import require_litellm_door
from dspy_tiered_cache.keys import UncacheableRequest
from dspy_tiered_cache.options import CallOptions, Hit
from dspy_tiered_cache.settings import NAME_PATTERN, CacheSettings
from dspy_tiered_cache.tenancy import tenant_of

__all__ = [
    "DEFAULT_CALL_TYPES",
    "UNCACHEABLE_KEY",
    "MissingLiteLLMDependency",
    "TieredBackend",
    "TieredCache",
]

log = logging.getLogger("dspy_tiered_cache")

#: Every call type LiteLLM's own ``Cache`` caches by default, read from the installed LiteLLM.
DEFAULT_CALL_TYPES: Final[tuple[str, ...]] = default_call_types()

#: Request parameters LiteLLM keys on that do not change the answer, only how it is delivered.
_DELIVERY_ONLY: Final = frozenset({"stream", "stream_options"})

#: Tokens a hit saved, for the call's span.
_SAVED: contextvars.ContextVar[int] = contextvars.ContextVar("dtc_litellm_saved", default=0)
#: The lookup's LiteLLM call type and model, for the shape check and the hit's metadata.
_CALL: contextvars.ContextVar[tuple[str | None, str | None]] = contextvars.ContextVar(
    "dtc_litellm_call", default=(None, None)
)
#: Similarity of the neighbour a semantic hit came from, for the call's span.
_SIMILARITY: contextvars.ContextVar[float | None] = contextvars.ContextVar("dtc_litellm_similarity", default=None)
_LOOKED_UP_MAX: Final = 4096
#: Our cache modes, told apart from LiteLLM's own ``mode`` values (default_on / default_off) by name.
_OUR_MODES: Final = frozenset({"read-write", "replay", "refresh"})


def _check_hit_path_imports() -> None:
    """Settle, at construction, that a cache hit imports nothing that is not installed (see _litellm_hit_path)."""
    ensure_hit_path()


class TieredCache(FlightsMixin, Cache):
    """LiteLLM's cache, backed by memory + Redis/Valkey (or the embedded disk tier).

    ``litellm.cache = TieredCache()`` reads every setting from ``DSPY_TIERED_CACHE_*``; keyword arguments
    override them (``redis_url=``, ``ttl=``, ``namespace=``, or any other :class:`CacheSettings` field), or
    pass a ready ``core=`` to share one core between front doors.

    LiteLLM's own options keep their meaning: ``mode`` ("default_on" or "default_off", opt in per call with
    ``cache={"use-cache": True}``), ``supported_call_types``, ``max_messages`` (default None here: no limit), and
    every other ``litellm.Cache(...)`` argument (``type``, ``host``, ``ttl=0``, ...) keeps its meaning or is refused
    with one line saying what to use instead (see :mod:`._litellm_args`).

    ``mode`` also takes our cache modes, ``"read-write"``, ``"replay"`` or ``"refresh"`` (see
    :mod:`dspy_tiered_cache.modes`). In replay, ``completion`` raises ``ReplayMiss`` at once; ``acompletion`` with
    ``num_retries`` > 0 does too, but LiteLLM's async wrapper first retries through the uncached function, so
    those retries reach the provider: use ``num_retries=0`` when replaying.
    """

    #: Streamed text-completion hits replay text-completion chunks (see :mod:`._litellm_hit_path`).
    replays_text_completion_chunks: Final = True

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        ttl: float | None = None,
        namespace: str | None = None,
        settings: CacheSettings | None = None,
        core: CacheCore | None = None,
        mode: CacheMode | str | None = CacheMode.default_on,
        supported_call_types: Iterable[str] | None = DEFAULT_CALL_TYPES,
        max_messages: int | None = None,
        **overrides: Any,
    ) -> None:
        require_litellm_door()  # one line naming the LiteLLM it needs, on an older one
        _check_hit_path_imports()
        settle_dspy_litellm_defaults()  # else DSPy's first LiteLLM use resets `litellm.cache` and drops this cache
        door_mode = None
        litellm_args = {name: overrides.pop(name) for name in list(overrides) if name not in CacheSettings.model_fields}
        if ttl is not None:
            litellm_args["ttl"] = ttl
        translated, door_ttl = translate_cache_args(litellm_args)
        if litellm_args:  # what neither LiteLLM's Cache nor our settings know
            names = ", ".join(sorted(litellm_args))
            raise TypeError(f"TieredCache() got unexpected arguments: {names} (see CacheSettings and litellm.Cache)")
        mode = mode or CacheMode.default_on
        if str(getattr(mode, "value", mode)) in _OUR_MODES:  # ours (replay...), not LiteLLM's default_on/off
            door_mode, mode = str(mode), CacheMode.default_on
            if core is None:
                overrides["mode"] = door_mode
        if core is None:
            overrides = {**translated, **overrides}
            if redis_url is not None:
                overrides["redis_url"] = redis_url
            if namespace is not None:
                overrides["namespace"] = namespace
            core = CacheCore(settings, **overrides)
        elif overrides or translated or settings is not None or redis_url or namespace is not None:
            raise TypeError("pass either core= or settings/overrides, not both")
        self.core = core
        super().__init__(
            mode=CacheMode(mode),
            supported_call_types=list[Any](supported_call_types) if supported_call_types is not None else None,
            max_messages=max_messages,
            _backend=(backend := TieredBackend(core)),
        )
        if door_mode is not None:
            backend.options = CallOptions(mode=door_mode)
        self._tiered_backend = backend
        # Cache.__init__ records the ttl/namespace LiteLLM applies itself; ours live in the core's settings
        # (per-tier caps, jitter and generations apply), so LiteLLM's copies stay None unless a user sets them.
        self.type = None
        self.namespace = None
        self.ttl = door_ttl  # None, or LiteLLM's Cache(ttl=0): every write's lifetime, so nothing is served
        self._tier_names = "+".join(tier.name for tier in core.tiers) or "none"
        #: call ids that made a lookup, so a write without one (no-cache) still gets its "bypass" span.
        self._looked_up_ids: OrderedDict[str, None] = OrderedDict()
        self._looked_up_lock = threading.Lock()
        #: litellm_call_id -> (key, flight) of misses this process is answering (single-flight leaders).
        self._leading: dict[str, Claim] = {}
        #: thread id -> the call id whose flight that thread's current sync call leads.
        self._thread_leading: dict[int, str] = {}
        #: call ids that already took part in single-flight: a second lookup is a retry (see _retrying).
        self._attempted: OrderedDict[str, None] = OrderedDict()
        self.backend = backend
        # Registered now, not when a flight starts: LiteLLM binds a call's callbacks before its cache lookup.
        if core.settings.single_flight:
            register_for_failures(self)
        self._semantic: Any = None
        if core.settings.semantic:
            from dspy_tiered_cache.semantic import SemanticTier

            self._semantic = SemanticTier(core)

    # -- keys ----------------------------------------------------------------------------------------
    def get_cache_key(self, **kwargs: Any) -> str:
        """Our key for the request LiteLLM is about to look up or store.

        Same contract as ``Cache.get_cache_key``: a ``preset_cache_key`` LiteLLM already computed for this call
        (``litellm_params``) wins, and the new key is written back there. The request is the parameters LiteLLM
        itself keys on (``ModelParamHelper.get_all_llm_api_params()``: model, messages, prompt, input,
        temperature, tools, response_format, seed, n, ...; ``model`` resolved through caching groups) minus
        delivery-only ones; the core canonicalizes and hashes it under ``prefix:e:namespace:generation:``.
        """
        preset = self.get_preset_cache_key_from_kwargs(**kwargs)
        if preset is not None:
            return str(preset)
        key = self._build_key(kwargs)
        litellm_params = kwargs.get("litellm_params")
        if isinstance(litellm_params, dict):
            litellm_params["preset_cache_key"] = key
        return key

    def _build_key(self, kwargs: dict[str, Any]) -> str:
        request = self._request(kwargs)
        try:
            if self.core.settings.tenant_scope != "none" and "__tenant__" not in request:
                tenant_of(self.core.settings.tenant_scope, kwargs)  # raises UncacheableRequest, saying what is missing
            return self.core.key_for(request, namespace=self._namespace_of(kwargs))
        except UncacheableRequest as exc:
            self.core.stats.count("uncacheable")
            log.debug("dspy_tiered_cache: request not cacheable, calling upstream uncached: %s", exc)
            return UNCACHEABLE_KEY

    def _request(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters a key (and a semantic partition) is made of."""
        allowed = ModelParamHelper.get_all_llm_api_params()
        extra_params = litellm.enable_caching_on_provider_specific_optional_params is True
        request: dict[str, Any] = {"__door__": "litellm"}
        for param, value in kwargs.items():
            if param in _DELIVERY_ONLY or value is None:
                continue
            if param in allowed:
                if param == "file":  # the audio's bytes, never its name (two "audio.wav" files differ)
                    value = audio_digest(value)
                elif param == "model" and self._may_regroup_model(kwargs):
                    value = self._get_param_value(param, dict(kwargs))  # caching groups / model_group
                    if value is None:
                        continue
                request[param] = value
            elif extra_params and not _is_litellm_owned(param):
                request[param] = value
        if self.core.settings.include_api_base and kwargs.get("api_base"):
            request["__api_base__"] = str(kwargs["api_base"])
        scope = self.core.settings.tenant_scope
        if scope != "none":  # hashed; the semantic tier partitions on this request too, so tenants stay apart there
            with contextlib.suppress(UncacheableRequest):  # missing: _build_key refuses to key the request
                request["__tenant__"] = tenant_of(scope, kwargs)
        return request

    @staticmethod
    def _may_regroup_model(kwargs: Mapping[str, Any]) -> bool:
        """Whether LiteLLM could key this call on a model group instead of ``model`` (Router metadata present)."""
        return bool(kwargs.get("metadata") or kwargs.get("litellm_metadata") or kwargs.get("litellm_params"))

    def _namespace_of(self, kwargs: Mapping[str, Any]) -> str | None:
        """LiteLLM's namespace precedence: cache={"namespace"}, metadata.redis_namespace, Cache.namespace."""
        control = kwargs.get("cache")
        metadata = kwargs.get("metadata")
        namespace = (
            (control.get("namespace") if isinstance(control, Mapping) else None)
            or (metadata.get("redis_namespace") if isinstance(metadata, Mapping) else None)
            or self.namespace
        )
        return namespace_name(namespace) if namespace else None

    # -- LiteLLM hooks -------------------------------------------------------------------------------
    def should_use_cache(self, **kwargs: Any) -> bool:
        """LiteLLM's rule (mode, max_messages) plus: ``caching=False`` neither reads nor writes."""
        if kwargs.get("caching") is False or bypass_reason(kwargs) is not None:
            return False
        return bool(super().should_use_cache(**kwargs))  # type: ignore[no-untyped-call]

    def get_cache_logic(self, cached_result: Any, max_age: float | None) -> Any:
        """LiteLLM's freshness check (``s-maxage`` against the entry's timestamp), then credit the hit's savings and
        note its metadata (attached to the converted hit by :mod:`._litellm_hit_path`). An entry of another call
        type's shape under the same key is a miss (see :func:`._litellm_calls.fits`)."""
        result = super().get_cache_logic(cached_result=cached_result, max_age=max_age)
        call_type, model = _CALL.get()
        if result is not None and not fits(call_type, result):
            result = None
        if type(result) is dict:
            lookup = _LOOKUP.get()
            answered, usage, dollars = saved_of(result, model)
            _SAVED.set(self.core.stats.record_savings(answered, usage, key=lookup[1] if lookup else None))
            level = lookup[0] if lookup is not None and lookup[0] != "miss" else "hit"
            note = hit_note(cached_result, level, usage, dollars)
            notes = HIT_NOTES.get()
            if notes is None:
                HIT_NOTES.set([note])
            else:
                notes.append(note)
        elif result is None and cached_result is not None:
            _LOOKUP.set(None)  # found but older than s-maxage: a miss for the span
        return result

    # -- one span per cached call ---------------------------------------------------------------------
    def _trace(self, kwargs: Mapping[str, Any]) -> Any:
        model = kwargs.get("model")
        operation = operation_of(kwargs)
        namespace = None
        with contextlib.suppress(Exception):
            namespace = namespace_name(ns) if (ns := self._namespace_of(kwargs)) else None
        return self.core.trace_call(
            "litellm", model=model if isinstance(model, str) else None, namespace=namespace, operation=operation
        )

    def _looked_up(self, kwargs: Mapping[str, Any]) -> None:
        call_id = kwargs.get("litellm_call_id")
        if isinstance(call_id, str):
            with self._looked_up_lock:
                self._looked_up_ids[call_id] = None
                if len(self._looked_up_ids) > _LOOKED_UP_MAX:
                    self._looked_up_ids.popitem(last=False)

    @contextlib.contextmanager
    def _lookup_scope(self, kwargs: Mapping[str, Any]) -> Iterator[Any]:
        """What sync and async lookups share: the call's span and the per-lookup context the backend fills."""
        self._looked_up(kwargs)
        model = kwargs.get("model")
        with self._trace(kwargs) as call:
            tokens = (_LOOKUP.set(None), _SAVED.set(0), _SIMILARITY.set(None), _REPLAY_MISS.set(None))
            called = _CALL.set((call_type_of(kwargs), model if isinstance(model, str) else None))
            try:
                yield call
            finally:
                _LOOKUP.reset(tokens[0])
                _SAVED.reset(tokens[1])
                _SIMILARITY.reset(tokens[2])
                _REPLAY_MISS.reset(tokens[3])
                _CALL.reset(called)

    def get_cache(self, dynamic_cache_object: BaseCache | None = None, **kwargs: Any) -> Any:
        HIT_NOTES.set(None)  # a sync lookup is converted in this same context: its notes start empty
        with self._lookup_scope(kwargs) as call:
            result = super().get_cache(dynamic_cache_object, **kwargs)
            self._raise_replay_miss(call)  # replay answers exact recordings only: before semantic
            if result is None and self._semantic is not None and self._exact_missed():
                result = self._semantic_answered(self._semantic_find(kwargs))
            if result is None and (key := self._claimable(kwargs, sync=True)) is not None:
                result = self._claimed(kwargs, self.core.claim(key), sync=True)
            self._record_lookup(call, result, kwargs)
            return result

    async def async_get_cache(self, dynamic_cache_object: BaseCache | None = None, **kwargs: Any) -> Any:
        with self._lookup_scope(kwargs) as call:
            result = await super().async_get_cache(dynamic_cache_object, **kwargs)
            self._raise_replay_miss(call)
            if result is None and self._semantic is not None and self._exact_missed():
                found = await asyncio.get_running_loop().run_in_executor(None, self._semantic_find, kwargs)
                result = self._semantic_answered(found)
            if result is None and (key := self._claimable(kwargs, sync=False)) is not None:
                result = self._claimed(kwargs, await self.core.aclaim(key), sync=False)
            self._record_lookup(call, result, kwargs)
            return result

    @staticmethod
    def _raise_replay_miss(call: Any) -> None:
        """Raise the replay miss LiteLLM swallowed. LiteLLM's client wrapper re-raises it unchanged: it retries
        only provider errors (openai.APIError and kin), so the caller gets it at once, never after retries."""
        miss = _REPLAY_MISS.get()
        if miss is not None:
            call.record("replay-miss", key=miss.key)
            raise miss

    # -- the opt-in semantic tier: only after an exact miss ---------------------------------------------
    @staticmethod
    def _exact_missed() -> bool:
        lookup = _LOOKUP.get()
        return lookup is not None and lookup[0] == "miss"

    def _semantic_find(self, kwargs: Mapping[str, Any]) -> tuple[Hit, float] | None:
        """Shared by sync and async lookups (the async one runs it in a thread: it may embed over HTTP).

        Streamed calls take part: LiteLLM replays any hit as a stream, a semantic one included."""
        return self._semantic.lookup(self._request(kwargs), self._namespace_of(kwargs))  # type: ignore[no-any-return]

    def _semantic_answered(self, found: tuple[Hit, float] | None) -> Any:
        if found is None:
            return None
        hit, similarity = found
        missed = _LOOKUP.get()
        _LOOKUP.set(("semantic", (missed or ("", ""))[1]))  # before the hit is stamped (_hidden_params level)
        _SIMILARITY.set(similarity)
        result = self.get_cache_logic(cached_result=from_stored(hit), max_age=None)
        if result is None:
            _LOOKUP.set(missed)
            _SIMILARITY.set(None)
        elif notes := HIT_NOTES.get():  # the note of this hit, attached to the converted response
            notes[-1]["similarity"] = similarity
        return result

    def _semantic_store(self, kwargs: Mapping[str, Any]) -> None:
        if "messages" not in kwargs:
            return
        key = self.get_cache_key(**kwargs)
        if key != UNCACHEABLE_KEY:
            control = kwargs.get("cache")  # the call's own lifetime bounds its index row (cache={"ttl": N})
            ttl = kwargs.get("ttl", control.get("ttl") if isinstance(control, dict) else None)
            self._semantic.store(self._request(kwargs), key, self._namespace_of(kwargs), ttl)

    def _record_lookup(self, call: Any, result: Any, kwargs: Mapping[str, Any]) -> None:
        lookup = _LOOKUP.get()
        if lookup is None:  # no lookup was made: caching off for this call, or uncacheable
            call.record("bypass")
            return
        level, key = lookup
        call.record(
            level if result is not None else "miss",
            key=key,
            tokens_saved=_SAVED.get() or None,
            similarity=_SIMILARITY.get() if level == "semantic" else None,
        )

    def _bypass_span_if_not_looked_up(self, kwargs: Mapping[str, Any]) -> None:
        """``cache={"no-cache": True}`` skips the lookup entirely (LiteLLM never calls get_cache), but the call is
        still a cached call that bypassed the cache: give it its span when its answer is written."""
        call_id = kwargs.get("litellm_call_id")
        if not isinstance(call_id, str):
            return
        with self._looked_up_lock:
            seen = self._looked_up_ids.pop(call_id, "missing") is None
        if not seen:
            with self._trace(kwargs) as call:
                call.record("bypass")

    def add_cache(self, result: Any, **kwargs: Any) -> None:
        self._bypass_span_if_not_looked_up(kwargs)
        try:
            super().add_cache(result, **kwargs)  # type: ignore[no-untyped-call]
        finally:
            self._end_flight(kwargs)
        if self._semantic is not None:
            self._semantic_store(kwargs)

    async def async_add_cache(self, result: Any, dynamic_cache_object: BaseCache | None = None, **kwargs: Any) -> None:
        self._bypass_span_if_not_looked_up(kwargs)
        try:
            await super().async_add_cache(result, dynamic_cache_object, **kwargs)
        finally:
            await self._aend_flight(kwargs)
        if self._semantic is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._semantic_store, kwargs)

    # -- management ----------------------------------------------------------------------------------
    def delete(self, **request: Any) -> str:
        """Forget the cached answer of one request, given as the call's own keyword arguments
        (``cache.delete(model=..., messages=[...])``); returns the key it removed. Credentials, ``api_base`` and
        other transport options may be passed or not: they are not part of the key."""
        key = self._build_key(dict(request))
        if key != UNCACHEABLE_KEY:
            self.core.delete(key)
            if self._semantic is not None:
                self._semantic.forget(key)
        return key

    def invalidate_namespace(self, namespace: str | None = None) -> int:
        """Make every entry of a namespace unreachable in O(1) (LiteLLM namespaces of any spelling)."""
        return self.core.invalidate_namespace(namespace_name(namespace) if namespace else None)

    def stats(self) -> dict[str, Any]:
        snapshot = self.core.stats.snapshot()
        if self._semantic is not None:
            snapshot["semantic"] = self._semantic.snapshot()
        return snapshot

    def export(self, path: Any, **options: Any) -> Any:
        """Write this cache's entries to a portable recording (see :meth:`CacheCore.export`)."""
        return self.core.export(path, **options)

    def import_(self, path: Any, **options: Any) -> Any:
        """Load a recording into this cache's tiers (see :meth:`CacheCore.import_`)."""
        return self.core.import_(path, **options)

    def flush(self, timeout: float = 5.0) -> bool:
        return self.core.flush(timeout)

    def clear(self) -> int:
        if self._semantic is not None:
            self._semantic.clear()
        return self.core.clear()

    def close(self) -> None:
        for call_id in list(self._leading):  # their followers go upstream; their leases are given back
            self._end_flight({"litellm_call_id": call_id}, failed=True)
        if self._semantic is not None:
            self._semantic.close()
        self.core.close()

    def __repr__(self) -> str:
        # LiteLLM formats ``litellm.cache`` into a debug f-string on every call, logging on or off: keep it cheap.
        return f"<TieredCache mode={self.mode.value} tiers={self._tier_names}>"


def namespace_name(namespace: str) -> str:
    """Our spelling of a LiteLLM namespace: itself when it is a valid name, else a stable digest of it.

    LiteLLM namespaces are free text (``"team:a/b"``); the core accepts ``[A-Za-z0-9_.-]{1,64}`` so it can
    embed the name in keys safely.
    """
    if NAME_PATTERN.match(namespace):
        return namespace
    return "ns-" + hashlib.blake2b(namespace.encode(), digest_size=12).hexdigest()


def _is_litellm_owned(param: str) -> bool:
    return bool(is_litellm_owned_kwarg(param))


with contextlib.suppress(Exception):  # warm LiteLLM's lru-cached whitelist off the first request's path
    ModelParamHelper.get_all_llm_api_params()
