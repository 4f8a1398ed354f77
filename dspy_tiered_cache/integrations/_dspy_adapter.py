"""The ``dspy.cache`` protocol (``get``/``put``) over a :class:`~dspy_tiered_cache.core.CacheCore`.

DSPy's execution engine reads and writes its response cache through one global object, ``dspy.cache``:
``get(request, ignored_args_for_cache_key)`` before the upstream call and ``put(request, value, ...)`` after
it (dspy/clients/execution.py ``_cached``/``_store``; ``request_cache`` in dspy/clients/cache.py for 3.0-3.3 and
for the Embedder). :class:`DSPyCacheAdapter` speaks that protocol for our core:

* keys come from the core's canonical key of DSPy's request dict (secrets and transport options never enter
  it; the endpoint only with ``include_api_base``), with the async function id mapped to the sync one so a
  request made with ``acall`` and with ``__call__`` shares one entry (DSPy's own cache keeps two copies of the
  same answer);
* values go through :mod:`._values` (tagged plain JSON, never pickle) and come back as fresh objects, marked as
  DSPy marks its own hits (``usage`` emptied, ``cache_hit`` set) so usage trackers do not count them, while
  our stats credit the tokens and dollars the hit saved;
* ``get`` and ``put`` never raise: an exception there would fail the user's LM call.

Single-flight needs to know when a leader's call ends, including by an exception (DSPy then never calls
``put``). Only a :class:`CallScope` — opened by ``CachedLM.__call__``/``acall`` around DSPy's own call, closed in
a ``finally`` — knows that, so the adapter single-flights only inside a scope.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dspy_tiered_cache.codec import decode_value
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.flights import Claim
from dspy_tiered_cache.integrations._dspy_cores import core_from_spec, core_spec
from dspy_tiered_cache.integrations._dspy_memory import MemoryCacheView, load_memory, save_memory
from dspy_tiered_cache.integrations._values import TYPE_TAG, UnknownType, UnsupportedValue, dump_value, load_value
from dspy_tiered_cache.keys import TRANSPORT_KEYS, UncacheableRequest
from dspy_tiered_cache.modes import ReplayMiss, check_mode
from dspy_tiered_cache.options import UNSET, CallOptions
from dspy_tiered_cache.settings import ConfigError, check_namespace
from dspy_tiered_cache.stats import saved_usd

log = logging.getLogger("dspy_tiered_cache.dspy")

#: DSPy's async function ids -> the sync ones: both produce the same stored shape, so they share an entry.
SYNC_FN_IDS: dict[str, str] = {
    "dspy.clients.lm.alitellm_completion": "dspy.clients.lm.litellm_completion",
    "dspy.clients.lm.alitellm_text_completion": "dspy.clients.lm.litellm_text_completion",
    "dspy.clients.lm.alitellm_responses_completion": "dspy.clients.lm.litellm_responses_completion",
    "dspy.clients.lm15.complete.async": "dspy.clients.lm15.complete",
    "dspy.clients.embedding._cached_acompute_embeddings": "dspy.clients.embedding._cached_compute_embeddings",
}

#: What DSPy passes as ``ignored_args_for_cache_key`` (all already outside our canonical form).
DSPY_IGNORED = ("api_key", "api_base", "base_url")

#: Value types already warned about as "not cached" (once per type per process, whatever the adapter).
_warned_types: set[str] = set()
_warned_types_lock = threading.Lock()


@dataclass(slots=True)
class CallScope:
    """One ``CachedLM`` call: which adapter serves it and the claims it leads or the answers it joined.

    ``leading`` claims must be ended when the call ends; :meth:`release` (called from a ``finally``) abandons
    any the call did not fulfil, which tells their followers to go upstream at once.
    """

    adapter: DSPyCacheAdapter
    asynchronous: bool
    leading: dict[str, Claim] = field(default_factory=dict)
    joined: dict[str, bytes] = field(default_factory=dict)
    #: What the call's span reports: "bypass" until a lookup happens (cache=False never looks up).
    level: str = "bypass"
    key: str | None = None
    tokens_saved: int = 0
    #: What a hit saved, for the history entry DSPy writes for this call (``CachedLM.update_history``).
    cache: dict[str, Any] | None = None

    def end_all(self, plain: Any = None) -> None:
        """Fulfil every claim this call leads with ``plain`` (the call's answer), or abandon them (None)."""
        if self.leading:
            claims, self.leading = self.leading, {}
            core, options = self.adapter.core, self.adapter.options
            for claim in claims.values():
                if plain is None:
                    core.abandon(claim)
                else:
                    core.fulfil(claim, plain, options=options)

    def release(self) -> None:
        self.end_all(None)
        self.joined.clear()

    async def arelease(self) -> None:
        """:meth:`release` for ``acall``: abandoned leases are released without blocking the loop."""
        if self.leading:
            claims, self.leading = self.leading, {}
            for claim in claims.values():
                await self.adapter.core.aabandon(claim)
        self.joined.clear()


class DSPyCacheAdapter:
    """A ``dspy.cache``-compatible object backed by a :class:`CacheCore`.

    ``namespace``, ``ttl`` and ``max_age`` apply to every entry this adapter reads and writes, so several
    adapters (one per ``CachedLM``, say one per prompt version) can share one core and its connections.
    """

    def __init__(
        self,
        core: CacheCore,
        *,
        namespace: str | None = None,
        ttl: Any = UNSET,
        max_age: float | None = None,
        single_flight: bool | None = None,
        mode: str | None = None,
    ) -> None:
        try:
            mode = check_mode(mode)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if namespace is not None:  # fail now, not by silently skipping the cache on every call
            try:
                check_namespace(namespace)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.core = core
        self.namespace = namespace
        self.ttl = ttl
        self.max_age = max_age
        self.single_flight = single_flight
        self.mode = mode
        self.options = CallOptions(ttl=ttl, max_age=max_age, namespace=namespace, mode=mode)
        self._warned: set[str] = set()

    def __repr__(self) -> str:
        return f"DSPyCacheAdapter(core={self.core!r}, namespace={self.namespace or self.core.settings.namespace!r})"

    # The adapter is shared, never duplicated: copies of a program must keep hitting the same cache.
    def __copy__(self) -> DSPyCacheAdapter:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> DSPyCacheAdapter:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_adapter, (_adapter_spec(self),))

    @property
    def sharing(self) -> bool:
        """Whether concurrent identical misses are collapsed into one upstream call."""
        s = self.core.settings
        wanted = s.single_flight if self.single_flight is None else self.single_flight
        return wanted and s.enabled and self.core.mode_of(self.options) != "refresh"  # refresh: never served

    # -- the dspy.cache protocol ---------------------------------------------------------------------------
    def cache_key(self, request: Mapping[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> str:
        """A 64-hex SHA-256 like DSPy's (an HMAC under ``key_secret``); ``key in adapter`` and
        ``adapter.memory_cache`` accept it. Raises for a request with no canonical form, as DSPy's may."""
        try:
            return self.core.full_digest(self._body(request), ignore=ignored_args_for_cache_key or ())
        except UncacheableRequest:
            raise UncacheableRequest("this request has no canonical form and is never cached") from None

    def get(
        self,
        request: Mapping[str, Any],
        ignored_args_for_cache_key: list[str] | None = None,
        scope: CallScope | None = None,
    ) -> Any:
        """The cached value (a fresh object marked as a hit) or None. Never raises."""
        try:
            return self._get(request, ignored_args_for_cache_key, scope)
        except ReplayMiss:  # replay mode: the caller must hear of it (DSPy does not retry or convert it)
            if scope is not None:
                scope.level = "replay-miss"
            raise
        except Exception as exc:
            self._warn("get", "dspy_tiered_cache: cache lookup failed (%s: %s); calling the LM", exc)
            return None

    def put(
        self,
        request: Mapping[str, Any],
        value: Any,
        ignored_args_for_cache_key: list[str] | None = None,
        enable_memory_cache: bool = True,
        scope: CallScope | None = None,
    ) -> None:
        """Store ``value`` in every tier. Never raises.

        ``enable_memory_cache=False`` (DSPy's guard against an unbounded memory cache) is not needed here: our
        memory tier is bounded by entries and bytes, so the value is stored as usual.
        """
        plain: Any = None
        try:
            key = self.key(request, ignored_args_for_cache_key)
            if key is not None:
                plain = self._plain(value)
                claim = scope.leading.pop(key, None) if scope is not None else None
                if claim is not None and plain is not None:  # our flight's answer: stored, handed to followers
                    self.core.fulfil(claim, plain, options=self.options)
                elif claim is not None:
                    self.core.abandon(claim)
                elif plain is not None:
                    self.core.set(key, plain, options=self.options)
        except Exception as exc:
            self._warn("put", "dspy_tiered_cache: cache store failed (%s: %s); the answer was not cached", exc)
        finally:
            if scope is not None and scope.leading:
                # One LM call makes one lookup and one store: a claim left is this request under the key the async
                # pre-flight computed, should it differ from DSPy's. Its followers wait for this same answer.
                scope.end_all(plain)

    def __contains__(self, key: object) -> bool:
        """Whether any tier holds ``key`` (a :meth:`cache_key` digest or a storage key); counts a lookup."""
        storage = self.storage_key(key)
        return storage is not None and self.core.get(storage, options=self.options) is not None

    def storage_key(self, key: object) -> str | None:
        """Our storage key for a :meth:`cache_key` digest (in this adapter's namespace) or a storage key."""
        if not isinstance(key, str):
            return None
        if len(key) == 64 and ":" not in key:
            try:
                return self.core.storage_key(key, namespace=self.namespace)
            except UncacheableRequest:
                return None
        return key

    @property
    def memory_cache(self) -> MemoryCacheView:
        """DSPy's ``dspy.cache.memory_cache``: a read-only mapping over the memory tier (``len``, ``in``, ``[]``
        by :meth:`cache_key` digest, ``clear()``). Values come back as fresh objects, never the stored ones."""
        return MemoryCacheView(self)

    @property
    def disk_cache(self) -> Any:
        raise AttributeError(
            "dspy.cache.disk_cache (DSPy's diskcache) is replaced by the tiered cache's persistent tiers: use "
            "adapter.core (core.tiers, core.clear(), core.stats) or the `dspy-tiered-cache stats` command"
        )

    def reset_memory_cache(self) -> None:
        if self.core.memory is not None:
            self.core.memory.clear()

    def save_memory_cache(self, filepath: str | os.PathLike[str]) -> None:
        """Write the memory tier as a recording (gzip JSON lines, never pickle): :func:`._dspy_memory.save_memory`."""
        save_memory(self.core, self._secret(), filepath)

    def load_memory_cache(self, filepath: str | os.PathLike[str], allow_pickle: bool = False) -> int:
        """Load a recording into the memory tier; returns the entries loaded. ``allow_pickle`` is accepted for
        DSPy's signature and ignored: nothing is ever unpickled (:func:`._dspy_memory.load_memory`)."""
        return load_memory(self.core, self._secret(), filepath)

    def _secret(self) -> bytes | None:
        secret = self.core.settings.key_secret
        return secret.get_secret_value().encode() if secret is not None else None

    # -- keys ----------------------------------------------------------------------------------------------
    def key(self, request: Mapping[str, Any], ignored: list[str] | tuple[str, ...] | None = None) -> str | None:
        """Our storage key for DSPy's request dict, or None when the request cannot be cached."""
        try:
            return self.core.key_for(self._body(request), namespace=self.namespace, ignore=ignored or ())
        except UncacheableRequest as exc:
            self.core.stats.count("uncacheable")
            log.debug("dspy_tiered_cache: request not cacheable: %s", exc)
            return None

    def _body(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """DSPy's request with our adjustments: one sync/async id, the endpoint if asked, functions as text."""
        extra: dict[str, Any] | None = None
        fn = request.get("_fn_identifier")
        if fn is not None:
            sync_fn = SYNC_FN_IDS.get(fn) if isinstance(fn, str) else None
            if sync_fn is not None:
                extra = {"_fn_identifier": sync_fn}
        if self.core.settings.include_api_base:
            # DSPy ignores the endpoint (dspy#10006): two servers behind one model name would share answers.
            endpoint = request.get("api_base") or request.get("base_url")
            if endpoint:
                extra = extra or {}
                extra["_dtc_endpoint"] = str(endpoint).rstrip("/")
        for name, value in request.items():
            # request_cache keys on every argument, and the Embedder's first one is the embedding function.
            if (
                callable(value)
                and name not in TRANSPORT_KEYS  # dropped from the key anyway (LiteLLM's logging object, ...)
                and not isinstance(value, type)
                and not callable(getattr(value, "model_dump", None))
            ):
                extra = extra or {}
                extra[name] = _callable_text(value)
        return {**request, **extra} if extra else request

    # -- internals -----------------------------------------------------------------------------------------
    def _get(self, request: Mapping[str, Any], ignored: list[str] | None, scope: CallScope | None) -> Any:
        key = self.key(request, ignored)
        if key is None:
            return None
        if scope is not None:
            scope.key, scope.level = key, "miss"
        if scope is not None and scope.joined:
            payload = scope.joined.pop(key, None)
            if payload is not None:  # an async follower already received the leader's answer
                scope.level = "joined"
                return self._revive(decode_value(payload), request, key, scope)
        hit = self.core.get(key, options=self.options)
        if hit is not None:
            if scope is not None:
                scope.level = hit.level
            value = self._revive(hit.value, request, key, scope, created_at=hit.created_at)
            if value is not None:
                if scope is not None and scope.leading:
                    # We lead (an async pre-flight) but the answer was stored meanwhile: our followers wake and
                    # find it where we did, without anything being stored again.
                    scope.end_all(None)
                return value
        if scope is None or not self.sharing or key in scope.leading:
            return None
        return self._join_or_lead(key, request, scope)

    def _join_or_lead(self, key: str, request: Mapping[str, Any], scope: CallScope) -> Any:
        if scope.asynchronous:
            # Never block here: async lookups run in the event loop's default executor (or on the loop itself in
            # DSPy 3.0-3.3); a blocked follower could starve the leader's own store. Async calls claim on the
            # loop in CachedLM.acall instead; reaching this is only a lost race.
            return None
        claim = self.core.claim(key, self.options)
        if claim.answer is not None:
            scope.level = claim.level
            return self._revive(decode_value(claim.answer), request, key, scope)
        if not claim.ended:
            scope.leading[key] = claim
        return None

    def _plain(self, value: Any) -> Any:
        """The value as tagged plain data for the core, or None (counted, warned once per type) if unsupported."""
        try:
            return dump_value(value)
        except UnsupportedValue as exc:
            self.core.stats.count("store_skipped")
            _warn_type_once(value, exc)
            return None

    def _revive(
        self,
        plain: Any,
        request: Mapping[str, Any],
        key: str,
        scope: CallScope | None = None,
        *,
        created_at: float | None = None,
    ) -> Any:
        """A hit as DSPy's own cache returns it: a fresh object, ``usage`` emptied, ``cache_hit`` set."""
        usage, had_usage = _take_usage(plain)
        try:
            value = load_value(plain)
        except UnknownType as exc:
            # Written by another process, of a class this one has not stored yet: a miss (the store that
            # follows registers the class), not corruption.
            log.debug("dspy_tiered_cache: cached value not readable here yet (%s); treating it as a miss", exc)
            return None
        except ValueError as exc:
            # Not ours or from an incompatible version: a miss, and the entry is replaced by the next store.
            log.warning("dspy_tiered_cache: unreadable cached value (%s); treating it as a miss", exc)
            self.core.delete(key)
            return None
        if value is None:
            return None
        # Tokens per model; the core prices them from LiteLLM's cost map when stats are read, not per hit.
        model = _model_of(request, value)
        saved = self.core.stats.record_savings(model, usage, key=key)
        if scope is not None:
            scope.tokens_saved += saved
            scope.cache = {
                "level": scope.level,
                "age_s": round(max(0.0, time.time() - created_at), 3) if created_at is not None else 0.0,
                "saved_usage": dict(usage) if usage else None,
                "saved_usd": saved_usd(model, usage),
            }
            hidden = getattr(value, "_hidden_params", None)  # a LiteLLM response: as the LiteLLM door marks hits
            if isinstance(hidden, dict):
                hidden["cache"] = scope.cache
        if not isinstance(value, (dict, list)) and (had_usage or hasattr(value, "usage")):
            # As DSPy's Cache._prepare_cached_response: no LM call was made, so no usage to bill.
            value.usage = {}
            object.__setattr__(value, "cache_hit", True)
        return value

    def _warn(self, token: str, msg: str, exc: BaseException) -> None:
        if token in self._warned:
            log.debug(msg, type(exc).__name__, exc)
        else:
            self._warned.add(token)
            log.warning(msg, type(exc).__name__, exc)


def _callable_text(fn: Any) -> dict[str, Any]:
    """A function in a request as DSPy's cache keys it: by its source (plus, here, its qualified name)."""
    target = getattr(fn, "__func__", fn)
    name = f"{getattr(target, '__module__', None)}.{getattr(target, '__qualname__', type(fn).__qualname__)}"
    try:
        source: str | None = inspect.getsource(target)
    except (TypeError, OSError):
        source = None
    return {"__callable__": name, "source": source}


def _warn_type_once(value: Any, exc: BaseException) -> None:
    name = f"{type(value).__module__}.{type(value).__qualname__}"
    with _warned_types_lock:
        first = name not in _warned_types
        _warned_types.add(name)
    (log.warning if first else log.debug)(
        "dspy_tiered_cache: not caching a %s: %s "
        "(supported types: see docs/compatibility.md, 'What the DSPy door stores')",
        name,
        exc,
    )


#: LiteLLM types rebuilt without their usage on a hit (it is replaced by ``{}`` anyway, and building the
#: ``Usage`` object is a third of the rebuild).
_USAGE_DROPPED_ON_HIT = frozenset(
    {"litellm.ModelResponse", "litellm.TextCompletionResponse", "litellm.EmbeddingResponse"}
)


def _take_usage(plain: Any) -> tuple[Mapping[str, Any] | None, bool]:
    """The stored usage (read from the plain form, before any object is built) and whether there was one."""
    data = plain.get("data") if type(plain) is dict else None
    if type(data) is not dict:
        return None, False
    tag = data.get(TYPE_TAG) if plain.get("tagged") else None
    if tag is None:  # a DSPy native record (CallResult.dump()) or other plain data
        usage = data.get("usage")
        return (usage if isinstance(usage, dict) else None), False
    inner = data.get("data")
    if type(inner) is not dict or "usage" not in inner:
        return None, False
    usage = inner["usage"]
    if tag in _USAGE_DROPPED_ON_HIT:
        del inner["usage"]  # ``plain`` is this hit's own fresh copy
    return (usage if isinstance(usage, dict) else None), True


def _model_of(request: Mapping[str, Any], value: Any) -> str | None:
    model = request.get("model")
    if isinstance(model, str):
        return model
    inner = request.get("request")
    if isinstance(inner, Mapping) and isinstance(inner.get("model"), str):
        return str(inner["model"])
    return None


# ------------------------------------------------------------------------------------------------- pickling


def _adapter_spec(adapter: DSPyCacheAdapter) -> dict[str, Any]:
    return {
        **core_spec(adapter.core),
        "namespace": adapter.namespace,
        "ttl": "unset" if adapter.ttl is UNSET else adapter.ttl,
        "max_age": adapter.max_age,
        "single_flight": adapter.single_flight,
        "mode": adapter.mode,
    }


def _restore_adapter(spec: dict[str, Any]) -> DSPyCacheAdapter:
    """Rebuild an adapter from a pickle (:func:`._dspy_cores.core_from_spec`: never a secret from the pickle)."""
    ttl = spec.get("ttl", "unset")
    return DSPyCacheAdapter(
        core_from_spec(spec),
        namespace=spec.get("namespace"),
        ttl=UNSET if ttl == "unset" else ttl,
        max_age=spec.get("max_age"),
        single_flight=spec.get("single_flight"),
        mode=spec.get("mode"),
    )
