"""Single-flight for the LiteLLM door: concurrent identical misses make one upstream call.

A mixin of :class:`~.litellm.TieredCache`, kept apart because it is one job: after a miss, a call either joins
another caller's answer (here or in another process) or leads, and a leader's write fulfils its claim. It calls the
core's public lead/join operations only (``claim``/``aclaim``, ``abandon``/``aabandon``); the write that fulfils a
claim is the backend's. LiteLLM's ``num_retries`` re-enters the lookup under the same call id, so every piece of
per-call state here is re-entrant and released when an attempt fails.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import litellm
from litellm.integrations.custom_logger import CustomLogger

from dspy_tiered_cache.codec import decode_value
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.flights import Claim
from dspy_tiered_cache.integrations._litellm_backend import _LOOKUP, TieredBackend, from_stored
from dspy_tiered_cache.options import Hit

__all__ = ["FlightsMixin", "register_for_failures"]

#: Bound on the call ids remembered per door.
LOOKED_UP_MAX: Final = 4096


class FlightsMixin:
    """The single-flight half of the door (see the module docstring)."""

    core: CacheCore
    backend: TieredBackend
    _tiered_backend: TieredBackend
    _looked_up_lock: threading.Lock
    _leading: dict[str, Claim]
    _thread_leading: dict[int, str]
    _attempted: OrderedDict[str, None]

    if TYPE_CHECKING:  # provided by LiteLLM's Cache, later in the door's MRO

        def get_cache_logic(self, cached_result: Any, max_age: float | None) -> Any: ...

    def _claimable(self, kwargs: Mapping[str, Any], *, sync: bool) -> str | None:
        """After a miss: the key this call may claim (join another caller's answer or lead), or None when the
        call takes no part in single-flight. A leader's write fulfils its claim.

        Streams and ``no-store`` calls never lead (they may never write); a leader whose call fails releases
        its followers through LiteLLM's failure callback (they then go upstream themselves)."""
        lookup = _LOOKUP.get()
        call_id = kwargs.get("litellm_call_id")
        s = self.core.settings
        controls = kwargs.get("cache") or {}
        if (
            lookup is None
            or not (s.single_flight and s.enabled)
            or self.core.mode_of(self._tiered_backend.options) == "refresh"  # re-recording: never served
            or not isinstance(call_id, str)
            or kwargs.get("stream")
            or "input" in kwargs  # embeddings are cached per input by LiteLLM's pipeline: not one flight
            or (isinstance(controls, Mapping) and controls.get("no-store"))
        ):
            return None
        if self._retrying(call_id, sync):
            return None
        return lookup[1]

    def _retrying(self, call_id: str, sync: bool) -> bool:
        """Whether this lookup is a retry of a call that already took part in single-flight.

        LiteLLM's ``num_retries`` runs every attempt through the cache lookup again under the same call id, and the
        sync wrapper calls no failure callback between attempts (nor for any attempt after the first logged
        failure: LiteLLM logs one failure per call). So a second lookup by a call id is the only sure sign that
        its previous attempt failed: end the flight that attempt led (its followers go upstream at once, its lease
        is given back) and let the retry go upstream on its own, leading nothing that could be stranded.

        A sync caller's thread runs one LiteLLM call at a time: a new call in a thread whose previous call still
        leads a flight means that call ended without a store and without a failure callback (``no-log``, a
        ``BaseException``): end that flight too."""
        ended: list[str] = []
        thread = threading.get_ident() if sync else None
        with self._looked_up_lock:
            retry = call_id in self._attempted
            if call_id in self._leading:
                ended.append(call_id)
            if thread is not None:
                previous = self._thread_leading.get(thread)
                if previous is not None and previous != call_id and previous in self._leading:
                    ended.append(previous)
            self._attempted[call_id] = None
            if len(self._attempted) > LOOKED_UP_MAX:
                self._attempted.popitem(last=False)
        for ended_id in ended:
            self._end_flight({"litellm_call_id": ended_id}, failed=True)
        return retry

    def _claimed(self, kwargs: Mapping[str, Any], claim: Claim, *, sync: bool) -> Any:
        """Another caller's answer (here or in another process) as a hit; or, leading, remember the claim for
        our upstream call's write to fulfil (or for its failure to abandon)."""
        if claim.answer is not None:
            return self._joined(claim.answer, claim.level)
        if claim.ended:  # uncoordinated (the leader outlived the wait): nothing to fulfil
            return None
        call_id = str(kwargs.get("litellm_call_id"))
        with self._looked_up_lock:
            self._leading[call_id] = claim
            self.backend.claims[claim.key] = claim
            if sync:
                self._thread_leading[threading.get_ident()] = call_id
            stale_id = next(iter(self._leading)) if len(self._leading) > LOOKED_UP_MAX else None
        if stale_id is not None:
            self._end_flight({"litellm_call_id": stale_id}, failed=True)
        return None

    def _joined(self, payload: bytes, level: str) -> Any:
        """The leader's answer, as a hit LiteLLM converts like any other."""
        key = (_LOOKUP.get() or ("", ""))[1]
        _LOOKUP.set((level, key))  # the core counted the join
        hit = Hit(decode_value(payload), level, time.time(), None)
        return self.get_cache_logic(cached_result=from_stored(hit), max_age=None)

    def _end_flight(self, kwargs: Mapping[str, Any], *, failed: bool = False) -> None:
        led = self._unlead(kwargs, failed=failed)
        if led is not None:  # normally fulfilled by the store already (then this does nothing)
            self.core.abandon(led)

    async def _aend_flight(self, kwargs: Mapping[str, Any], *, failed: bool = False) -> None:
        led = self._unlead(kwargs, failed=failed)
        if led is not None:
            await self.core.aabandon(led)

    def _unlead(self, kwargs: Mapping[str, Any], *, failed: bool) -> Claim | None:
        """Forget the claim the call ``kwargs`` leads; the caller ends it (sync or awaited)."""
        call_id = kwargs.get("litellm_call_id")
        if not isinstance(call_id, str) or not self._leading:
            return None
        with self._looked_up_lock:
            led = self._leading.pop(call_id, None)
            for thread, leading_id in list(self._thread_leading.items()):
                if leading_id == call_id:
                    del self._thread_leading[thread]
            if led is not None and failed:
                self.backend.forget_awaiting(led.key)
        if led is not None and self.backend.claims.get(led.key) is led:
            del self.backend.claims[led.key]
        return led


class _FlightReleaser(CustomLogger):  # type: ignore[misc,unused-ignore]
    """Tells the followers of a failed call's flight to go upstream themselves instead of waiting.

    One per process, registered once, dispatching to every live TieredCache: LiteLLM keeps one callback of a
    class, so a second instance would never be called."""

    def __init__(self) -> None:
        super().__init__()
        self.caches: weakref.WeakSet[FlightsMixin] = weakref.WeakSet()

    def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if isinstance(kwargs, Mapping):
            for cache in list(self.caches):
                cache._end_flight(kwargs, failed=True)

    async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        if isinstance(kwargs, Mapping):
            for cache in list(self.caches):
                await cache._aend_flight(kwargs, failed=True)


_RELEASER: _FlightReleaser | None = None
_RELEASER_LOCK = threading.Lock()


def register_for_failures(cache: FlightsMixin) -> None:
    global _RELEASER
    with _RELEASER_LOCK:
        if _RELEASER is None:
            _RELEASER = _FlightReleaser()
        if _RELEASER not in litellm.callbacks:
            litellm.callbacks.append(_RELEASER)
        _RELEASER.caches.add(cache)
