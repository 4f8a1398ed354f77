from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from opentelemetry import trace

from dspy_tiered_cache import CacheCore

REQUEST = {"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_call_span_nests_and_says_which_tier(otel_spans: Any) -> None:
    core = CacheCore(disk=False)
    key = core.key_for(REQUEST)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("caller"):
        with core.trace_call("test", model="openai/gpt-4o-mini") as call:
            call.record("miss", key=key)
        core.set(key, {"usage": {"prompt_tokens": 3}})
        with core.trace_call("test", model="openai/gpt-4o-mini") as call:
            hit = core.get(key)
            assert hit is not None
            call.record(hit.level, key=key, tokens_saved=3)
    spans = {s.name: s for s in otel_spans.get_finished_spans() if s.name != "caller"}
    finished = [s for s in otel_spans.get_finished_spans() if s.name.startswith("dspy_tiered_cache")]
    assert len(finished) == 2 and spans
    caller = next(s for s in otel_spans.get_finished_spans() if s.name == "caller")
    miss, hit_span = finished
    assert miss.attributes["cache.level"] == "miss" and hit_span.attributes["cache.level"] == "l1"
    assert hit_span.attributes["cache.tokens_saved"] == 3
    assert hit_span.attributes["gen_ai.system"] == "openai"
    assert hit_span.attributes["gen_ai.request.model"] == "openai/gpt-4o-mini"
    assert hit_span.attributes["cache.namespace"] == "default"
    assert hit_span.parent is not None and hit_span.parent.span_id == caller.context.span_id
    assert "sk-" not in str(dict(hit_span.attributes))


def test_tier_failure_is_flagged_on_the_span(otel_spans: Any) -> None:
    core = CacheCore(disk=False, redis_url="redis://127.0.0.1:1", memory=False)
    key = core.key_for(REQUEST)
    with core.trace_call("test") as call:
        call.record("miss" if core.get(key) is None else "l2")
    span = next(s for s in otel_spans.get_finished_spans() if s.name.startswith("dspy_tiered_cache"))
    assert span.attributes["cache.error_tier"] == "l2"
    assert "ConnectionError" in span.attributes["cache.error"]


def test_without_an_sdk_the_call_span_is_a_shared_noop() -> None:
    """The no-op path is what every user without an SDK pays on each hit (benchmarks/core.py measures it)."""
    code = (
        "from dspy_tiered_cache import CacheCore, telemetry\n"
        "core = CacheCore(disk=False)\n"
        "with core.trace_call('x', model='m') as call:\n"
        "    assert call is telemetry.NOOP\n"
        "    call.record('l1', key='k:e:x', tokens_saved=1)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_scrape_through_the_prometheus_exporter() -> None:
    pytest.importorskip("opentelemetry.exporter.prometheus")
    from opentelemetry import metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import start_http_server

    # What a user does (README, "Metrics to Prometheus"): install the exporter as the global meter provider.
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    port = _free_port()
    start_http_server(port, addr="127.0.0.1")
    core = CacheCore(disk=False, namespace="scrape-test")
    key = core.key_for(REQUEST)
    core.get(key)
    core.set(key, {"usage": {"prompt_tokens": 7, "completion_tokens": 5}})
    for _ in range(3):
        core.get(key)
    core.stats.record_savings("gpt-4o-mini", {"prompt_tokens": 7, "completion_tokens": 5})
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    hits = [
        line
        for line in body.splitlines()
        if line.startswith("dspy_tiered_cache_hits") and 'namespace="scrape-test"' in line and 'tier="l1"' in line
    ]
    assert hits and float(hits[0].rsplit(" ", 1)[1]) == 3.0
    assert "dspy_tiered_cache_tokens_saved" in body
    assert "dspy_tiered_cache_memory_entries" in body
