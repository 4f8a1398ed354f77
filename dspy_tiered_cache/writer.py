"""Write-behind for remote tiers: the caller gets its response without waiting for Redis or an fsync.

One daemon thread drains a bounded queue. A full queue drops the write (counted): a cache write is never worth
blocking an LLM call for. Writes not yet done stay visible to readers of this process through ``pending``, so a
read right after a write hits even with the memory tier turned off. The thread is restarted lazily after a fork
(gunicorn and celery pre-fork workers inherit no threads) and drained at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from dspy_tiered_cache import forksafe
from dspy_tiered_cache.codec import Entry

log = logging.getLogger("dspy_tiered_cache")

#: (key, entry, action, epoch): action performs the write and reports failures itself.
_Job = tuple[str, Entry, Callable[[], None], int]
_WAKE: Any = ("", None, None, 0)  # wakes the thread to run due retries
_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()


class BackgroundWriter:
    def __init__(self, maxsize: int = 10_000) -> None:
        self.maxsize = maxsize
        self.dropped = 0
        self.pending: dict[str, Entry] = {}
        self.writing: str | None = None  # the key being written right now
        self._epochs: dict[str, int] = {}  # bumped by cancel(): queued writes of an older epoch are skipped
        self._pid = -1
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._inflight = 0
        self._retries: list[list[Any]] = []
        self._dropped_logged = 0.0
        _writers.add(self)
        forksafe.register(self)

    def _after_fork_in_child(self) -> None:
        """The writer thread is gone and its locks may be held: start over (lazily) with fresh ones."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._queue = queue.Queue(self.maxsize)
        self.pending = {}
        self._epochs = {}
        self.writing = None
        self._inflight = 0
        self._retries = []
        self._thread = None
        self._pid = os.getpid()

    def submit(self, key: str, entry: Entry, action: Callable[[], None]) -> bool:
        self._ensure_thread()
        with self._lock:
            self._inflight += 1
            self.pending[key] = entry
            epoch = self._epochs.get(key, 0)
        try:
            self._queue.put_nowait((key, entry, action, epoch))
            return True
        except queue.Full:
            self._done(key, entry)
            self.dropped += 1
            now = time.monotonic()
            if now - self._dropped_logged >= 60.0:  # once a minute, not once per dropped write
                self._dropped_logged = now
                log.warning("dspy_tiered_cache: write queue full (%d); dropping remote writes (%d so far)",
                            self.maxsize, self.dropped)
            return False

    def _ensure_thread(self) -> None:
        pid = os.getpid()
        if self._pid == pid and self._thread is not None:
            return
        with self._lock:
            if self._pid == pid and self._thread is not None:
                return
            if self._pid != pid:  # forked: the parent's queue and thread are not ours
                self._queue = queue.Queue(self.maxsize)
                self.pending = {}
                self._inflight = 0
                self._retries = []
            self._pid = pid
            self._thread = threading.Thread(target=self._run, name="dspy-tiered-cache-writer", daemon=True)
            self._thread.start()

    def retry(self, action: Callable[[], None], *, until: float, every: float = 0.2) -> None:
        """Run ``action`` in the background until it stops raising or ``until`` (monotonic) passes: for cleanup
        that must happen once the tier is back, such as releasing a lease whose release failed."""
        self._ensure_thread()
        with self._lock:
            self._retries.append([time.monotonic() + every, until, every, action])
        with contextlib.suppress(queue.Full):  # wake the thread so it starts polling retries
            self._queue.put_nowait(_WAKE)

    def _run_retries(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [r for r in self._retries if r[0] <= now]
        for item in due:
            _, until, every, action = item
            try:
                action()
                done = True
            except Exception as exc:
                done = time.monotonic() >= until
                log.debug("background retry failed (%s); %s", exc, "giving up" if done else "will retry")
            with self._lock:
                if done:
                    self._retries.remove(item)
                else:
                    item[0] = time.monotonic() + every

    def _run(self) -> None:
        q = self._queue
        while True:
            try:
                job = q.get(timeout=0.1 if self._retries else None)
            except queue.Empty:
                job = _WAKE
            if job is None:
                return
            if self._retries:
                self._run_retries()
            if job is _WAKE:
                continue
            key, entry, action, epoch = job
            with self._lock:
                current = self._epochs.get(key, 0) == epoch  # not deleted since it was queued
                self.writing = key if current else None
            try:
                if current:
                    action()
            except Exception:  # actions report their own failures; never let the thread die
                log.exception("dspy_tiered_cache: background write failed")
            finally:
                self.writing = None
                self._done(key, entry)

    def cancel(self, key: str) -> None:
        """Forget queued writes of ``key`` (it is being deleted) and wait out one already under way."""
        with self._lock:
            self.pending.pop(key, None)
            self._epochs[key] = self._epochs.get(key, 0) + 1
        deadline = time.monotonic() + 5.0
        while self.writing == key and time.monotonic() < deadline:
            time.sleep(0.001)

    def _done(self, key: str, entry: Entry) -> None:
        with self._lock:
            self._inflight -= 1
            if self.pending.get(key) is entry:
                del self.pending[key]
            if self._inflight <= 0:
                self._idle.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every submitted write is done; False if ``timeout`` passed first."""
        if self._pid != os.getpid():
            return True
        with self._lock:
            return self._idle.wait_for(lambda: self._inflight <= 0, timeout)

    def close(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)
        self._thread = None


@atexit.register
def _drain_at_exit() -> None:
    """A batch job's last answers should reach Redis even though the writer thread is a daemon."""
    for writer in list(_writers):
        writer.flush(2.0)
