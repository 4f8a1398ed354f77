"""The contract every tier honours, run unchanged against each one (the cachetools mixin pattern).

A subclass provides a ``tier`` fixture; nothing here knows which tier it is testing.
"""

from __future__ import annotations

import threading
import time

import pytest

from dspy_tiered_cache.codec import Entry
from dspy_tiered_cache.tiers.base import Tier


def entry(payload: bytes = b'{"answer": 42}', ttl: float | None = None, created: float | None = None) -> Entry:
    now = time.time()
    return Entry(payload, created if created is not None else now, None if ttl is None else now + ttl)


class TierContract:
    def test_missing_key_is_none(self, tier: Tier) -> None:
        assert tier.get("dtc:e:default:0:missing") is None

    def test_round_trip_keeps_payload_and_lifetime(self, tier: Tier) -> None:
        e = entry(ttl=60)
        tier.set("dtc:e:default:0:a", e)
        got = tier.get("dtc:e:default:0:a")
        assert got is not None
        assert got.payload == e.payload
        assert got.created_at == pytest.approx(e.created_at, abs=0.002)
        assert got.expires_at == pytest.approx(e.expires_at, abs=0.002)

    def test_arbitrary_bytes_and_large_values(self, tier: Tier) -> None:
        binary = bytes(range(256)) * 4
        large = b"x" * (1024 * 1024)
        tier.set("dtc:e:default:0:bin", entry(binary))
        tier.set("dtc:e:default:0:big", entry(large))
        assert tier.get("dtc:e:default:0:bin").payload == binary  # type: ignore[union-attr]
        assert tier.get("dtc:e:default:0:big").payload == large  # type: ignore[union-attr]

    def test_overwrite_replaces(self, tier: Tier) -> None:
        tier.set("dtc:e:default:0:k", entry(b"1"))
        tier.set("dtc:e:default:0:k", entry(b"2"))
        assert tier.get("dtc:e:default:0:k").payload == b"2"  # type: ignore[union-attr]

    def test_delete(self, tier: Tier) -> None:
        tier.set("dtc:e:default:0:k", entry())
        tier.delete("dtc:e:default:0:k")
        tier.delete("dtc:e:default:0:never-there")
        assert tier.get("dtc:e:default:0:k") is None

    def test_expired_entries_are_misses(self, tier: Tier) -> None:
        tier.set("dtc:e:default:0:short", entry(ttl=0.15))
        tier.set("dtc:e:default:0:forever", entry(ttl=None))
        assert tier.get("dtc:e:default:0:short") is not None
        time.sleep(0.25)
        assert tier.get("dtc:e:default:0:short") is None
        forever = tier.get("dtc:e:default:0:forever")
        assert forever is not None and forever.expires_at is None

    def test_already_expired_entry_is_not_stored(self, tier: Tier) -> None:
        tier.set("dtc:e:default:0:past", Entry(b"1", time.time() - 10, time.time() - 1))
        assert tier.get("dtc:e:default:0:past") is None

    def test_clear_removes_entries(self, tier: Tier) -> None:
        for i in range(20):
            tier.set(f"dtc:e:ns{i % 3}:0:{i}", entry())
        tier.clear()
        assert all(tier.get(f"dtc:e:ns{i % 3}:0:{i}") is None for i in range(20))

    def test_generations_start_at_zero_and_increase(self, tier: Tier) -> None:
        assert tier.get_generation("gen-test") == 0
        assert tier.bump_generation("gen-test") == 1
        assert tier.bump_generation("gen-test") == 2
        assert tier.get_generation("gen-test") == 2
        assert tier.get_generation("other") == 0

    def test_health(self, tier: Tier) -> None:
        health = tier.health()
        assert health.ok, health.detail
        assert health.name == tier.name

    def test_concurrent_threads(self, tier: Tier) -> None:
        errors: list[BaseException] = []

        def work(n: int) -> None:
            try:
                for i in range(100):
                    key = f"dtc:e:default:0:t{n}-{i}"
                    tier.set(key, entry(f"{n}-{i}".encode()))
                    got = tier.get(key)
                    assert got is not None and got.payload == f"{n}-{i}".encode()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []

    async def test_async_round_trip(self, tier: Tier) -> None:
        e = entry(ttl=30)
        await tier.aset("dtc:e:default:0:async", e)
        got = await tier.aget("dtc:e:default:0:async")
        assert got is not None and got.payload == e.payload
        assert await tier.aget_generation("default") == tier.get_generation("default")
        await tier.adelete("dtc:e:default:0:async")
        assert await tier.aget("dtc:e:default:0:async") is None

    def test_generations_never_go_backwards(self, tier: Tier) -> None:
        tier.bump_generation("mono")
        assert tier.raise_generation("mono", 5) == 5
        assert tier.raise_generation("mono", 3) == 5
        assert tier.get_generation("mono") == 5
        assert tier.bump_generation("mono") == 6

    def test_scan_prefix_lists_live_entries_of_one_prefix(self, tier: Tier) -> None:
        """Exports read a namespace's generation with ``scan_prefix``: its live entries only, nothing else."""
        tier.set("dtc:e:scan:1:a", entry(b'{"a": 1}'))
        tier.set("dtc:e:scan:1:b", entry(b'{"b": 2}', ttl=60))
        tier.set("dtc:e:scan:1:gone", entry(ttl=0.05))
        tier.set("dtc:e:scan:2:a", entry())  # another generation
        tier.set("dtc:e:scan_x:1:a", entry())  # a namespace sharing the first letters
        time.sleep(0.1)
        found = dict(tier.scan_prefix("dtc:e:scan:1:"))  # type: ignore[attr-defined]
        assert sorted(found) == ["dtc:e:scan:1:a", "dtc:e:scan:1:b"]
        assert found["dtc:e:scan:1:a"].payload == b'{"a": 1}'  # type: ignore[union-attr]

    def test_storage_says_bytes_per_entry_and_compression(self, tier: Tier) -> None:
        payload = b'{"content":"' + b"a cached answer repeats itself, " * 80 + b'"}'
        tier.set("dtc:e:default:0:storage", entry(payload))
        figures = tier.storage()
        assert figures["bytes_per_entry"] > 0
        if tier.name == "l1":  # kept as it is: an L1 hit never decompresses
            assert figures["compression_ratio"] == 1.0
        else:
            assert figures["writes"] == 1
            assert figures["payload_bytes_per_entry"] == len(payload)
            assert figures["compression_ratio"] > 3  # compressed (with the shipped dictionary) and framed
        sampler = getattr(tier, "storage_sample", None)
        if sampler is not None:
            sample = sampler(50)
            assert sample["sampled"] >= 1 and sample["bytes_per_entry"] > 0
