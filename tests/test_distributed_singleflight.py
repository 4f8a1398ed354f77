"""Stampede protection across processes: 100 concurrent identical misses from 4 processes, one upstream call."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.flights import LeaseTier
from dspy_tiered_cache.keys import lease_key
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer
from dspy_tiered_cache.tiers.redis import RedisTier

REQUEST = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "stampede"}]}


def _ask(base_url: str) -> dict[str, Any]:
    body = json.dumps({"model": "gpt-4o-mini", "messages": REQUEST["messages"]}).encode()
    req = urllib.request.Request(f"{base_url}/chat/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def _worker(settings: dict[str, Any], base_url: str, threads: int, ready: Any, go: Any, results: Any) -> None:
    core = CacheCore(**settings)
    key = core.key_for(REQUEST)
    ready.put(True)
    answers: list[tuple[str, str]] = []
    errors: list[str] = []

    def call() -> None:
        try:
            value, level = core.get_or_compute(key, lambda: _ask(base_url))
            answers.append((value["choices"][0]["message"]["content"], level))
        except Exception as exc:
            errors.append(repr(exc))

    go.wait(30)
    pool = [threading.Thread(target=call) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    core.flush()
    results.put((answers, errors))


def _stampede(settings: dict[str, Any], provider: StandInProvider, processes: int = 4, threads: int = 25) -> Any:
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    args = (settings, provider.base_url, threads, ready, go, results)
    procs = [ctx.Process(target=_worker, args=args) for _ in range(processes)]
    for p in procs:
        p.start()
    for _ in procs:  # every child has imported and built its cache: the burst starts together
        ready.get(timeout=60)
    go.set()
    out = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    answers = [a for answers, _ in out for a in answers]
    errors = [e for _, errors in out for e in errors]
    return answers, errors


def test_100_misses_across_4_processes_make_one_upstream_call(redis_url: str) -> None:
    with StandInProvider(latency=0.5) as provider:
        answers, errors = _stampede({"redis_url": redis_url, "disk": False}, provider)
        assert errors == []
        assert len(answers) == 100
        assert len({content for content, _ in answers}) == 1
        assert provider.request_count == 1


def test_processes_sharing_only_a_disk_file_also_share_one_call(tmp_path: Path) -> None:
    with StandInProvider(latency=0.5) as provider:
        settings = {"disk": True, "disk_path": str(tmp_path / "c.sqlite3")}
        answers, errors = _stampede(settings, provider, processes=3, threads=10)
        assert errors == [] and len(answers) == 30
        assert provider.request_count == 1


@pytest.mark.parametrize("on_entry", [True, False], ids=["lease-on-entry-key", "separate-lease-key"])
def test_dead_lease_holder_is_taken_over(redis_url: str, on_entry: bool, request: pytest.FixtureRequest) -> None:
    """A process that took the lease and died: the lease expires and one waiter computes. Both layouts: the lease
    on the entry key (Redis 7) and the separate lease key (older servers)."""
    if on_entry:
        request.getfixturevalue("entry_leases")  # skips on a server before Redis 7
    core = CacheCore(redis_url=redis_url, disk=False, lock_lease_s=0.5, lock_poll_s=0.02)
    key = core.key_for(REQUEST)
    tier = core.claims.tier
    assert isinstance(tier, LeaseTier) and isinstance(tier, RedisTier)
    if on_entry:
        assert tier.lease_get(key, "deadprocess", 0.5) is None and tier.lease_outcome("deadprocess") == "held"
        tier._entry_held.clear()  # the holder died: nobody in this process holds it
    else:
        tier._entry_leases = False  # as on a server before Redis 7
        assert tier.acquire_lock(lease_key(key), "dead-process", 0.5)
    started = time.monotonic()
    value, level = core.get_or_compute(key, lambda: {"computed": True})
    assert value == {"computed": True} and level == "miss"
    assert 0.4 < time.monotonic() - started < 10.0  # waited for the lease to expire, not forever
    core.close()


def test_redis_down_falls_back_to_in_process_single_flight() -> None:
    with RedisServer() as server:
        core = CacheCore(redis_url=server.url, disk=False, redis_timeout_ms=100)
        key = core.key_for(REQUEST)
        server.kill()
        calls = 0
        gate = threading.Event()

        def compute() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            gate.wait(2)
            return {"ok": True}

        results: list[Any] = []
        pool = [threading.Thread(target=lambda: results.append(core.get_or_compute(key, compute))) for _ in range(10)]
        for t in pool:
            t.start()
        time.sleep(0.3)
        gate.set()
        for t in pool:
            t.join()
        assert calls == 1 and len(results) == 10
        core.close()


def test_a_waiting_process_wakes_when_the_answer_is_shared_not_at_its_next_poll(redis_url: str) -> None:
    """The lease holder's answer reaches the waiting instance over the invalidation channel; the waiter wakes on
    it instead of sleeping out ``lock_poll_s`` (here 5 s, so a poll would fail the bound) and makes no GET."""
    leader = CacheCore(redis_url=redis_url, disk=False, key_prefix="wake")
    waiter = CacheCore(redis_url=redis_url, disk=False, key_prefix="wake", lock_poll_s=5.0)
    for core in (leader, waiter):
        assert core._bus is not None and core._bus.wait_connected(5)
    key = leader.key_for({"q": "wake"})
    assert waiter.key_for({"q": "wake"}) == key
    claim = leader.claim(key)
    assert claim.leads and claim.token
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(waiter.claim(key)))
    thread.start()
    deadline = time.monotonic() + 5
    while key not in waiter.claims._arrivals and time.monotonic() < deadline:  # the waiter is napping
        time.sleep(0.005)
    started = time.monotonic()
    leader.fulfil(claim, {"answer": "shared"})
    thread.join(10)
    assert got and got[0].answer is not None and time.monotonic() - started < 2.5
    assert got[0].level == "l1"  # from its memory tier: the answer came with the message
    leader.close()
    waiter.close()
