"""In-process single-flight: concurrent identical misses wait for one leader instead of each calling upstream.

One registry serves threads and asyncio tasks alike (a sync caller may lead while async callers follow, or the
reverse), because DSPy's ``Parallel`` uses threads and ``acall`` uses the event loop on the same cache.
What followers receive is the leader's encoded payload, so each decodes its own fresh object.

Usage by get/put-style callers (the ``dspy.cache`` protocol)::

    flight, leader = registry.begin(key)
    if leader:
        ...call upstream...; registry.finish(key, flight, payload)   # or payload=None on failure
    else:
        payload = flight.wait(timeout)        # None: the leader failed or timed out -> call upstream yourself
"""

from __future__ import annotations

import asyncio
import threading

from dspy_tiered_cache import forksafe


class Flight:
    __slots__ = ("_async_waiters", "_done", "_lock", "followers", "payload")

    def __init__(self) -> None:
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[bytes | None]]] = []
        self.payload: bytes | None = None
        self.followers = 0

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float) -> bytes | None:
        self._done.wait(timeout)
        return self.payload

    async def wait_async(self, timeout: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes | None] = loop.create_future()
        with self._lock:
            if self._done.is_set():
                return self.payload
            self._async_waiters.append((loop, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None

    def _complete(self, payload: bytes | None) -> None:
        with self._lock:
            self.payload = payload
            self._done.set()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, future, payload)


def _resolve(future: asyncio.Future[bytes | None], payload: bytes | None) -> None:
    if not future.done():
        future.set_result(payload)


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._lock = threading.Lock()
        self.joined = 0
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        # The parent's leaders are not in this process: their flights would never finish here.
        self._lock = threading.Lock()
        self._flights = {}

    def begin(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (and so must call :meth:`finish`)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                flight.followers += 1
                self.joined += 1
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def finish(self, key: str, flight: Flight, payload: bytes | None) -> None:
        """Wake the followers with the payload (``None`` tells them to call upstream themselves)."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight._complete(payload)

    def __len__(self) -> int:
        return len(self._flights)
