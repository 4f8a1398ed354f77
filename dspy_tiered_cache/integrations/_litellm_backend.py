"""LiteLLM's ``BaseCache`` over the tiered core: the store behind :class:`~.litellm.TieredCache`.

Also the stored form of LiteLLM cache values (plain JSON, never pickle) and the hit metadata LiteLLM turns into
``response._hidden_params["cache"]``. Kept apart from ``TieredCache`` (which handles keys, controls, spans and
single-flight) because this is the part that touches the core's storage.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson
from litellm.caching.base_cache import BaseCache

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.flights import Claim
from dspy_tiered_cache.integrations._values import UnsupportedValue, dump_value, load_value
from dspy_tiered_cache.modes import ReplayMiss
from dspy_tiered_cache.options import CallOptions, Hit

log = logging.getLogger("dspy_tiered_cache")

#: Returned by :meth:`TieredCache.get_cache_key` for a request with no canonical form: the backend never
#: reads or writes it, so the call simply goes upstream uncached.
UNCACHEABLE_KEY: Final = "dtc:uncacheable"

#: Marks the stored form of a LiteLLM cache value: {"__dtc_litellm__": 1, "r": <response dict>} for the usual
#: ``{"timestamp", "response": <JSON>}`` value, "s" for a response string that is not a JSON object, and
#: "raw" for any other value shape (stored through the shared tagged-value codec).
_FORMAT_KEY: Final = "__dtc_litellm__"
_FORMAT: Final = 1

_PENDING_WRITE_JOIN_S: Final = 0.25
_AWAITING_MAX: Final = 4096

#: What the backend saw during one lookup, for the call's span: (level, key), and tokens the hit saved.
_LOOKUP: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("dtc_litellm_lookup", default=None)

#: A replay-mode miss seen by the backend: LiteLLM's ``Cache.get_cache`` swallows every exception of its
#: backend, so TieredCache raises it again once LiteLLM hands the (empty) lookup back.
_REPLAY_MISS: contextvars.ContextVar[ReplayMiss | None] = contextvars.ContextVar("dtc_replay_miss", default=None)


def _find_pending_write_registry() -> set[asyncio.Task[None]] | None:
    """LiteLLM's registry of in-flight cache-write tasks (private; absent in other versions -> None)."""
    from litellm.caching import caching_handler

    pending = getattr(caching_handler, "_PENDING_CACHE_WRITES", None)
    return pending if isinstance(pending, set) else None


_PENDING_WRITES: Final = _find_pending_write_registry()


def _options_for_write(kwargs: Mapping[str, Any]) -> CallOptions | None:
    """LiteLLM passes ``ttl`` (seconds; int, float or a numeric string) from Cache(ttl=) or cache={"ttl": N}."""
    raw = kwargs.get("ttl")
    if raw is None:
        return None  # the core's configured default lifetime
    try:
        ttl = float(raw)
    except (TypeError, ValueError):
        return None
    if ttl != ttl:  # NaN
        return None
    if ttl == float("inf"):
        return CallOptions(ttl=None)
    if ttl <= 0:
        return CallOptions(bypass_write=True)  # a zero lifetime: the entry would be dead on arrival
    return CallOptions(ttl=ttl)


def to_stored(value: Any) -> Any:
    """LiteLLM's cache value as plain JSON data for the core.

    LiteLLM hands ``{"timestamp": t, "response": <model_dump_json() string>}`` for completions, text completions
    and assembled streams, and ``{"timestamp": t, "response": <CachedEmbedding dict>}`` per embedding item. The
    JSON string is parsed once here, so it is stored as JSON (no string-in-JSON escaping) and a hit returns a dict
    LiteLLM needs not parse again. The timestamp is not stored: the core's ``created_at`` is the same instant.
    """
    if type(value) is dict and len(value) == 2 and "timestamp" in value and "response" in value:
        response = value["response"]
        if type(response) is dict:
            return {_FORMAT_KEY: _FORMAT, "r": response}
        if isinstance(response, (str, bytes)):
            try:
                parsed = orjson.loads(response)
            except orjson.JSONDecodeError:
                parsed = None
            if type(parsed) is dict:
                return {_FORMAT_KEY: _FORMAT, "r": parsed}
            if isinstance(response, str):
                return {_FORMAT_KEY: _FORMAT, "s": response}
    try:
        return {_FORMAT_KEY: _FORMAT, "raw": dump_value(value)}
    except UnsupportedValue as exc:
        raise ValueError(str(exc)) from None


def from_stored(hit: Hit) -> Any:
    """The value LiteLLM's ``get_cache_logic`` expects back, or None for anything we did not write."""
    stored = hit.value
    if type(stored) is not dict or stored.get(_FORMAT_KEY) != _FORMAT:
        return None  # a foreign or future shape under our key: a miss, never a guess
    response = stored.get("r")
    if type(response) is dict:
        return {"timestamp": hit.created_at, "response": response}
    text = stored.get("s")
    if type(text) is str:
        return {"timestamp": hit.created_at, "response": text}
    if "raw" in stored:
        try:
            return load_value(stored["raw"])
        except ValueError:
            return None
    return None


class TieredBackend(BaseCache):
    """LiteLLM's ``BaseCache`` contract over the tiered core.

    LiteLLM calls ``get_cache`` / ``set_cache`` (sync calls), ``async_get_cache`` / ``async_set_cache``
    (async calls; the write runs in a task LiteLLM does not await) and ``async_set_cache_pipeline`` (one
    entry per embedding input). It passes the whole request as ``**kwargs`` (API key included): we read only
    ``ttl`` from it and never log it.
    """

    def __init__(self, core: CacheCore) -> None:
        super().__init__(default_ttl=0)
        self.core = core
        #: This door's own mode (``TieredCache(core=..., mode="replay")``); None: the core's.
        self.options: CallOptions | None = None
        #: key -> the claim this process's single-flight leader holds for that key (see TieredCache._lead): the
        #: store of the leader's answer fulfils it.
        self.claims: dict[str, Claim] = {}
        #: keys whose async lookup missed and that have not been written since (bounded, oldest dropped).
        self._awaiting: OrderedDict[str, None] = OrderedDict()
        self._awaiting_lock = threading.Lock()  # event loops in several threads may share one backend

    def forget_awaiting(self, key: str) -> None:
        """A call whose lookup missed failed: no write of it is coming, so later lookups must not wait for one."""
        with self._awaiting_lock:
            self._awaiting.pop(key, None)

    # -- writes --------------------------------------------------------------------------------------
    def _prepare(self, key: str, value: Any) -> tuple[Any, Claim | None] | None:
        """What sync and async stores share: the stored form of ``value`` and the claim its write fulfils."""
        if key == UNCACHEABLE_KEY:
            return None
        if key in self._awaiting:
            with self._awaiting_lock:
                self._awaiting.pop(key, None)
        try:
            stored = to_stored(value)
        except ValueError as exc:
            self.core.stats.count("store_skipped")
            log.debug("dspy_tiered_cache: not caching a LiteLLM value: %s", exc)
            return None
        return stored, self.claims.pop(key, None) if self.claims else None

    def _store(self, key: str, value: Any, kwargs: Mapping[str, Any]) -> bool:
        prepared = self._prepare(key, value)
        if prepared is None:
            return False
        stored, claim = prepared
        if claim is None:
            return self.core.set(key, stored, options=_options_for_write(kwargs))
        return self.core.fulfil(claim, stored, options=_options_for_write(kwargs)) is not None

    async def _astore(self, key: str, value: Any, kwargs: Mapping[str, Any]) -> bool:
        """The store of ``acompletion``: a leader's landed write and lease release are awaited, not blocking."""
        prepared = self._prepare(key, value)
        if prepared is None:
            return False
        stored, claim = prepared
        if claim is None:
            return await self.core.aset(key, stored, options=_options_for_write(kwargs))
        return await self.core.afulfil(claim, stored, options=_options_for_write(kwargs)) is not None

    def set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        self._store(key, value, kwargs)

    async def async_set_cache(self, key: str, value: Any, **kwargs: Any) -> None:
        await self._astore(key, value, kwargs)

    async def async_set_cache_pipeline(self, cache_list: Iterable[tuple[str, Any]], **kwargs: Any) -> None:
        for key, value in cache_list:
            await self._astore(key, value, kwargs)

    async def batch_cache_write(self, key: str, value: Any, **kwargs: Any) -> None:
        await self._astore(key, value, kwargs)

    # -- reads ---------------------------------------------------------------------------------------
    def get_cache(self, key: str, **kwargs: Any) -> Any:
        if key == UNCACHEABLE_KEY:
            return None
        try:
            hit = self.core.get(key, options=self.options)
        except ReplayMiss as exc:
            _REPLAY_MISS.set(exc)
            raise
        _LOOKUP.set((hit.level if hit is not None else "miss", key))
        return from_stored(hit) if hit is not None else None

    async def async_get_cache(self, key: str, **kwargs: Any) -> Any:
        if key == UNCACHEABLE_KEY:
            return None
        registry = _PENDING_WRITES
        if registry or key in self._awaiting:
            # LiteLLM stores from tasks it creates just before returning a response and does not await: a write
            # (a first answer, a refresh) may still be queued. Join it, so a read right after a write hits.
            await self._join_pending_writes(registry, expect_write=key in self._awaiting)
        try:
            hit = await self.core.aget(key, options=self.options)
        except ReplayMiss as exc:
            _REPLAY_MISS.set(exc)
            raise
        _LOOKUP.set((hit.level if hit is not None else "miss", key))
        if hit is None:
            with self._awaiting_lock:
                self._awaiting[key] = None
                self._awaiting.move_to_end(key)
                if len(self._awaiting) > _AWAITING_MAX:
                    self._awaiting.popitem(last=False)
            return None
        return from_stored(hit)

    async def async_batch_get_cache(self, key_list: Iterable[str], **kwargs: Any) -> list[Any]:
        return [await self.async_get_cache(key) for key in key_list]

    def batch_get_cache(self, key_list: Iterable[str], **kwargs: Any) -> list[Any]:
        return [self.get_cache(key) for key in key_list]

    async def _join_pending_writes(self, registry: set[asyncio.Task[None]] | None, *, expect_write: bool) -> None:
        """Let LiteLLM's just-scheduled cache writes run before we read.

        After ``acompletion`` returns, its write is an ``asyncio`` task that has not run yet; a stream adds one
        more hop (an untracked task that schedules the tracked write), so when an earlier lookup of this very
        key missed (``expect_write``) we also yield a couple of times. Waiting is bounded, and our writes never
        wait on the network, so in practice this is one or two loop iterations, and nothing at all when no
        write is pending.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _PENDING_WRITE_JOIN_S
        for _ in range(3):
            pending = [t for t in registry or () if not t.done() and t.get_loop() is loop]
            remaining = deadline - loop.time()
            if pending and remaining > 0:
                await asyncio.wait(pending, timeout=remaining)
            elif expect_write:
                await asyncio.sleep(0)
            else:
                return

    # -- housekeeping LiteLLM may call ---------------------------------------------------------------
    def delete_cache(self, key: str) -> None:
        self.core.delete(key)

    async def async_delete_cache(self, key: str) -> None:
        self.core.delete(key)

    async def delete_cache_keys(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.core.delete(key)

    def flush_cache(self) -> None:
        self.core.clear()

    async def disconnect(self) -> None:
        """LiteLLM calls this at shutdown: land pending remote writes; the core stays usable."""
        await asyncio.get_running_loop().run_in_executor(None, self.core.flush)

    async def ping(self) -> bool:
        health = await asyncio.get_running_loop().run_in_executor(None, self.core.health)
        return all(h.ok for h in health)

    async def test_connection(self) -> dict[str, Any]:
        health = await asyncio.get_running_loop().run_in_executor(None, self.core.health)
        failed = [h for h in health if not h.ok]
        if failed:
            detail = "; ".join(f"{h.name}: {h.detail}" for h in failed)
            return {"status": "failed", "message": "cache tier unreachable", "error": detail}
        return {"status": "success", "message": "all cache tiers reachable"}

    def __repr__(self) -> str:
        return f"<TieredBackend tiers={'+'.join(t.name for t in self.core.tiers)}>"


def hit_note(cached: Any, level: str, usage: dict[str, Any] | None, dollars: float) -> dict[str, Any]:
    """A hit's ``_hidden_params["cache"]``: which tier, how old, and what it saved (usage and dollars, by the
    conventions LiteLLM prices that call type with; see :func:`._litellm_calls.saved_of`).

    Attached to the converted hit by the conversion wrapper in :mod:`._litellm_hit_path`. LiteLLM's own accounting
    is untouched: ``usage`` replays the original numbers and ``response_cost`` is 0 on a hit."""
    created = cached.get("timestamp") if type(cached) is dict else None
    return {
        "level": level,
        "age_s": time.time() - created if type(created) is float else None,
        "saved_usage": usage,
        "saved_usd": dollars,
    }
