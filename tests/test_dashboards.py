"""The Grafana dashboard queries only metrics the exporter really emits.

A fresh process runs the real OpenTelemetry SDK with the Prometheus reader, drives a cache over a private Redis
(hits in L1 and L2, misses, savings) and one over a refused port (errors, an open breaker), then serves
``/metrics``; the test scrapes it over HTTP and checks every metric name in every dashboard query against it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path
from typing import Any

from dspy_tiered_cache.testing.redis_server import RedisServer

DASHBOARD = Path(__file__).resolve().parents[1] / "dashboards" / "dspy_tiered_cache.json"

EXPORTER = textwrap.dedent(
    """
    import sys, time
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    from dspy_tiered_cache import CacheCore

    redis_url, dead_url = sys.argv[1], sys.argv[2]
    core = CacheCore(redis_url=redis_url, fleet=False)
    for i in range(70):  # L1 latency is sampled 1 in 64
        key = core.key_for({"q": i})
        core.get(key)
        core.set(key, {"usage": {"prompt_tokens": 10}})
        core.get(key)
        core.stats.record_savings("gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 3}, key=key)
    core.flush()
    core.memory.clear()
    core.get(core.key_for({"q": 1}))  # an L2 hit
    dead = CacheCore(
        redis_url=dead_url, fleet=False, redis_connect_timeout_ms=50, breaker_failures=1, breaker_reset_s=600
    )
    dead.get(dead.key_for({"q": "x"}))  # a refused connection: an error, and the breaker opens
    server, thread = start_http_server(0, addr="127.0.0.1")  # a free port, chosen by the kernel
    print("ready", server.server_port, flush=True)
    sys.stdin.read()  # serve until the test closes our stdin
    """
)


def scrape_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else str(query))
    return queries


def metric_names(query: str) -> set[str]:
    """Identifiers of our metrics in a PromQL query (label names and functions never start with our prefix)."""
    return set(re.findall(r"\bdspy_tiered_cache_[A-Za-z0-9_:]*", query))


def test_every_dashboard_query_names_an_emitted_metric() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    with RedisServer() as server, socket.socket() as refused:
        refused.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
        dead_url = f"redis://127.0.0.1:{refused.getsockname()[1]}/0"
        proc = subprocess.Popen(
            [sys.executable, "-c", EXPORTER, server.url, dead_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            assert line[:1] == ["ready"], proc.stderr.read() if proc.stderr else ""
            with urllib.request.urlopen(f"http://127.0.0.1:{line[1]}/metrics", timeout=10) as response:
                scraped = response.read().decode()
        finally:
            proc.communicate(input="", timeout=30)
    emitted = scrape_names(scraped)
    queries = dashboard_queries(dashboard)
    assert queries
    for query in queries:
        named = metric_names(query)
        assert named, f"query names none of our metrics: {query}"
        assert named <= emitted, f"{sorted(named - emitted)} not emitted; emitted: {sorted(emitted)}"
    used = set().union(*(metric_names(q) for q in queries))
    # What the dashboard is for: hit rate per tier, latency, savings, errors, breaker state.
    for needed in (
        "dspy_tiered_cache_hits_total",
        "dspy_tiered_cache_lookup_duration_milliseconds_bucket",
        "dspy_tiered_cache_dollars_saved_USD_total",
        "dspy_tiered_cache_errors_total",
        "dspy_tiered_cache_breaker_state",
    ):
        assert needed in used
    assert re.search(r'dspy_tiered_cache_breaker_state\{[^}]*tier="l2"[^}]*\} 2\.0', scraped)  # the dead tier: open
    assert re.search(r'dspy_tiered_cache_errors_total\{[^}]*tier="l2"[^}]*\} [1-9]', scraped)
