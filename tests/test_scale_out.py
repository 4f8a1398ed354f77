"""Failover on Redis Cluster and Sentinel: callers see no exceptions while it happens, and hits resume after."""

from __future__ import annotations

import time
from typing import Any

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.testing.redis_server import LocalRedisCluster, LocalSentinel


def _drive(core: CacheCore, keys: list[str], seconds: float) -> tuple[int, int, list[str]]:
    """Read and write through the core for a while; returns (calls, hits, exceptions)."""
    calls = hits = 0
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        key = keys[i % len(keys)]
        i += 1
        try:
            if core.get(key) is not None:
                hits += 1
            else:
                core.set(key, {"value": key})
            calls += 1
        except Exception as exc:  # the property under test: this never happens
            errors.append(repr(exc))
        time.sleep(0.002)
    return calls, hits, errors


def _shared_hit(core: CacheCore, key: str, deadline_s: float) -> bool:
    """Until a freshly written key can be read back through the core (whose only tier is the shared one)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        core.set(key, {"after": "failover"})
        core.flush(1)
        if core.get(key) is not None:
            return True
        time.sleep(0.2)
    return False


def test_cluster_master_failover_is_invisible_to_callers() -> None:
    with LocalRedisCluster(masters=3, replicas=1, node_timeout_ms=1000) as cluster:
        core = CacheCore(
            redis_url=cluster.url,
            redis_cluster=True,
            disk=False,
            memory=False,
            breaker_reset_s=0.3,
            redis_timeout_ms=200,
        )
        keys = [core.key_for({"q": i}) for i in range(60)]
        for k in keys:
            core.set(k, {"value": k})
        core.flush(5)
        time.sleep(0.5)  # let the replicas catch up
        cluster.kill_node(0)
        calls, _hits, errors = _drive(core, keys, seconds=4.0)
        assert errors == []
        assert calls > 100
        assert _shared_hit(core, core.key_for({"q": "after"}), deadline_s=15)
        survivors = sum(core.get(k) is not None for k in keys)
        assert survivors > len(keys) * 0.9  # the promoted replica holds the dead master's keys
        core.close()


def test_sentinel_failover_is_invisible_to_callers() -> None:
    with LocalSentinel(replicas=1, down_after_ms=500, failover_timeout_ms=2000) as sentinel:
        core = CacheCore(
            redis_url=sentinel.sentinel_url, disk=False, memory=False, breaker_reset_s=0.3, redis_timeout_ms=200
        )
        keys = [core.key_for({"q": i}) for i in range(20)]
        for k in keys:
            core.set(k, {"value": k})
        core.flush(5)
        time.sleep(0.3)
        assert sentinel.master is not None
        sentinel.master.kill()
        calls, _hits, errors = _drive(core, keys, seconds=3.0)
        assert errors == []
        assert calls > 50  # the breaker kept calls flowing (misses) instead of blocking on the dead master
        assert _shared_hit(core, core.key_for({"q": "after"}), deadline_s=20)
        info: Any = core.tiers[-1].client.info("replication")  # type: ignore[attr-defined]
        assert info["role"] == "master"
        core.close()


def test_invalidation_reaches_other_instances_through_a_cluster(redis_cluster: LocalRedisCluster) -> None:
    redis_cluster.flushall()
    settings: dict[str, Any] = {"redis_url": redis_cluster.url, "redis_cluster": True, "disk": False,
                                "generation_refresh_s": 60.0}  # fmt: skip
    mine, theirs = CacheCore(**settings), CacheCore(**settings)
    assert theirs._bus is not None and theirs._bus.wait_connected(5)
    key = mine.key_for({"q": "cluster-coherence"})
    mine.set(key, {"a": 1})
    mine.flush()
    assert theirs.get(key) is not None and theirs.get(key).level == "l1"  # type: ignore[union-attr]
    mine.invalidate_namespace()
    deadline = time.monotonic() + 1.0
    while theirs.get(theirs.key_for({"q": "cluster-coherence"})) is not None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert theirs.get(theirs.key_for({"q": "cluster-coherence"})) is None
    mine.close()
    theirs.close()
