"""Keeping memory tiers of many processes coherent: invalidations travel over Redis pub/sub.

When any instance deletes a key, invalidates a namespace or clears everything, it publishes one small message on
``{prefix}:inv``; every other instance's subscriber thread applies it to its own memory tier within
milliseconds. Pub/sub works on every Redis and Valkey, managed ones and Cluster included (PUBLISH is broadcast
to all nodes), unlike client-side tracking, which needs RESP3 and is missing on several managed services.

Messages can be lost (a disconnect, a restart). The bound on staleness then is: for namespaces and ``clear``,
``generation_refresh_s`` (while the subscriber is not connected generations are re-read from Redis on that
period, and every generation is re-read after a reconnect: :mod:`namespaces`); for one deleted key, the memory
tier's lifetime ``memory_ttl``. Set ``memory_ttl`` to the staleness
you can accept for single-key deletes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

import orjson

from dspy_tiered_cache import forksafe

log = logging.getLogger("dspy_tiered_cache")

Handler = Callable[[dict[str, Any]], None]

#: Fresh answers whose stored frame is at most this size travel over the channel to other processes' memory
#: tiers (one PUBLISH per stored answer instead of one GET per process that later asks for it).
SHARE_MAX_BYTES: Final = 16 * 1024
#: First byte of a shared-answer message; invalidations are JSON objects, which start with ``{``.
_ANSWER: Final = b"A"
_ORIGIN_LEN: Final = 16


@runtime_checkable
class AnswerSharing(Protocol):
    """A tier that can publish the entries it stores on the invalidation channel, in the write's round trip."""

    def share_answers(self, channel: str, message: Callable[[str, bytes], bytes] | None, max_bytes: int) -> None: ...


@runtime_checkable
class PubSubSource(Protocol):
    """A tier whose server can carry invalidations. A method, not a property: checking whether a tier is one
    (``isinstance``) must never build a client or touch the network."""

    def pubsub_client(self) -> Any: ...


class InvalidationBus:
    """Publishes our invalidations and applies everyone else's; one daemon thread per process and cache."""

    def __init__(
        self, client_factory: Callable[[], Any], channel: str, handler: Handler, on_reconnect: Callable[[], None]
    ) -> None:
        self._client_factory = client_factory
        self.channel = channel
        #: Shared answers travel on a channel of their own: a process of an older release, subscribed to
        #: ``channel`` only, never sees them (it would log each as a malformed invalidation).
        self.answers_channel = f"{channel}:answers"
        self._handler = handler
        self._on_reconnect = on_reconnect
        self.origin = uuid.uuid4().hex[:16]
        self.received = 0
        self.connected = threading.Event()
        #: When (monotonic) the subscription was last confirmed; None while disconnected.
        self.connected_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._thread = None  # the subscriber thread did not survive the fork; ensure_started() makes a new one
        self._stop = threading.Event()
        self.connected = threading.Event()
        self.connected_at = None

    def live_since(self) -> float | None:
        """Since when every message on the channel reaches us (None: not connected, in this process)."""
        return self.connected_at if self._pid == os.getpid() and self.connected.is_set() else None

    def ensure_started(self) -> None:
        """Start (or, in a forked child, restart) the subscriber. Cheap when it already runs."""
        if self._pid == os.getpid() and self._thread is not None:
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None:
                return
            self._pid = os.getpid()
            self.origin = uuid.uuid4().hex[:16]  # a forked child is a new instance
            self._stop.clear()
            self.connected.clear()
            self._thread = threading.Thread(target=self._run, name="dspy-tiered-cache-invalidation", daemon=True)
            self._thread.start()

    def publish(self, message: dict[str, Any]) -> int:
        """Send an invalidation; returns how many subscribers got it (raises on Redis errors: caller counts)."""
        body = orjson.dumps({**message, "origin": self.origin})
        return int(self._client_factory().publish(self.channel, body))

    def _run(self) -> None:
        backoff = 0.2
        first = True
        while not self._stop.is_set():
            pubsub = None
            try:
                pubsub = self._client_factory().pubsub(ignore_subscribe_messages=False)  # see the confirmation
                pubsub.subscribe(self.channel, self.answers_channel)
                # Wait for the subscription to be confirmed before declaring ourselves connected.
                confirmed = pubsub.get_message(timeout=1.0, ignore_subscribe_messages=False)
                if not first:
                    self._on_reconnect()  # messages may have been lost while we were away
                # Only a confirmed subscription lets generations be trusted longer (namespaces.LIVE_REFRESH_S).
                live = isinstance(confirmed, dict) and confirmed.get("type") in ("subscribe", b"subscribe")
                self.connected_at = time.monotonic() if live else None
                self.connected.set()
                first = False
                backoff = 0.2
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)  # bounds how long close() waits
                    if message is not None and message.get("type") == "message":
                        self._apply(message["data"])
            except Exception as exc:
                self.connected.clear()
                self.connected_at = None
                log.debug("invalidation subscriber disconnected: %s; retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if self._stop.is_set():  # stopped: no message reaches us any more
                    self.connected.clear()
                    self.connected_at = None
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()

    def answer_message(self, key: str, frame: bytes) -> bytes:
        """The message sharing a freshly stored ``frame`` (as stored in Redis: checksummed, maybe compressed):
        ``A`` + our origin + key length (2 bytes) + key + frame. Receivers check it as they check a Redis read."""
        raw = key.encode()
        return b"".join((_ANSWER, self.origin.encode(), len(raw).to_bytes(2, "big"), raw, frame))

    def _apply_answer(self, data: bytes) -> None:
        """Another process stored an answer: hand ``{"op": "put", "key", "frame"}`` to the handler (which checks
        the key is ours and current, and decodes the frame with every check a Redis read gets)."""
        origin = data[1 : 1 + _ORIGIN_LEN]
        start = 1 + _ORIGIN_LEN + 2
        size = int.from_bytes(data[1 + _ORIGIN_LEN : start], "big")
        if len(data) <= start + size or origin == self.origin.encode():
            return
        try:
            key = data[start : start + size].decode()
        except UnicodeDecodeError:
            return
        self.received += 1
        try:
            self._handler({"op": "put", "key": key, "frame": data[start + size :]})
        except Exception:
            log.exception("dspy_tiered_cache: taking a shared answer failed")

    def _apply(self, data: bytes) -> None:
        if data[:1] == _ANSWER:
            self._apply_answer(data)
            return
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("dspy_tiered_cache: ignoring a malformed invalidation message on %s", self.channel)
            return
        if not isinstance(message, dict) or message.get("origin") == self.origin:
            return
        self.received += 1
        try:
            self._handler(message)
        except Exception:
            log.exception("dspy_tiered_cache: applying an invalidation failed")

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout)
        self._thread = None

    def wait_connected(self, timeout: float = 5.0) -> bool:
        started = time.monotonic()
        self.ensure_started()
        return self.connected.wait(max(0.0, timeout - (time.monotonic() - started)))
