"""``@cached``: the tiered cache for any function that calls an LLM (or does anything slow and deterministic).

Not every LLM call goes through LiteLLM or DSPy: an OpenAI SDK call, a chain of prompts, a tool that
summarizes with a local model. ``@cached`` gives such a function the same cache as the two doors (memory, then
Redis or the disk tier; namespaces; single-flight; stats; one span per call)::

    @cached(ttl=24 * 3600, namespace="summaries-v2")
    def summarize(text: str, model: str = "gpt-4o-mini", api_key: str | None = None) -> dict:
        ...

    @cached
    async def classify(text: str) -> str:
        ...

The key is the function's qualified name plus its bound arguments (``inspect.signature(...).bind`` with
defaults applied, so ``f(1)`` and ``f(x=1)`` share an entry), canonicalized by the core exactly as the doors'
requests are: arguments named like a credential or a transport option (``api_key``, ``api_base``, ``timeout``,
``metadata``, ``headers``, ``client``, ... see :data:`dspy_tiered_cache.keys.TRANSPORT_KEYS`) never enter it.
A ``**kwargs`` parameter is spread into the key the same way, so ``f(api_key=...)`` is excluded there too.

Return values cross process boundaries as JSON, never pickle: plain JSON data, tuples, bytes, LiteLLM responses,
and pydantic models named in the function's return annotation (registered from code, never from stored data).
Anything else is returned but not stored (logged once, counted as ``store_skipped``).

Arguments with no canonical form (an object without a JSON form, e.g. ``self`` of most classes) make the call
uncached (logged once per function, counted as ``uncacheable``); leave them out of the key with ``ignore=``
when the result does not depend on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Protocol, TypeVar, overload

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations._values import UnsupportedValue, dump_value, load_value, register_model
from dspy_tiered_cache.keys import TRANSPORT_KEYS, UncacheableRequest
from dspy_tiered_cache.modes import ReplayMiss, check_mode
from dspy_tiered_cache.options import UNSET, CallOptions
from dspy_tiered_cache.settings import NAME_PATTERN

if TYPE_CHECKING:
    from dspy_tiered_cache.report import StatsReport
    from dspy_tiered_cache.telemetry import CallTrace

__all__ = ["CachedFunction", "FunctionCache", "cached"]

log = logging.getLogger("dspy_tiered_cache")

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

#: Levels at which the function was not called: the hit saved whatever the call would have cost.
_SERVED: Final = frozenset({"l1", "l2", "disk", "joined"})
_FN_FIELD: Final = "__dtc_fn__"
_VERSION_FIELD: Final = "__dtc_version__"


class _Unreadable(Exception):
    """A stored value that does not decode (foreign or from an incompatible version): treat it as a miss."""


def _load(plain: Any) -> Any:
    try:
        return load_value(plain)
    except ValueError as exc:
        raise _Unreadable(str(exc)) from None


def _dump(value: Any) -> Any:
    try:
        return dump_value(value)
    except UnsupportedValue as exc:
        raise TypeError(str(exc)) from None  # the core logs it once and returns the value uncached


def _register_return_models(fn: Callable[..., Any]) -> None:
    """Allow the pydantic models named in the return annotation to be rebuilt from the cache.

    The classes come from the code being decorated, never from stored data, so this keeps the whitelist rule.
    """
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:  # unresolvable forward references: plain JSON values still work
        return
    todo: list[Any] = [hint]
    while todo:
        t = todo.pop()
        if isinstance(t, type):
            pydantic = callable(getattr(t, "model_validate", None)) and callable(getattr(t, "model_dump", None))
            if pydantic and not t.__module__.startswith("litellm."):  # LiteLLM's types are whitelisted already
                register_model(t)
        else:
            todo.extend(typing.get_args(t))


class FunctionCache:
    """The cache of one decorated function: its key builder, its options and the core (resolved on first use)."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        ttl: float | Any | None,
        namespace: str | None,
        core: Any,
        ignore: Iterable[str],
        include: Iterable[str],
        version: str | None,
        max_age: float | None,
        mode: str | None = None,
    ) -> None:
        if namespace is not None and not NAME_PATTERN.match(namespace):
            raise ValueError(f"namespace {namespace!r} is not valid: use 1-64 characters from letters, digits, '_.-'")
        self.fn = fn
        self.name = f"{fn.__module__}.{fn.__qualname__}"
        self.signature = inspect.signature(fn)
        self.namespace = namespace
        self.version = version
        self.ignore = frozenset(ignore)
        #: Arguments kept in the key although they are named like a transport option (renamed so the core keeps
        #: them); a credential should never be listed here.
        self.include = frozenset(include) & TRANSPORT_KEYS
        unknown = (self.ignore | frozenset(include)) - set(self.signature.parameters)
        has_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in self.signature.parameters.values())
        if unknown and not has_var_kw:
            raise ValueError(f"ignore=/include= name no parameter of {self.name}: {sorted(unknown)}")
        self.options = CallOptions(ttl=ttl, max_age=max_age, namespace=namespace, mode=check_mode(mode))
        #: After an unreadable entry: compute and overwrite without reading again (a write of the bad value
        #: still queued for a remote tier could otherwise be read back).
        self._refresh = dataclasses.replace(self.options, bypass_read=True)
        self._core_source = core
        self._core: CacheCore | None = None
        self._warned = False

    def __repr__(self) -> str:
        return f"FunctionCache({self.name}, namespace={self.namespace!r})"

    @property
    def core(self) -> CacheCore:
        """The core: the given one, else the process-wide default (``DSPY_TIERED_CACHE_*`` env), on first use."""
        core = self._core
        if core is None:
            from dspy_tiered_cache.core import resolve_core

            core = self._core = resolve_core(self._core_source, {})
        return core

    # -- keys ------------------------------------------------------------------------------------------
    def request(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """What the key is built from: the function's name, its version and its bound arguments (flattened)."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        request: dict[str, Any] = {_FN_FIELD: self.name}
        if self.version is not None:
            request[_VERSION_FIELD] = self.version
        for name, value in bound.arguments.items():
            if self.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                for k, v in value.items():
                    request[f"arg:{k}" if k in self.include else k] = v
            else:
                request[f"arg:{name}" if name in self.include else name] = value
        return request

    def key(self, *args: Any, **kwargs: Any) -> str:
        """The storage key of a call (raises ``UncacheableRequest`` if an argument has no canonical form)."""
        return self.core.key_for(self.request(args, kwargs), namespace=self.namespace, ignore=self.ignore)

    def _key_or_none(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        try:
            request = self.request(args, kwargs)
        except TypeError:
            return None  # wrong arguments: the function itself raises the usual TypeError
        try:
            return self.core.key_for(request, namespace=self.namespace, ignore=self.ignore)
        except UncacheableRequest as exc:
            self.core.stats.count("uncacheable")
            if not self._warned:
                self._warned = True
                log.warning(
                    "dspy_tiered_cache: calls of %s are not cached: %s (leave such arguments out of the key with "
                    "@cached(ignore=[...]) if the result does not depend on them)",
                    self.name,
                    exc,
                )
            return None

    # -- management ------------------------------------------------------------------------------------
    def delete(self, *args: Any, **kwargs: Any) -> None:
        """Forget the cached result of one call, in every tier."""
        self.core.delete(self.key(*args, **kwargs))

    def clear(self) -> int:
        """Invalidate this function's namespace in O(1) (every function sharing the namespace is cleared too:
        give a function its own ``namespace=`` to clear it alone). Returns the new generation."""
        return self.core.invalidate_namespace(self.namespace)

    def report(self) -> StatsReport:
        """A :class:`~dspy_tiered_cache.report.StatsReport` of the core's counters (shared with other users)."""
        from dspy_tiered_cache.report import report

        return report(self.core)

    # -- calls -----------------------------------------------------------------------------------------
    def _credit(self, core: CacheCore, value: Any) -> int:
        """Tokens the hit saved, when the value carries a usage record (LiteLLM responses, OpenAI-like dicts)."""
        usage = value.get("usage") if isinstance(value, Mapping) else getattr(value, "usage", None)
        if usage is not None and not isinstance(usage, Mapping):
            dump = getattr(usage, "model_dump", None)
            usage = dump() if callable(dump) else None
        if not isinstance(usage, Mapping) or not usage:
            return 0
        model = value.get("model") if isinstance(value, Mapping) else getattr(value, "model", None)
        return core.stats.record_savings(model if isinstance(model, str) else None, usage)

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self._key_or_none(args, kwargs)
        if key is None:
            return self.fn(*args, **kwargs)
        core = self.core
        with self._traced(core, key) as trace:
            try:
                value, level = core.get_or_compute(key, lambda: self.fn(*args, **kwargs), **self._codec(self.options))
            except _Unreadable as exc:
                self._drop_unreadable(core, key, exc)
                value, level = core.get_or_compute(key, lambda: self.fn(*args, **kwargs), **self._codec(self._refresh))
                level = "miss"
            self._served(trace, core, key, value, level)
        return value

    async def acall(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        key = self._key_or_none(args, kwargs)
        if key is None:
            return await self.fn(*args, **kwargs)
        core = self.core
        with self._traced(core, key) as trace:
            try:
                value, level = await core.aget_or_compute(
                    key, lambda: self.fn(*args, **kwargs), **self._codec(self.options)
                )
            except _Unreadable as exc:
                self._drop_unreadable(core, key, exc)
                value, level = await core.aget_or_compute(
                    key, lambda: self.fn(*args, **kwargs), **self._codec(self._refresh)
                )
                level = "miss"
            self._served(trace, core, key, value, level)
        return value

    @contextlib.contextmanager
    def _traced(self, core: CacheCore, key: str) -> Iterator[CallTrace]:
        """The call's span; a replay miss is recorded on it before it reaches the caller (sync and async alike)."""
        with core.trace_call("decorator", namespace=self.namespace, operation="call") as trace:
            try:
                yield trace
            except ReplayMiss:
                trace.record("replay-miss", key=key)
                raise

    @staticmethod
    def _codec(options: CallOptions) -> dict[str, Any]:
        return {"options": options, "encode": _dump, "decode": _load}

    def _served(self, trace: CallTrace, core: CacheCore, key: str, value: Any, level: str) -> None:
        saved = self._credit(core, value) if level in _SERVED else 0
        trace.record(level, key=key, tokens_saved=saved)

    def _drop_unreadable(self, core: CacheCore, key: str, exc: Exception) -> None:
        log.warning("dspy_tiered_cache: unreadable cached result of %s (%s); calling it again", self.name, exc)
        core.delete(key)


class CachedFunction(Protocol[P, R_co]):
    """What ``@cached`` returns: the function, same signature, plus its cache's handles."""

    cache: FunctionCache

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def cache_clear(self) -> int: ...

    def cache_info(self) -> StatsReport: ...

    @property
    def __wrapped__(self) -> Callable[P, R_co]: ...

    # A decorated method binds like a function; its bound signature is not spelled out (ParamSpec cannot drop
    # ``self`` generically), so type checkers see ``(...) -> R`` there.
    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Callable[..., R_co]: ...


@overload
def cached(func: Callable[P, R], /) -> CachedFunction[P, R]: ...


@overload
def cached(
    func: None = None,
    /,
    *,
    ttl: float | Any | None = ...,
    namespace: str | None = ...,
    core: Any = ...,
    ignore: Iterable[str] = ...,
    include: Iterable[str] = ...,
    version: str | None = ...,
    max_age: float | None = ...,
    mode: str | None = ...,
) -> Callable[[Callable[P, R]], CachedFunction[P, R]]: ...


def cached(
    func: Callable[..., Any] | None = None,
    /,
    *,
    ttl: float | Any | None = UNSET,
    namespace: str | None = None,
    core: Any = None,
    ignore: Iterable[str] = (),
    include: Iterable[str] = (),
    version: str | None = None,
    max_age: float | None = None,
    mode: str | None = None,
) -> Any:
    """Cache a sync or async function's results in the tiered cache (use as ``@cached`` or ``@cached(...)``).

    Args:
        ttl: lifetime of the results in seconds (``None``: no expiry; default: the settings' ``ttl``).
        namespace: namespace of the results; ``f.cache_clear()`` invalidates it in O(1).
        core: a ``CacheCore``, a ``CacheSettings``, or anything with ``.core`` (``TieredCache``, ``CachedLM``) to
            share its cache; default: the process-wide core configured by ``DSPY_TIERED_CACHE_*`` env vars.
        ignore: argument names left out of the key (``"self"`` for a method whose result does not depend on
            the instance, a logger, a progress callback...).
        include: argument names kept in the key although they are named like a transport option (say an
            argument ``metadata`` that does change the result). Never list a credential here.
        version: part of the key: bump it when the function's prompt or logic changes.
        max_age: results older than this many seconds are recomputed.
        mode: ``"replay"`` (a result that was never stored raises ``ReplayMiss`` instead of calling the function),
            ``"refresh"`` (always call and store) or ``"read-write"``; default: the settings' ``mode``.

    The wrapper keeps the function's signature and adds ``f.cache`` (:class:`FunctionCache`: ``key(...)``,
    ``delete(...)``, ``clear()``, ``report()``, ``core``), ``f.cache_clear()`` and ``f.cache_info()``.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"@cached cannot cache generator {fn.__qualname__}: return a list instead")
        state = FunctionCache(
            fn,
            ttl=ttl,
            namespace=namespace,
            core=core,
            ignore=ignore,
            include=include,
            version=version,
            max_age=max_age,
            mode=mode,
        )
        _register_return_models(fn)
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(fn):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await state.acall(args, kwargs)

            wrapper = async_wrapper
        else:

            def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
                return state.call(args, kwargs)

            wrapper = sync_wrapper
        wrapper = functools.wraps(fn)(wrapper)
        wrapper.cache = state  # type: ignore[attr-defined]
        wrapper.cache_clear = state.clear  # type: ignore[attr-defined]
        wrapper.cache_info = state.report  # type: ignore[attr-defined]
        return wrapper

    if func is not None:
        return decorate(func)
    return decorate
