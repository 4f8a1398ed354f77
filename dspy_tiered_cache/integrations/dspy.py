"""DSPy door: ``dspy.configure(lm=CachedLM(dspy.LM("openai/gpt-4o-mini")))`` and nothing else changes.

``CachedLM`` is a real ``dspy.LM`` (it adopts the wrapped LM's state), so DSPy keeps choosing the engine
(native lm15 or LiteLLM), retrying, streaming, recording history and tracking usage exactly as before. It does
not override ``forward``/``aforward`` — DSPy would then treat it as an unmanaged legacy plugin and turn caching
off. It only wraps ``__call__``/``acall``: inside them, DSPy's own ``dspy.cache.get``/``put`` calls are routed
to this LM's tiered cache (see :mod:`._dspy_install`), every other LM keeps the cache DSPy had.

What it adds over DSPy's own cache:

* memory + Redis (or the embedded disk tier) shared by every process, values stored as JSON, never pickled;
* single-flight: N concurrent identical calls (``dspy.Parallel``/``Evaluate`` over duplicate examples, or
  ``asyncio.gather`` of ``acall``) make one upstream call; the others wait for it;
* one entry for a request whether it was made sync or async (DSPy keeps two: its key includes the function
  name, and the stored answer is the same);
* stats of tokens and dollars saved (``lm.core.stats.snapshot()``).

What it keeps: per-call ``cache=False`` and ``lm.copy(cache=False)`` skip the cache, ``rollout_id`` gives a
separate entry, ``lm.copy(...)`` (BestOfN, Refine, BootstrapFewShot rounds) returns a ``CachedLM`` on the same
cache, hits carry empty ``usage`` so usage trackers see no spend.

Saving: ``program.save("x.json")`` records a ``CachedLM`` as the plain ``dspy.LM`` it wraps, because DSPy's
default ``load()`` refuses every other LM class (only ``allow_unsafe_lm_state=True`` imports one) and offers no
other hook. The loaded program therefore holds plain LMs; :func:`wrap_program_lms` wraps them again (a warning
says so once, at the first save). Pickles (``save_program=True``, ``cloudpickle``) keep the ``CachedLM``.

Releases: DSPy 3.0.0-3.4.x. What differs between them (engines, how the cache is keyed, saved state) is probed
once in :mod:`._dspy_release`; docs/compatibility-dspy.md lists each difference and what this door does.

Not covered: calling ``lm.forward(...)`` directly (DSPy's own modules never do) bypasses the routing and uses
DSPy's cache. A DSPy callback that calls another LM from inside a ``CachedLM`` call shares this LM's cache.
"""

from __future__ import annotations

import logging
import types
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import dspy

from dspy_tiered_cache.core import CacheCore, default_core, resolve_core
from dspy_tiered_cache.integrations._dspy_adapter import DSPY_IGNORED, CallScope, DSPyCacheAdapter
from dspy_tiered_cache.integrations._dspy_install import ACTIVE, ensure_installed, install_global, uninstall
from dspy_tiered_cache.integrations._dspy_release import LM_CLASS_STATE_KEY as _LM_CLASS_STATE_KEY
from dspy_tiered_cache.modes import ReplayMiss
from dspy_tiered_cache.options import UNSET
from dspy_tiered_cache.telemetry import CallTrace

log = logging.getLogger("dspy_tiered_cache.dspy")

__all__ = [
    "CachedLM",
    "DSPyCacheAdapter",
    "default_core",
    "install_dspy_cache",
    "uninstall_dspy_cache",
    "wrap_program_lms",
]

#: Key of our options in ``dump_state()``: per-LM options only, never a URL, a secret or a setting.
STATE_KEY = "tiered_cache"
_PER_LM_OPTIONS = ("namespace", "ttl", "max_age", "single_flight", "mode")
#: The class DSPy's default ``load()`` accepts (``dspy.clients.lm.LM``).
_PLAIN_LM_CLASS = f"{dspy.LM.__module__}.{dspy.LM.__qualname__}"
_saved_warning = {"shown": False}

SAVE_WARNING = (
    "CachedLM is saved as a plain dspy.LM: DSPy's default load() accepts no other LM class. After "
    "program.load(...), wrap the LMs again with "
    "dspy_tiered_cache.integrations.dspy.wrap_program_lms(program, ...) (or predictor.set_lm(CachedLM(...)), "
    "or route every LM with install_dspy_cache()); pass the same options{options}."
)


class CachedLM(dspy.LM):  # type: ignore[misc]
    """A ``dspy.LM`` whose responses are cached in memory + Redis (or the disk tier).

    Args:
        lm: the ``dspy.LM`` to cache (its model, kwargs, engine and callbacks are adopted; the object itself is
            left as it was and keeps DSPy's cache).
        cache: ``None`` (settings from ``DSPY_TIERED_CACHE_*`` env vars, one core shared by the process), a
            ``CacheSettings``, a ``CacheCore``, or the LiteLLM door's ``TieredCache`` (to share its cache).
        namespace: namespace of this LM's entries (e.g. a prompt or model version; invalidated in O(1)).
        ttl: lifetime of this LM's entries in seconds (``None``: no expiry; default: the settings' ``ttl``).
        max_age: entries older than this many seconds are treated as misses.
        single_flight: override the settings' ``single_flight`` for this LM.
        mode: ``"read-write"``, ``"replay"`` (a miss raises ``ReplayMiss``, never goes upstream) or ``"refresh"``
            (never read, always write) for this LM; default: the settings' ``mode``.
        **overrides: ``CacheSettings`` fields; they build a core of this LM's own (only with ``cache=None`` or
            a ``CacheSettings``).
    """

    def __init__(
        self,
        lm: Any,
        cache: Any = None,
        *,
        namespace: str | None = None,
        ttl: Any = UNSET,
        max_age: float | None = None,
        single_flight: bool | None = None,
        mode: str | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(lm, dspy.LM):
            raise TypeError(
                f"CachedLM wraps a dspy.LM, not {type(lm).__name__}; DSPy disables its response cache for other "
                "BaseLM subclasses (legacy plugins), so there would be nothing to route"
            )
        for method in ("forward", "aforward"):
            if getattr(type(lm), method) is not getattr(dspy.LM, method) or method in vars(lm):
                raise TypeError(
                    f"{type(lm).__name__} overrides {method}(): DSPy treats it as an unmanaged legacy plugin and "
                    "never caches its calls; implement an engine instead (dspy.LM(engine=...)) and wrap that LM"
                )
        for method in ("__call__", "acall"):  # e.g. DSPy 3.0-3.3's DummyLM: CachedLM would drop what it does
            if type(lm) is not CachedLM and getattr(type(lm), method) is not getattr(dspy.LM, method):
                raise TypeError(
                    f"{type(lm).__name__} overrides {method}(), which CachedLM replaces (it adopts the LM's state, "
                    "not its methods); wrap a plain dspy.LM"
                )
        if type(lm) not in (dspy.LM, CachedLM):
            warnings.warn(
                f"CachedLM adopts the state of {type(lm).__name__} but not its methods (the result is a dspy.LM); "
                "wrap a plain dspy.LM if the subclass changes behaviour",
                RuntimeWarning,
                stacklevel=2,
            )
        if cache is None and not overrides and isinstance(lm, CachedLM):
            core = lm.core
        else:
            core = resolve_core(cache, overrides)
        _adopt_state(self, lm)
        self._dtc_adapter = DSPyCacheAdapter(
            core, namespace=namespace, ttl=ttl, max_age=max_age, single_flight=single_flight, mode=mode
        )
        if core.settings.semantic:  # opt-in (semantic=True): verified neighbours after an exact miss
            from dspy_tiered_cache.semantic.dspy_adapter import attach

            attach(self._dtc_adapter, core)
        ensure_installed()

    # -- what users reach for ------------------------------------------------------------------------------
    @property
    def core(self) -> CacheCore:
        """The tiered cache behind this LM (stats, invalidation, flush)."""
        core: CacheCore = self._dtc_adapter.core
        return core

    @property
    def cache_adapter(self) -> DSPyCacheAdapter:
        adapter: DSPyCacheAdapter = self._dtc_adapter
        return adapter

    def unwrap(self) -> Any:
        """A plain ``dspy.LM`` with this LM's state and DSPy's own cache."""
        plain = dspy.LM.copy(self)
        plain.__class__ = dspy.LM
        plain.__dict__.pop("_dtc_adapter", None)
        return plain

    def __repr__(self) -> str:
        return f"CachedLM(model={self.model!r}, cache={self._dtc_adapter!r})"

    # -- calls: the only methods wrapped -------------------------------------------------------------------
    def __call__(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        ensure_installed()
        scope = CallScope(self._dtc_adapter, False)
        try:
            with self._scoped(scope):
                return super().__call__(prompt, messages=messages, **kwargs)
        finally:
            scope.release()

    def update_history(self, entry: Any) -> None:
        """DSPy's history entry of a hit gets ``"cache"`` (level, age_s, saved_usage, saved_usd); its ``usage``
        stays empty as DSPy makes it for hits, so usage trackers still see no spend."""
        scope = ACTIVE.get()
        if scope is not None and scope.cache is not None and isinstance(entry, dict):
            entry["cache"] = scope.cache
        super().update_history(entry)

    def _trace(self) -> AbstractContextManager[CallTrace]:
        """One span per call, nested under DSPy's and the caller's spans, saying which tier served it."""
        adapter = self._dtc_adapter
        return adapter.core.trace_call("dspy", model=self.model, namespace=adapter.namespace)

    async def acall(self, prompt: Any = None, *, messages: Any = None, **kwargs: Any) -> Any:
        ensure_installed()
        scope = CallScope(self._dtc_adapter, True)
        try:
            with self._scoped(scope):
                if scope.adapter.sharing and not ensure_installed().switched_off():
                    try:
                        await _preflight(self, scope, prompt, messages, kwargs)
                    except Exception as exc:  # our bookkeeping must never fail the user's call
                        log.debug("dspy_tiered_cache: async single-flight skipped: %s", exc)
                return await super().acall(prompt, messages=messages, **kwargs)
        finally:
            await scope.arelease()

    @contextmanager
    def _scoped(self, scope: CallScope) -> Iterator[None]:
        """What sync and async calls share: the call's scope is the active one, one span records the tier that
        served it, and DSPy's wrapping of a replay miss is undone. The scope's release stays with the caller (it
        is awaited on the async path)."""
        token = ACTIVE.set(scope)
        try:
            with self._trace() as call:
                try:
                    yield
                except Exception as exc:
                    miss = _wrapped_replay_miss(exc, scope)
                    if miss is None:
                        raise  # as it was: an upstream error reaches the caller exactly as without the cache
                    raise miss from None
                finally:
                    call.record(scope.level, key=scope.key, tokens_saved=scope.tokens_saved)
        finally:
            ACTIVE.reset(token)

    # -- saving --------------------------------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """The state of the wrapped ``dspy.LM``, recorded as a ``dspy.LM`` so that DSPy's default ``load()``
        accepts it (see the module notes). Never a Redis URL, a secret, the cache settings or our options:
        extra keys would become request arguments of the loaded LM."""
        state: dict[str, Any] = super().dump_state()
        state.pop("api_key", None)  # DSPy 3.0.0-3.0.3 save it in plain text (3.0.4+ drop it)
        if _LM_CLASS_STATE_KEY in state:  # DSPy 3.4+ records the class; earlier releases load every LM as dspy.LM
            state[_LM_CLASS_STATE_KEY] = _PLAIN_LM_CLASS
        if not _saved_warning["shown"]:
            _saved_warning["shown"] = True
            options = self._options()
            shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
            warnings.warn(SAVE_WARNING.format(options=f" ({shown})" if shown else ""), UserWarning, stacklevel=2)
        return state

    def _options(self) -> dict[str, Any]:
        adapter = self._dtc_adapter
        options: dict[str, Any] = {}
        if adapter.namespace is not None:
            options["namespace"] = adapter.namespace
        if adapter.ttl is not UNSET:
            options["ttl"] = adapter.ttl
        if adapter.max_age is not None:
            options["max_age"] = adapter.max_age
        if adapter.single_flight is not None:
            options["single_flight"] = adapter.single_flight
        if adapter.mode is not None:
            options["mode"] = adapter.mode
        return options

    @classmethod
    def load_state(cls, state: dict[str, Any], *, allow_custom_lm_class: bool = False) -> CachedLM:
        """Files saved by releases that recorded ``CachedLM`` itself (loadable only with
        ``allow_unsafe_lm_state=True``): rebuilt with their options; the cache comes from the environment."""
        state = dict(state)
        raw = state.pop(STATE_KEY, None) or {}
        state.pop(_LM_CLASS_STATE_KEY, None)
        options = {k: raw[k] for k in _PER_LM_OPTIONS if isinstance(raw, Mapping) and k in raw}
        lm = dspy.LM.load_state(state, allow_custom_lm_class=allow_custom_lm_class)
        return cls(lm, **options)


def _wrapped_replay_miss(exc: Exception, scope: CallScope) -> ReplayMiss | None:
    """The :class:`ReplayMiss` our lookup raised if DSPy wrapped it in another exception, else None.

    DSPy 3.3 converts every exception raised inside its LiteLLM call -- our cache lookup runs there -- into an
    ``LMUnexpectedError``; a replay-mode miss must still reach the caller as ``ReplayMiss`` (as on 3.0-3.2, 3.4).
    """
    if scope.level != "replay-miss" or isinstance(exc, ReplayMiss):
        return None
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, ReplayMiss):
        cause = cause.__cause__
    return cause if isinstance(cause, ReplayMiss) else None


def wrap_program_lms(
    program: Any,
    cache: Any = None,
    *,
    namespace: str | None = None,
    ttl: Any = UNSET,
    max_age: float | None = None,
    single_flight: bool | None = None,
    mode: str | None = None,
    **overrides: Any,
) -> list[str]:
    """Wrap every predictor's own plain ``dspy.LM`` in a ``CachedLM`` (after ``program.load(...)``).

    Predictors without an LM of their own (they use ``dspy.configure(lm=...)``) and LMs already cached are
    left alone. All wrapped LMs share one cache (``cache`` and ``overrides`` as for :class:`CachedLM`).
    Returns the names of the predictors wrapped.
    """
    core = resolve_core(cache, overrides)
    wrapped: list[str] = []
    for name, predictor in program.named_predictors():
        lm = getattr(predictor, "lm", None)
        if type(lm) is dspy.LM:
            predictor.lm = CachedLM(
                lm, core, namespace=namespace, ttl=ttl, max_age=max_age, single_flight=single_flight, mode=mode
            )
            wrapped.append(name)
    return wrapped


def _adopt_state(target: Any, lm: Any) -> None:
    """Take over ``lm``'s state the way ``LM.__copy__``/``BaseLM.copy`` do: runtime clients (the engine pools)
    are shared, DSPy-owned mutable state (history, callbacks, kwargs) is the copy's own."""
    target.__dict__.update(lm.__dict__)
    for klass in type(lm).__mro__:
        for name, descriptor in vars(klass).items():
            if isinstance(descriptor, types.MemberDescriptorType) and hasattr(lm, name):
                setattr(target, name, getattr(lm, name))
    target.__dict__.pop("_dtc_adapter", None)
    target.history = []
    target.callbacks = list(getattr(lm, "callbacks", None) or [])
    target.kwargs = dict(getattr(lm, "kwargs", None) or {})


async def _preflight(lm: CachedLM, scope: CallScope, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> None:
    """Async single-flight, decided on the event loop before DSPy's lookup.

    DSPy runs async lookups in the loop's default executor; a follower blocking there could starve the
    leader's own store of a worker. So async callers take the lead, or wait for the leader, here — as a
    future on the loop — and DSPy's lookup then finds the leader's answer (handed over in ``scope.joined``).
    """
    request = _dspy_request(lm, prompt, messages, kwargs)
    if request is None:
        return
    adapter = scope.adapter
    key = adapter.key(request, list(DSPY_IGNORED))
    if key is None:
        return
    core = adapter.core
    if core.holds(key, max_age=adapter.max_age):  # already in this process: DSPy's lookup will hit
        return
    claim = await core.aclaim(key, adapter.options)
    if claim.answer is not None:
        scope.joined[key] = claim.answer
    elif not claim.ended:
        scope.leading[key] = claim


def _dspy_request(lm: Any, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> Mapping[str, Any] | None:
    """The request dict DSPy will look up for this async call, or None when it will not use the cache.

    DSPy 3.4: its own ``prepare``/``PreparedCall.key``, so the key cannot drift from DSPy's. Explicit
    ``lm15.Request`` calls are skipped (preparing them may read local media files, which DSPy does off the
    loop). DSPy 3.0-3.3: the dict ``LM.aforward`` builds for ``request_cache``. A key that differed from
    DSPy's would cost only the deduplication: the call's store finishes every flight the call leads.
    """
    request_type = getattr(getattr(dspy, "lm15", None), "Request", None)
    if "request" in kwargs or (isinstance(request_type, type) and isinstance(prompt, request_type)):
        return None
    try:
        from dspy.clients.execution import prepare
    except ImportError:
        return _legacy_request(lm, prompt, messages, kwargs)
    try:
        call = prepare(lm, prompt, messages, kwargs, asynchronous=True)
        if not call.cache:
            return None
        request: Mapping[str, Any] = call.key(lm, True)
        return request
    except Exception:  # DSPy reports invalid arguments itself, in the real call
        return None


_LEGACY_ASYNC_FNS = {
    "chat": "dspy.clients.lm.alitellm_completion",
    "text": "dspy.clients.lm.alitellm_text_completion",
    "responses": "dspy.clients.lm.alitellm_responses_completion",
}


def _legacy_request(lm: Any, prompt: Any, messages: Any, kwargs: dict[str, Any]) -> Mapping[str, Any] | None:
    """DSPy 3.0-3.3 ``LM.aforward``: ``request_cache`` keys on ``dict(model, messages, **kwargs)``."""
    kwargs = dict(kwargs)
    if not kwargs.pop("cache", getattr(lm, "cache", True)):
        return None
    fn = _LEGACY_ASYNC_FNS.get(getattr(lm, "model_type", "chat"))
    if fn is None:
        return None
    messages = messages or [{"role": "user", "content": prompt}]
    if getattr(lm, "use_developer_role", False) and lm.model_type == "responses":
        messages = [{**m, "role": "developer"} if m.get("role") == "system" else m for m in messages]
    merged = {**lm.kwargs, **kwargs}
    if merged.get("rollout_id") is None:
        merged.pop("rollout_id", None)
    return {"model": lm.model, "messages": messages, **merged, "_fn_identifier": fn}


def install_dspy_cache(
    cache: Any = None,
    *,
    namespace: str | None = None,
    ttl: Any = UNSET,
    max_age: float | None = None,
    **overrides: Any,
) -> DSPyCacheAdapter:
    """Route every DSPy cache lookup in this process — all LMs, the Embedder — to the tiered cache.

    ``CachedLM`` instances keep their own cache. Single-flight applies only to ``CachedLM`` calls (only they
    can tell when a failed call must release its waiters). Undo with :func:`uninstall_dspy_cache`.
    """
    core = resolve_core(cache, overrides)
    return install_global(DSPyCacheAdapter(core, namespace=namespace, ttl=ttl, max_age=max_age))


def uninstall_dspy_cache() -> None:
    """Give ``dspy.cache`` back to DSPy (the cache it had, or its lazily built default)."""
    uninstall()
