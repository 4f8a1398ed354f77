"""Putting our cache where DSPy looks for it: the ``dspy.cache`` global.

DSPy reads ``dspy.cache`` afresh on every cached call, and has no per-LM cache. So ``CachedLM`` installs one
:class:`DispatchingCache` as ``dspy.cache``: a call made inside a ``CachedLM`` call (marked by a context variable
that threads started by ``dspy.Parallel``, ``asyncify`` and ``asyncio.to_thread`` inherit) goes to that LM's
adapter, and every other call (other LMs, the Embedder) goes to the cache DSPy had before — untouched, unless the
user opts the whole process in with ``install_dspy_cache``.

DSPy builds its default disk cache (and creates ``~/.dspy_cache``) on the first read of ``dspy.cache``. The
dispatcher never reads it eagerly: it builds DSPy's default only when a non-``CachedLM`` call needs it.

``dspy.configure_cache()`` replaces whatever is installed. The next ``CachedLM`` call notices (one identity check),
warns once and puts a dispatcher back in front of the new cache, so the user's configuration still governs the
other LMs while ``CachedLM`` keeps its tiered cache.

``dspy.configure_cache(enable_memory_cache=False, enable_disk_cache=False)`` is DSPy's global off switch, and
``CachedLM`` follows it: while DSPy's cache has both tiers off (and ``install_dspy_cache`` was not called after
it), ``CachedLM`` calls go to that switched-off cache — no tiered read, no write — with one warning saying how
to switch ``CachedLM`` off alone instead.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from dspy_tiered_cache.integrations._dspy_adapter import CallScope, DSPyCacheAdapter
from dspy_tiered_cache.integrations._dspy_litellm_reset import settle_dspy_litellm_defaults

log = logging.getLogger("dspy_tiered_cache.dspy")

#: The scope of the ``CachedLM`` call in progress in this context (thread / task), if any.
ACTIVE: contextvars.ContextVar[CallScope | None] = contextvars.ContextVar("dspy_tiered_cache_scope", default=None)

_own_lock = threading.Lock()  # DSPy < 3.4 has no dspy._cache_lock
_state: dict[str, Any] = {"installed": None, "warned_off": False}

OFF_WARNING = (
    "DSPy's cache is switched off (dspy.configure_cache(enable_memory_cache=False, enable_disk_cache=False)): "
    "CachedLM follows it and bypasses the tiered cache. To cache with CachedLM while DSPy's own cache stays off, "
    "leave a DSPy tier on or call install_dspy_cache(); to switch only CachedLM off, set "
    "DSPY_TIERED_CACHE_ENABLED=false, use lm.copy(cache=False) or lm.unwrap()."
)


def _switched_off(cache: Any) -> bool:
    """Whether ``cache`` is DSPy's own cache with both of its tiers off (DSPy's global off switch)."""
    if cache is None:
        return False
    cache_class = _state.get("cache_class")
    if cache_class is None:  # on the hot path: import once
        from dspy.clients.cache import Cache

        cache_class = _state["cache_class"] = Cache
    return isinstance(cache, cache_class) and not cache.enable_memory_cache and not cache.enable_disk_cache


def _warn_off() -> None:
    if not _state["warned_off"]:
        _state["warned_off"] = True
        warnings.warn(OFF_WARNING, RuntimeWarning, stacklevel=4)


def _dspy() -> Any:
    import dspy

    return dspy


def _lock(dspy: Any) -> Any:
    return getattr(dspy, "_cache_lock", None) or _own_lock


class DispatchingCache:
    """``dspy.cache`` while any ``CachedLM`` exists: routes each call to its LM's cache or to DSPy's."""

    def __init__(self, base: Any | None, override: DSPyCacheAdapter | None = None) -> None:
        self._base = base  # the cache DSPy had (None: DSPy's default, not built yet)
        self._override = override  # install_dspy_cache(): our adapter for every non-CachedLM call
        self._build_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"DispatchingCache(base={self._base!r}, override={self._override!r})"

    @property
    def base(self) -> Any | None:
        return self._base

    @property
    def override(self) -> DSPyCacheAdapter | None:
        return self._override

    def set_override(self, adapter: DSPyCacheAdapter | None) -> None:
        self._override = adapter

    def fallback(self) -> Any:
        """The cache for calls outside any ``CachedLM`` (building DSPy's default only now, if needed)."""
        if self._override is not None:
            return self._override
        base = self._base
        if base is None:
            with self._build_lock:
                if self._base is None:
                    self._base = _build_dspy_default()
                base = self._base
        return base

    def switched_off(self) -> bool:
        """DSPy's global off switch is set, and ``CachedLM`` calls must follow it."""
        return self._override is None and _switched_off(self._base)

    # -- the dspy.cache protocol ---------------------------------------------------------------------------
    def get(self, request: Mapping[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> Any:
        scope = ACTIVE.get()
        if scope is not None:
            if not self.switched_off():
                return scope.adapter.get(request, ignored_args_for_cache_key, scope)
            _warn_off()
        return self.fallback().get(request, ignored_args_for_cache_key)

    def put(
        self,
        request: Mapping[str, Any],
        value: Any,
        ignored_args_for_cache_key: list[str] | None = None,
        enable_memory_cache: bool = True,
    ) -> None:
        scope = ACTIVE.get()
        if scope is not None and not self.switched_off():
            scope.adapter.put(request, value, ignored_args_for_cache_key, enable_memory_cache, scope)
            return
        self.fallback().put(request, value, ignored_args_for_cache_key, enable_memory_cache)

    def cache_key(self, request: Mapping[str, Any], ignored_args_for_cache_key: list[str] | None = None) -> Any:
        scope = ACTIVE.get()
        if scope is not None and not self.switched_off():
            return scope.adapter.cache_key(request, ignored_args_for_cache_key)
        return self.fallback().cache_key(request, ignored_args_for_cache_key)

    def __contains__(self, key: object) -> bool:
        return key in self.fallback()

    def reset_memory_cache(self) -> None:
        self.fallback().reset_memory_cache()

    def save_memory_cache(self, filepath: str) -> None:
        self.fallback().save_memory_cache(filepath)

    def load_memory_cache(self, filepath: str, allow_pickle: bool = False) -> Any:
        return self.fallback().load_memory_cache(filepath, allow_pickle=allow_pickle)

    def __getattr__(self, name: str) -> Any:
        # Attributes some code reads on dspy.cache (enable_memory_cache, memory_cache, disk_cache, ...).
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.fallback(), name)


def _build_dspy_default() -> Any:
    import dspy.clients as clients

    build = getattr(clients, "_get_dspy_cache", None)
    if callable(build):
        return build()
    return clients.DSPY_CACHE  # DSPy 3.0-3.3 built it at import


def ensure_installed() -> DispatchingCache:
    """The dispatcher in ``dspy.cache``, installing it (again) if needed. One dict lookup when in place."""
    dspy = _dspy()
    current = dspy.__dict__.get("cache")
    if type(current) is DispatchingCache:
        return current
    with _lock(dspy):
        current = dspy.__dict__.get("cache")
        if type(current) is DispatchingCache:
            return current
        settle_dspy_litellm_defaults()  # DSPy's one-time `litellm.cache = None` now, not after a TieredCache is set
        if _state["installed"] is not None:
            warnings.warn(
                "dspy.cache was replaced (dspy.configure_cache()?) after a CachedLM was created. CachedLM keeps "
                "using its tiered cache; other LMs now use the cache you configured.",
                RuntimeWarning,
                stacklevel=3,
            )
        base = current
        override = None
        if isinstance(current, DSPyCacheAdapter):  # install_dspy_cache() ran without a dispatcher
            base, override = _state.get("global_base"), current
        dispatcher = DispatchingCache(base, override)
        dspy.cache = dispatcher
        _state["installed"] = dispatcher
        return dispatcher


def install_global(adapter: DSPyCacheAdapter) -> DSPyCacheAdapter:
    """Every DSPy cache lookup in the process (all LMs, the Embedder) goes to ``adapter``."""
    dspy = _dspy()
    dispatcher = ensure_installed()
    with _lock(dspy):
        if _state.get("global") is None:
            _state["global_base"] = dispatcher.base
        _state["global"] = adapter
        dispatcher.set_override(adapter)
    return adapter


def uninstall() -> None:
    """Give ``dspy.cache`` back to DSPy: the cache it had before, or its lazily built default.

    ``CachedLM`` instances still in use re-install the dispatcher at their next call (without a warning).
    """
    dspy = _dspy()
    with _lock(dspy):
        current = dspy.__dict__.get("cache")
        base = current
        if isinstance(current, DispatchingCache):
            base = current.base
        elif isinstance(current, DSPyCacheAdapter):
            base = _state.get("global_base")
        if base is None:
            dspy.__dict__.pop("cache", None)
        else:
            dspy.cache = base
        _state["installed"] = None
        _state["global"] = None
        _state["global_base"] = None
