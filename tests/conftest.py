"""Fixtures shared by the whole suite: private Redis servers, the stand-in provider, isolated settings.

Redis tests never touch a server they did not start: each session starts its own redis-server on a free port,
and tests that kill or pause Redis get a server of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# No network here (nor in most CI): LiteLLM must use its bundled price map instead of retrying a download.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import LocalRedisCluster, LocalSentinel, RedisServer


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run slow soak/clean-install tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow") or os.environ.get("DSPY_TIERED_CACHE_RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Close every cache a test body built and left open, while the servers its fixtures started still run.

    A cache left open keeps background work going (the fleet publisher's last batch at exit, a Cluster client's
    slot-map refresh): once the test's Redis is gone, that work fails after pytest's summary and says so. Closing
    here, before the fixtures' teardown, lets it end cleanly. Caches built by fixtures are their fixtures' job.
    """
    from dspy_tiered_cache import fleet

    before = set(fleet._publishers)
    yield
    for publisher in set(fleet._publishers) - before:
        if not publisher.closed:
            core = publisher._core()
            if core is not None:
                core.close()
            else:
                publisher.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's DSPY_TIERED_CACHE_* settings or writes to their ~/.cache."""
    for name in list(os.environ):
        if name.startswith("DSPY_TIERED_CACHE_") and name != "DSPY_TIERED_CACHE_REDIS_SERVER":
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private server for the session; tests that break it must use ``private_redis`` instead."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server_version(redis_server: RedisServer) -> tuple[int, int]:
    """(major, minor) of the server binary every fixture here runs (``DSPY_TIERED_CACHE_REDIS_SERVER`` may name an
    older one: CI runs the Redis tests on Redis 6.2 too)."""
    client = redis_server.client()
    try:
        major, minor = str(client.info("server")["redis_version"]).split(".")[:2]
    finally:
        client.close()
    return int(major), int(minor)


@pytest.fixture
def entry_leases(redis_server_version: tuple[int, int]) -> None:
    """Skip a test of leases on the entry key (``SET NX GET``) on a server before Redis 7, which refuses it."""
    if redis_server_version < (7, 0):
        pytest.skip(f"needs Redis 7+ (SET NX GET); this server is {redis_server_version[0]}.{redis_server_version[1]}")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean database on the session's private server."""
    redis_server.flushall()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A local 3-master Redis Cluster, built once per session (a few seconds)."""
    with LocalRedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A master, one replica and a Sentinel. Tests that fail the master over must build their own."""
    with LocalSentinel(replicas=1) as sentinel:
        yield sentinel


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A server of the test's own, to kill, pause or restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def provider() -> Iterator[StandInProvider]:
    with StandInProvider(latency=0.0) as p:
        yield p


@pytest.fixture
def disk_path(tmp_path: Path) -> Path:
    return tmp_path / "cache.sqlite3"


_SPANS: object | None = None


@pytest.fixture
def otel_spans() -> Iterator[object]:
    """The real OpenTelemetry SDK with an in-memory exporter (a tracer provider can be set once per process)."""
    global _SPANS
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if _SPANS is None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _SPANS = exporter
    assert isinstance(_SPANS, InMemorySpanExporter)
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()
