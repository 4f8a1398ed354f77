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


def test_bounded_by_entries_evicting_least_recently_used() -> None:
    tier = MemoryTier(max_entries=3, max_bytes=10**9)
    for k in "abc":
        tier.set(k, entry())
    tier.get("a")  # a is now the most recent
    tier.set("d", entry())
    assert tier.get("b") is None
    assert {k for k in "acd" if tier.get(k) is not None} == set("acd")
    assert tier.evictions == 1 and tier.entries == 3


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
