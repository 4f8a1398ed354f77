"""Every cached call through either door produces one span saying which tier served it (issue 5)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dspy
import litellm
import pytest

from dspy_tiered_cache import CachedLM
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations.dspy import uninstall_dspy_cache
from dspy_tiered_cache.testing.provider import StandInProvider

MODEL = "openai/gpt-4o-mini"
API_KEY = "sk-span-test-secret"


def cache_spans(exporter: Any) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith("dspy_tiered_cache")]


def levels(exporter: Any) -> list[str]:
    return [s.attributes["cache.level"] for s in cache_spans(exporter)]


def ask(provider: StandInProvider, content: str, **extra: Any) -> Any:
    return litellm.completion(
        model=MODEL, messages=[{"role": "user", "content": content}], api_base=provider.base_url, api_key=API_KEY,
        **extra,
    )  # fmt: skip


def test_litellm_door_spans_for_every_level(
    otel_spans: Any, provider: StandInProvider, make_cache: Any, redis_url: str, tmp_path: Path
) -> None:
    redis_cache = make_cache(redis_url=redis_url, disk=False)
    ask(provider, "q")  # miss
    ask(provider, "q")  # l1
    redis_cache.flush()
    redis_cache.core.memory.clear()
    ask(provider, "q")  # l2
    ask(provider, "q", caching=False)  # bypass (no lookup, no write)
    ask(provider, "q", cache={"no-cache": True})  # bypass (refresh: written, not read)
    disk_cache = make_cache(disk=True, disk_path=tmp_path / "d.sqlite3")
    ask(provider, "d")
    disk_cache.flush()
    disk_cache.core.memory.clear()
    ask(provider, "d")  # disk
    assert levels(otel_spans) == ["miss", "l1", "l2", "bypass", "bypass", "miss", "disk"]
    span = cache_spans(otel_spans)[1]
    attrs = dict(span.attributes)
    assert attrs["cache.door"] == "litellm" and attrs["cache.hit"] is True
    assert attrs["gen_ai.request.model"] == MODEL and attrs["gen_ai.system"] == "openai"
    assert attrs["cache.namespace"] == "default" and len(attrs["cache.key_hash"]) == 12
    assert attrs["cache.tokens_saved"] > 0
    assert all(API_KEY not in str(dict(s.attributes)) for s in cache_spans(otel_spans))


def test_litellm_async_span_nests_under_the_callers_span(
    otel_spans: Any, provider: StandInProvider, make_cache: Any
) -> None:
    from opentelemetry import trace

    make_cache(disk=False)
    tracer = trace.get_tracer("test")

    async def main() -> None:
        with tracer.start_as_current_span("request handler"):
            for _ in range(2):
                await litellm.acompletion(
                    model=MODEL, messages=[{"role": "user", "content": "async"}], api_base=provider.base_url,
                    api_key=API_KEY,
                )  # fmt: skip

    asyncio.run(main())
    parent = next(s for s in otel_spans.get_finished_spans() if s.name == "request handler")
    spans = cache_spans(otel_spans)
    assert [s.attributes["cache.level"] for s in spans] == ["miss", "l1"]
    assert all(s.context.trace_id == parent.context.trace_id for s in spans)


@pytest.fixture
def dspy_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    yield
    uninstall_dspy_cache()
    dspy.configure(lm=None)


def test_dspy_door_spans_for_every_level(
    otel_spans: Any, provider: StandInProvider, redis_url: str, tmp_path: Path, dspy_state: None
) -> None:
    base = dspy.LM(MODEL, api_base=provider.base_url, api_key=API_KEY)
    redis_cache = CacheCore(redis_url=redis_url, disk=False)  # a core: this DSPy test runs on every LiteLLM
    lm = CachedLM(base, cache=redis_cache)
    dspy.configure(lm=lm)
    qa = dspy.Predict("question -> answer")
    qa(question="span?")  # miss
    qa(question="span?")  # l1
    redis_cache.flush()
    assert redis_cache.memory is not None
    redis_cache.memory.clear()
    qa(question="span?")  # l2
    lm("no cache", cache=False)  # bypass
    disk_cache = CacheCore(disk=True, disk_path=tmp_path / "dspy.sqlite3")
    disk_lm = CachedLM(base, cache=disk_cache)
    disk_lm("disk")
    disk_cache.flush()
    assert disk_cache.memory is not None
    disk_cache.memory.clear()
    disk_lm("disk")  # disk
    assert levels(otel_spans) == ["miss", "l1", "l2", "bypass", "miss", "disk"]
    attrs = dict(cache_spans(otel_spans)[1].attributes)
    assert attrs["cache.door"] == "dspy" and attrs["gen_ai.request.model"] == MODEL
    assert attrs["cache.tokens_saved"] > 0
    assert all(API_KEY not in str(dict(s.attributes)) for s in cache_spans(otel_spans))
    redis_cache.close()
    disk_cache.close()


def test_dspy_async_and_threaded_calls_get_spans(
    otel_spans: Any, provider: StandInProvider, tmp_path: Path, dspy_state: None
) -> None:
    lm = CachedLM(dspy.LM(MODEL, api_base=provider.base_url, api_key=API_KEY),
                  cache=CacheCore(disk=False))  # fmt: skip
    dspy.configure(lm=lm)
    qa = dspy.Predict("question -> answer")

    async def main() -> None:
        await qa.acall(question="async span")
        await qa.acall(question="async span")

    asyncio.run(main())
    parallel = dspy.Parallel(num_threads=4)
    parallel([(qa, dspy.Example(question=f"t{i % 2}").with_inputs("question")) for i in range(4)])
    found = levels(otel_spans)
    assert found[:2] == ["miss", "l1"]
    assert len(found) == 6 and set(found[2:]) <= {"miss", "l1", "joined"}
    assert found[2:].count("miss") == 2  # one upstream call per distinct question
