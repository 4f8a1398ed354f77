"""Fork safety and thread hygiene.

Pre-fork servers (gunicorn --preload, celery, multiprocessing 'fork') fork a process that has already used the
cache: its writer and invalidation threads do not exist in the child, and any lock another thread held at the
moment of fork is held forever in the child. The child must still get, set and have its writes land, without
deadlocking. And ``close()`` must leave no thread behind.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import pytest
import redis
from support.faults import core_settings, prompt_for, request_for

from dspy_tiered_cache import CacheCore

FORK = multiprocessing.get_context("fork")
PARENT_ANSWER = {"answer": "from the parent"}
CHILD_ANSWER = {"answer": "from the child"}


def _threads_of(core: CacheCore) -> list[threading.Thread]:
    """The core's background threads (writer, invalidation subscriber)."""
    bus = getattr(core, "_bus", None)
    found = [core.writer._thread, getattr(bus, "_thread", None)]
    return [t for t in found if t is not None]


def _child(core: CacheCore, parent_key: str, results: Any) -> None:
    """Runs in the forked child: read the parent's entry, write and compute new ones, wait for them to land."""
    report: dict[str, Any] = {"pid": os.getpid()}
    try:
        hit = core.get(parent_key)
        report["parent_entry"] = None if hit is None else (hit.value, hit.level)
        key = core.key_for(request_for(prompt_for(os.getpid(), "child")))
        report["set"] = core.set(key, CHILD_ANSWER)
        computed = core.key_for(request_for(prompt_for(os.getpid(), "child-computed")))
        report["computed"] = core.get_or_compute(computed, lambda: CHILD_ANSWER)
        report["flushed"] = core.flush(5.0)
        report["keys"] = [key, computed]
        report["writer_alive"] = core.writer._thread is not None and core.writer._thread.is_alive()
    except BaseException as exc:  # report everything: the parent asserts
        report["error"] = repr(exc)
    results.put(report)


def _fork_and_wait(core: CacheCore, parent_key: str, timeout: float) -> dict[str, Any] | None:
    results = FORK.Queue()
    child = FORK.Process(target=_child, args=(core, parent_key, results))
    child.start()
    child.join(timeout)
    if child.is_alive():
        child.kill()
        child.join(5)
        return None
    return results.get(timeout=5)  # type: ignore[no-any-return]


def test_forked_child_gets_sets_and_its_writes_land(redis_url: str) -> None:
    core = CacheCore(**core_settings(redis_url))
    parent_key = core.key_for(request_for(prompt_for(1, "parent")))
    core.set(parent_key, PARENT_ANSWER)
    assert core.flush()
    bus = getattr(core, "_bus", None)
    assert bus is not None and bus.wait_connected(5.0)
    parent_threads = _threads_of(core)
    assert len(parent_threads) == 2 and all(t.is_alive() for t in parent_threads)  # both running at fork time

    report = _fork_and_wait(core, parent_key, timeout=20.0)
    assert report is not None, "the forked child deadlocked"
    assert "error" not in report, report
    assert report["parent_entry"] == (PARENT_ANSWER, "l1")  # inherited memory tier
    assert report["set"] is True and report["computed"] == (CHILD_ANSWER, "miss")
    assert report["flushed"] is True and report["writer_alive"] is True  # a writer of its own

    with redis.Redis.from_url(redis_url) as raw:
        assert all(raw.exists(k) for k in report["keys"]), "the child's writes did not land in Redis"
    reader = CacheCore(**core_settings(redis_url))  # and they read back in another process
    assert all((hit := reader.get(k)) is not None and hit.value == CHILD_ANSWER for k in report["keys"])
    assert all(t.is_alive() for t in parent_threads)  # the parent's threads are untouched
    reader.close()
    core.close()


def _hold(lock: Any, held: threading.Event, release: threading.Event) -> None:
    with lock:
        held.set()
        release.wait(10)


@pytest.mark.parametrize("holder", ["memory tier", "background writer"])
def test_fork_while_another_thread_is_inside_the_cache(redis_url: str, holder: str) -> None:
    """Deterministic version of the race: another thread is inside a cache lock at the moment of fork."""
    core = CacheCore(**core_settings(redis_url))
    parent_key = core.key_for(request_for(prompt_for(2, "parent")))
    core.set(parent_key, PARENT_ANSWER)
    assert core.flush()
    lock = core.memory._lock if holder == "memory tier" else core.writer._lock  # type: ignore[union-attr]
    held, release = threading.Event(), threading.Event()
    other = threading.Thread(target=_hold, args=(lock, held, release), daemon=True)
    other.start()
    assert held.wait(5)
    try:
        report = _fork_and_wait(core, parent_key, timeout=2.0)
    finally:
        release.set()
        other.join(5)
        core.close()
    assert report is not None, f"the child deadlocked on the {holder}'s lock held by another thread at fork time"
    assert "error" not in report, report


def test_close_leaves_no_threads_behind(redis_url: str) -> None:
    core = CacheCore(**core_settings(redis_url))
    key = core.key_for(request_for(prompt_for(3, "threads")))  # starts the invalidation subscriber
    core.set(key, PARENT_ANSWER)  # starts the writer
    bus = getattr(core, "_bus", None)
    assert bus is not None and bus.wait_connected(5.0)
    mine = _threads_of(core)
    assert len(mine) == 2 and all(t.is_alive() for t in mine)
    started = time.perf_counter()
    core.close()
    closing = time.perf_counter() - started
    alive = [t.name for t in mine if t.is_alive() or t in threading.enumerate()]
    assert alive == [], f"threads left after close(): {alive}"
    assert closing < 3.0
    core.close()  # closing twice is harmless
