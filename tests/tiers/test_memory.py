from __future__ import annotations

import time

import pytest

from dspy_tiered_cache.codec import Entry
from dspy_tiered_cache.tiers.memory import MemoryTier

from .contract import TierContract, entry


class TestMemoryTier(TierContract):
    @pytest.fixture
    def tier(self) -> MemoryTier:
        return MemoryTier(max_entries=1000, max_bytes=64 * 1024 * 1024)


def test_bounded_by_entries() -> None:
    tier = MemoryTier(max_entries=100, max_bytes=10**9)
    for i in range(1000):
        tier.set(f"k{i}", entry())
    assert tier.entries == 100
    assert tier.evictions == 900


def test_popular_entries_survive_a_scan_of_one_off_keys() -> None:
    """The point of W-TinyLFU over LRU: a burst of one-off prompts does not flush the popular ones."""
    tier = MemoryTier(max_entries=100, max_bytes=10**9)
    popular = [f"popular-{i}" for i in range(50)]
    for _ in range(5):
        for k in popular:
            if tier.get(k) is None:
                tier.set(k, entry())
    for i in range(2000):  # a scan: each key once
        if tier.get(f"once-{i}") is None:
            tier.set(f"once-{i}", entry())
    survivors = sum(tier.get(k) is not None for k in popular)
    assert survivors >= 45


def test_zipf_hit_ratio_beats_lru() -> None:
    import itertools
    import random
    from collections import OrderedDict

    rng = random.Random(7)
    keys = 20_000
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(keys)))
    trace = [f"k{i}" for i in rng.choices(range(keys), cum_weights=cum, k=100_000)]
    tier = MemoryTier(max_entries=1000, max_bytes=10**9)
    lru: OrderedDict[str, int] = OrderedDict()
    ours = theirs = 0
    for k in trace:
        if tier.get(k) is not None:
            ours += 1
        else:
            tier.set(k, entry())
        if k in lru:
            lru.move_to_end(k)
            theirs += 1
        else:
            lru[k] = 1
            if len(lru) > 1000:
                lru.popitem(last=False)
    assert ours > theirs * 1.03


def test_bounded_by_bytes() -> None:
    tier = MemoryTier(max_entries=1000, max_bytes=10_000)
    for i in range(10):
        tier.set(str(i), entry(b"x" * 2000))
    assert tier.bytes <= 10_000
    assert tier.entries < 10
    assert tier.get("9") is not None and tier.get("0") is None


def test_value_larger_than_the_budget_is_not_stored_and_evicts_nothing() -> None:
    tier = MemoryTier(max_entries=10, max_bytes=5_000)
    tier.set("small", entry())
    tier.set("huge", entry(b"x" * 10_000))
    assert tier.get("huge") is None and tier.get("small") is not None


def test_expired_entry_frees_its_bytes() -> None:
    tier = MemoryTier()
    tier.set("k", Entry(b"x" * 100, time.time(), time.time() + 0.05))
    time.sleep(0.08)
    assert tier.get("k") is None
    assert tier.bytes == 0


def test_drop_namespace() -> None:
    tier = MemoryTier()
    tier.set("dtc:e:a:0:1", entry())
    tier.set("dtc:e:b:0:1", entry())
    assert tier.drop_namespace("dtc:e:a:") == 1
    assert tier.get("dtc:e:a:0:1") is None and tier.get("dtc:e:b:0:1") is not None


def test_hits_without_writes_keep_the_read_buffer_bounded() -> None:
    """Hits take no lock and only queue their key for the policy; a long run of hits must not grow that queue."""
    tier = MemoryTier(max_entries=100, max_bytes=10**9)
    tier.set("k", entry())
    for _ in range(10_000):
        assert tier.get("k") is not None
    assert len(tier._reads) < 1000


def test_reads_queued_before_a_write_count_for_its_eviction_decision() -> None:
    """Hits are queued, not applied; every write replays the queue first, so the policy decides with every read
    that happened before it, as if each had been applied at once."""
    tier = MemoryTier(max_entries=100, max_bytes=10**9)
    tier.set("k0", entry())
    tier.set("k1", entry())  # pushes k0 from the window into probation
    for _ in range(10):  # fewer reads than a batch: all still queued
        assert tier.get("k0") is not None
    tier.set("k2", entry())
    assert tier._sketch.frequency("k0") >= 10
    assert "k0" in tier._protected  # read again while on probation: protected before the write evicts anything


def test_concurrent_hits_and_writes_keep_both_bounds_and_a_consistent_index() -> None:
    import threading

    tier = MemoryTier(max_entries=200, max_bytes=200 * 400)
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader(offset: int) -> None:
        try:
            i = offset
            while not stop.is_set():
                got = tier.get(f"k{i % 300}")
                assert got is None or got.payload == b"v" * 100
                i += 7
        except BaseException as exc:  # surfaced to the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        for round_ in range(20):
            for i in range(300):
                tier.set(f"k{(i * 13 + round_) % 300}", entry(b"v" * 100))
            tier.delete(f"k{round_}")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not errors
    assert tier.entries <= 200 and tier.bytes <= 200 * 400
    segments = set(tier._window) | set(tier._probation) | set(tier._protected)
    assert segments == set(tier._data)
    assert tier.bytes == sum(e.size for e in tier._data.values())
