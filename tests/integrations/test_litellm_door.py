"""The LiteLLM door end to end: real LiteLLM, real HTTP to the stand-in provider, real Redis servers.

Every test counts the requests that reached the provider: a hit is a call that did not reach it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no 5-10 s cost-map download at import

import litellm
import orjson
from litellm.integrations.custom_logger import CustomLogger

from dspy_tiered_cache.codec import FrameCodec
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations.litellm import UNCACHEABLE_KEY, TieredCache, namespace_name
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

MODEL = "openai/gpt-4o-mini"
EMBED_MODEL = "openai/text-embedding-3-small"
API_KEY = "sk-test-secret-0123456789"

MakeCache = Callable[..., TieredCache]

# LiteLLM's precise overloads are not what these tests are about: call it through loosely typed names.
completion: Callable[..., Any] = litellm.completion
acompletion: Callable[..., Coroutine[Any, Any, Any]] = litellm.acompletion
text_completion: Callable[..., Any] = litellm.text_completion
atext_completion: Callable[..., Coroutine[Any, Any, Any]] = litellm.atext_completion
embedding: Callable[..., Any] = litellm.embedding
aembedding: Callable[..., Coroutine[Any, Any, Any]] = litellm.aembedding
stream_chunk_builder: Callable[..., Any] = litellm.stream_chunk_builder


def chat(provider: StandInProvider, content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "api_base": provider.base_url,
        "api_key": API_KEY,
        **extra,
    }


def hit(response: Any) -> bool:
    return bool(getattr(response, "_hidden_params", {}).get("cache_hit"))


# -------------------------------------------------------------------------------------------- basic hits


def test_sync_completion_hit_is_marked_and_counted(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache = make_cache()
    first = completion(**chat(provider))
    second = completion(**chat(provider))
    assert provider.request_count == 1
    assert not hit(first) and hit(second)
    assert second.id == first.id  # the stand-in gives every answer a fresh id: same id = served from cache
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second._hidden_params["cache_key"].startswith("dtc:e:default:")
    stats = cache.stats()
    assert stats["hits"] == 1
    assert stats["prompt_tokens_saved"] == first.usage.prompt_tokens
    assert stats["completion_tokens_saved"] == first.usage.completion_tokens
    assert stats["dollars_saved"] > 0  # gpt-4o-mini has a price in LiteLLM's cost map


def test_hits_report_zero_cost_to_callbacks(provider: StandInProvider, make_cache: MakeCache) -> None:
    seen: list[tuple[Any, Any]] = []

    class Recorder(CustomLogger):
        def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            seen.append((kwargs.get("cache_hit"), kwargs.get("response_cost")))

    previous = litellm.callbacks
    litellm.callbacks = [Recorder()]
    try:
        make_cache()
        completion(**chat(provider))
        completion(**chat(provider))
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:  # sync callbacks run in LiteLLM's thread pool
            time.sleep(0.01)
    finally:
        litellm.callbacks = previous
    assert provider.request_count == 1
    assert len(seen) == 2
    miss, cached = sorted(seen, key=lambda s: bool(s[0]))  # sync callbacks run in a pool: either may land first
    assert miss[1] > 0
    assert cached == (True, 0.0)


async def test_acompletion_repeated_at_once_hits(provider: StandInProvider, make_cache: MakeCache) -> None:
    """LiteLLM writes from a task it does not await; the very next identical call must still hit."""
    make_cache()
    first = await acompletion(**chat(provider, "async now"))
    second = await acompletion(**chat(provider, "async now"))
    assert provider.request_count == 1
    assert hit(second) and second.id == first.id


def test_text_completion_sync_and_async(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    kwargs = {
        "model": "openai/gpt-3.5-turbo-instruct",
        "prompt": "Say hi",
        "api_base": provider.base_url,
        "api_key": API_KEY,
    }
    first = text_completion(**kwargs)
    second = text_completion(**kwargs)
    assert provider.request_count == 1
    assert hit(second) and second.choices[0].text == first.choices[0].text

    async def run() -> Any:
        other = {**kwargs, "prompt": "Say bye"}
        await atext_completion(**other)
        return await atext_completion(**other)

    again = asyncio.run(run())
    assert provider.request_count == 2
    assert hit(again)


def test_long_conversations_are_cached(provider: StandInProvider, make_cache: MakeCache) -> None:
    """LiteLLM's default max_messages=4 never caches a 5+ message conversation; ours has no limit."""
    make_cache()
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(9)]
    kwargs = {**chat(provider), "messages": messages}
    completion(**kwargs)
    assert hit(completion(**kwargs))
    assert provider.request_count == 1


def test_api_key_is_not_part_of_the_key(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    completion(**chat(provider))
    other_key = {**chat(provider), "api_key": "sk-another-key"}
    assert hit(completion(**other_key))
    assert provider.request_count == 1
    # a parameter that changes the answer does change the key
    completion(**chat(provider, temperature=0.3))
    assert provider.request_count == 2


def test_streamed_and_plain_requests_share_entries(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    plain = completion(**chat(provider, "share me"))
    chunks = list(completion(**chat(provider, "share me"), stream=True))
    assert provider.request_count == 1
    rebuilt = stream_chunk_builder(chunks)
    assert rebuilt.choices[0].message.content == plain.choices[0].message.content


# ------------------------------------------------------------------------------------------ cache controls


def test_no_cache_skips_the_read_and_refreshes(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    first = completion(**chat(provider))
    refreshed = completion(**chat(provider, cache={"no-cache": True}))
    assert provider.request_count == 2 and not hit(refreshed)
    after = completion(**chat(provider))
    assert hit(after) and after.id == refreshed.id != first.id


async def test_no_cache_async(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    await acompletion(**chat(provider))
    refreshed = await acompletion(**chat(provider, cache={"no-cache": True}))
    assert provider.request_count == 2 and not hit(refreshed)
    after = await acompletion(**chat(provider))
    assert hit(after) and after.id == refreshed.id


def test_no_store(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    completion(**chat(provider, cache={"no-store": True}))
    completion(**chat(provider))
    assert provider.request_count == 2
    assert hit(completion(**chat(provider)))
    assert provider.request_count == 2


async def test_no_store_async(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    await acompletion(**chat(provider, cache={"no-store": True}))
    second = await acompletion(**chat(provider))
    assert provider.request_count == 2 and not hit(second)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_per_call_ttl(provider: StandInProvider, make_cache: MakeCache, mode: str) -> None:
    make_cache()

    def call(**extra: Any) -> Any:
        if mode == "sync":
            return completion(**chat(provider, f"ttl {mode}", **extra))
        return asyncio.run(acompletion(**chat(provider, f"ttl {mode}", **extra)))

    call(cache={"ttl": 0.3})
    assert hit(call())
    time.sleep(0.4)
    assert not hit(call())
    assert provider.request_count == 2


def test_default_ttl_from_constructor(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache(ttl=0.3)
    completion(**chat(provider))
    assert hit(completion(**chat(provider)))
    time.sleep(0.4)
    assert not hit(completion(**chat(provider)))


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_s_maxage(provider: StandInProvider, make_cache: MakeCache, mode: str) -> None:
    make_cache()

    def call(**extra: Any) -> Any:
        if mode == "sync":
            return completion(**chat(provider, f"age {mode}", **extra))
        return asyncio.run(acompletion(**chat(provider, f"age {mode}", **extra)))

    call()
    time.sleep(0.3)
    assert hit(call(cache={"s-maxage": 10}))
    assert not hit(call(cache={"s-maxage": 0.2}))  # too old for this caller: refetched (and re-stored)
    assert provider.request_count == 2
    assert hit(call(cache={"s-maxage": 0.2}))


def test_namespaces_and_invalidation(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache = make_cache()
    completion(**chat(provider, cache={"namespace": "prompt-v1"}))
    assert hit(completion(**chat(provider, cache={"namespace": "prompt-v1"})))
    assert not hit(completion(**chat(provider, cache={"namespace": "prompt-v2"})))
    assert provider.request_count == 2
    # LiteLLM namespaces are free text; ours are mapped to a valid name, and the metadata spelling works too
    completion(**chat(provider, cache={"namespace": "team:a/b"}))
    assert hit(completion(**chat(provider, metadata={"redis_namespace": "team:a/b"})))
    assert provider.request_count == 3
    cache.invalidate_namespace("prompt-v1")
    assert not hit(completion(**chat(provider, cache={"namespace": "prompt-v1"})))
    assert hit(completion(**chat(provider, cache={"namespace": "prompt-v2"})))
    cache.invalidate_namespace("team:a/b")
    assert not hit(completion(**chat(provider, cache={"namespace": "team:a/b"})))
    assert provider.request_count == 5
    assert namespace_name("team:a/b").startswith("ns-")


def test_caching_false_neither_reads_nor_writes(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    completion(**chat(provider, caching=False))
    assert not hit(completion(**chat(provider)))  # LiteLLM alone would have stored the first answer
    assert not hit(completion(**chat(provider, caching=False)))
    assert provider.request_count == 3


async def test_namespace_and_caching_false_async(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache = make_cache()
    await acompletion(**chat(provider, cache={"namespace": "v1"}))
    assert hit(await acompletion(**chat(provider, cache={"namespace": "v1"})))
    assert not hit(await acompletion(**chat(provider, cache={"namespace": "v2"})))
    cache.invalidate_namespace("v1")
    assert not hit(await acompletion(**chat(provider, cache={"namespace": "v1"})))
    assert provider.request_count == 3
    await acompletion(**chat(provider, "not cached", caching=False))
    assert not hit(await acompletion(**chat(provider, "not cached")))
    assert provider.request_count == 5


def test_default_off_mode_opt_in(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache(mode="default_off")
    completion(**chat(provider))
    completion(**chat(provider))
    assert provider.request_count == 2
    completion(**chat(provider, cache={"use-cache": True}))
    assert hit(completion(**chat(provider, cache={"use-cache": True})))
    assert not hit(completion(**chat(provider)))
    assert provider.request_count == 4

    async def run() -> Any:
        kwargs = chat(provider, "opt in async", cache={"use-cache": True})
        await acompletion(**kwargs)
        return await acompletion(**kwargs)

    assert hit(asyncio.run(run()))
    assert provider.request_count == 5


def test_uncacheable_request_goes_upstream(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache = make_cache()
    key = cache.get_cache_key(model=MODEL, messages=[{"role": "user", "content": object()}])
    assert key == UNCACHEABLE_KEY
    assert cache.stats()["uncacheable"] == 1
    assert cache.cache.get_cache(UNCACHEABLE_KEY) is None  # type: ignore[no-untyped-call]


# -------------------------------------------------------------------------------------------- embeddings


async def test_aembedding_caches_each_input(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache = make_cache()
    common = {"model": EMBED_MODEL, "api_base": provider.base_url, "api_key": API_KEY}
    first = await aembedding(input=["alpha", "beta"], **common)
    partial = await aembedding(input=["beta", "gamma", "alpha"], **common)
    assert provider.request_count == 2
    assert provider.requests_for("embeddings")[-1]["input"] == ["gamma"]  # only the new input went upstream
    assert hit(partial)
    assert partial.data[0]["embedding"] == first.data[1]["embedding"]
    assert partial.data[2]["embedding"] == first.data[0]["embedding"]
    assert partial.data[1]["embedding"] != first.data[0]["embedding"]
    full = await aembedding(input=["gamma", "alpha"], **common)
    assert provider.request_count == 2 and hit(full)
    assert [d["index"] for d in full.data] == [0, 1]
    assert cache.stats()["prompt_tokens_saved"] > 0


def test_sync_embedding(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    common = {"model": EMBED_MODEL, "api_base": provider.base_url, "api_key": API_KEY}
    first = embedding(input=["one", "two"], **common)
    second = embedding(input=["one", "two"], **common)
    assert provider.request_count == 1 and hit(second)
    assert second.data[1]["embedding"] == first.data[1]["embedding"]  # floats round-trip exactly through JSON


# -------------------------------------------------------------------------------------------- streaming

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


def _assembled(chunks: list[Any]) -> tuple[Any, Any, Any]:
    built = stream_chunk_builder(chunks)
    message = built.choices[0].message
    calls = [(c.function.name, c.function.arguments) for c in message.tool_calls or []]
    usage = (built.usage.prompt_tokens, built.usage.completion_tokens, built.usage.total_tokens)
    return message.content, calls, usage


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_calls"])
def test_sync_stream_replay_equals_original(provider: StandInProvider, make_cache: MakeCache, tools: bool) -> None:
    make_cache()
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    if tools:
        extra |= {"tools": TOOLS, "tool_choice": "required"}
    original = list(completion(**chat(provider, "stream please", **extra)))
    replay = list(completion(**chat(provider, "stream please", **extra)))
    assert provider.request_count == 1
    assert _assembled(replay) == _assembled(original)
    content, calls, usage = _assembled(original)
    assert (calls if tools else content) and usage[0] > 0


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_calls"])
async def test_async_stream_replay_equals_original(
    provider: StandInProvider, make_cache: MakeCache, tools: bool
) -> None:
    make_cache()
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    if tools:
        extra |= {"tools": TOOLS, "tool_choice": "required"}

    async def consume() -> list[Any]:
        stream = await acompletion(**chat(provider, "astream please", **extra))
        return [chunk async for chunk in stream]

    original = await consume()
    replay = await consume()  # at once: LiteLLM's write is two tasks away
    assert provider.request_count == 1
    assert _assembled(replay) == _assembled(original)


def test_abandoned_stream_is_not_stored(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    stream = completion(**chat(provider, "long answer " * 20), stream=True)
    next(iter(stream))  # read one chunk, then walk away
    del stream
    completion(**chat(provider, "long answer " * 20))
    assert provider.request_count == 2


# ---------------------------------------------------------------------------------------- stored values


def test_stored_value_is_plain_json_without_secrets(
    provider: StandInProvider, make_cache: MakeCache, redis_url: str, redis_server: RedisServer
) -> None:
    cache = make_cache(redis_url=redis_url)
    response = completion(**chat(provider))
    assert cache.flush()
    client = redis_server.client()
    keys = [k for k in client.keys("dtc:e:*")]
    assert len(keys) == 1
    raw = client.get(keys[0])
    assert isinstance(raw, bytes)
    assert API_KEY.encode() not in raw and API_KEY.encode() not in keys[0]
    entry = FrameCodec(secret=None, compression_threshold=0, max_bytes=1 << 24).loads(raw)
    value = orjson.loads(entry.payload)  # JSON, never pickle
    assert value["__dtc_litellm__"] == 1
    assert value["r"]["id"] == response.id
    assert value["r"]["choices"][0]["message"]["content"] == response.choices[0].message.content


def test_foreign_value_under_our_key_is_a_miss(provider: StandInProvider, make_cache: MakeCache) -> None:
    cache = make_cache()
    key = cache.get_cache_key(**chat(provider))
    cache.core.set(key, {"timestamp": 0, "response": "__import__('os').system('echo pwned')"})
    assert not hit(completion(**chat(provider)))
    assert provider.request_count == 1


# -------------------------------------------------------------------------------------------- Redis tier


def test_redis_tier_is_shared_between_cores(provider: StandInProvider, make_cache: MakeCache, redis_url: str) -> None:
    writer = make_cache(redis_url=redis_url)
    completion(**chat(provider))
    assert writer.flush()
    reader = make_cache(redis_url=redis_url)  # a fresh process-like core: empty memory tier
    again = completion(**chat(provider))
    assert hit(again) and provider.request_count == 1
    assert reader.stats()["tiers"]["l2"]["hits"] == 1
    assert hit(completion(**chat(provider)))  # promoted to memory
    assert reader.stats()["tiers"]["l1"]["hits"] == 1


_CHILD = textwrap.dedent(
    """
    import json, os, sys
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from dspy_tiered_cache.integrations.litellm import TieredCache
    litellm.cache = TieredCache()  # settings from DSPY_TIERED_CACHE_* (REDIS_URL, DISK=false)
    base, prompts = sys.argv[1], json.loads(sys.argv[2])
    out = []
    for p in prompts:
        r = litellm.completion(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": p}],
                               api_base=base, api_key="sk-child")
        out.append([r.id, bool(r._hidden_params.get("cache_hit"))])
    print(json.dumps(out))
    """
)


def test_second_process_makes_no_upstream_request(
    provider: StandInProvider, make_cache: MakeCache, redis_url: str, tmp_path: Path
) -> None:
    cache = make_cache(redis_url=redis_url)
    prompts = [f"shared {i}" for i in range(3)]
    ids = [completion(**chat(provider, p)).id for p in prompts]
    assert cache.flush()
    env = {**os.environ, "DSPY_TIERED_CACHE_REDIS_URL": redis_url, "DSPY_TIERED_CACHE_DISK": "false"}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, provider.base_url, json.dumps(prompts)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert provider.request_count == 3  # only the parent's three calls
    assert result == [[i, True] for i in ids]


def _door_overhead(cache: TieredCache, provider: StandInProvider, prompt: str) -> float:
    """Seconds the door adds to one missed call: the lookup and the store LiteLLM makes around it."""
    kwargs = chat(provider, prompt)
    started = time.perf_counter()
    cache.get_cache(**kwargs)
    cache.add_cache(  # type: ignore[no-untyped-call]
        '{"id": "chatcmpl-x", "choices": [{"index": 0, "message": {"content": "x"}}]}', **kwargs
    )
    return time.perf_counter() - started


TIMEOUT_MS = 100


def _break(server: RedisServer, failure: str) -> None:
    if failure == "killed":
        server.kill()  # connection refused: fails fast
    else:
        server.pause()  # SIGSTOP: the kernel still accepts, nothing answers: every operation times out


@pytest.mark.parametrize("failure", ["killed", "hanging"])
def test_redis_failure_costs_at_most_one_timeout_then_nothing(
    provider: StandInProvider, make_cache: MakeCache, private_redis: RedisServer, failure: str
) -> None:
    cache = make_cache(redis_url=private_redis.url, redis_timeout_ms=TIMEOUT_MS, redis_connect_timeout_ms=TIMEOUT_MS,
                       breaker_reset_s=30, generation_refresh_s=60)  # fmt: skip
    completion(**chat(provider, "before"))  # also reads the namespace generation (fresh for 60 s)
    assert cache.flush()
    _break(private_redis, failure)
    try:
        overheads = [_door_overhead(cache, provider, f"during {i}") for i in range(30)]
        assert max(overheads) < TIMEOUT_MS / 1000 + 0.03, overheads  # never more than one operation timeout
        # only the calls that found the breaker closed can wait on Redis
        assert sum(o > TIMEOUT_MS / 2000 for o in overheads) <= cache.core.settings.breaker_failures, overheads
        after_open = sorted(overheads[10:])  # breaker open: < 1 ms per call (p50 and p80; the GIL is shared
        assert after_open[len(after_open) // 2] < 0.001, after_open  # with LiteLLM's logging threads)
        assert after_open[len(after_open) * 4 // 5] < 0.001, after_open
        assert cache.stats()["tiers"]["l2"]["skipped_breaker_open"] > 0
        # whole calls are served: new ones from upstream, the earlier answer from the memory tier
        assert completion(**chat(provider, "during the outage")).choices[0].message.content
        assert hit(completion(**chat(provider, "before")))
    finally:
        if failure == "hanging":
            private_redis.resume()


def test_hanging_redis_first_call_costs_at_most_one_timeout(
    provider: StandInProvider, make_cache: MakeCache, private_redis: RedisServer
) -> None:
    cache = make_cache(redis_url=private_redis.url, redis_timeout_ms=TIMEOUT_MS, redis_connect_timeout_ms=TIMEOUT_MS)
    private_redis.pause()
    try:
        first = _door_overhead(cache, provider, "first call ever")
        assert first < TIMEOUT_MS / 1000 + 0.03, first
    finally:
        private_redis.resume()


async def test_redis_killed_mid_test_async(
    provider: StandInProvider, make_cache: MakeCache, private_redis: RedisServer
) -> None:
    cache = make_cache(redis_url=private_redis.url, redis_timeout_ms=100, redis_connect_timeout_ms=100,
                       breaker_failures=2, breaker_reset_s=30)  # fmt: skip
    await acompletion(**chat(provider, "async before"))
    private_redis.kill()
    started = time.perf_counter()
    for i in range(5):
        response = await acompletion(**chat(provider, f"async during {i}"))
        assert response.choices[0].message.content
    assert time.perf_counter() - started < 2.0
    assert hit(await acompletion(**chat(provider, "async before")))
    assert provider.request_count == 6
    assert cache.stats()["tiers"]["l2"]["errors"] >= 1


def test_redis_restart_is_picked_up_again(
    provider: StandInProvider, make_cache: MakeCache, private_redis: RedisServer
) -> None:
    cache = make_cache(redis_url=private_redis.url, redis_timeout_ms=100, breaker_failures=1, breaker_reset_s=0.2)
    private_redis.kill()
    completion(**chat(provider, "while down"))
    private_redis.restart()
    time.sleep(0.3)  # breaker half-opens
    completion(**chat(provider, "after restart"))
    assert cache.flush()
    fresh = CacheCore(redis_url=private_redis.url, disk=False, memory=False)
    try:
        key = cache.get_cache_key(**chat(provider, "after restart"))
        assert fresh.get(key) is not None
    finally:
        fresh.close()


def test_disk_tier_without_redis(provider: StandInProvider, make_cache: MakeCache) -> None:
    """Without a Redis URL the embedded disk tier is L2: a new core (a new process) reads it."""
    first = make_cache(disk=True)
    completion(**chat(provider))
    assert first.flush()
    second = TieredCache(core=CacheCore(disk=True, disk_path=first.core.settings.disk_path))
    litellm.cache = second
    try:
        assert hit(completion(**chat(provider)))
        assert provider.request_count == 1
        assert second.stats()["tiers"]["disk"]["hits"] == 1
    finally:
        second.close()


# -------------------------------------------------------------------------------------------- single-flight


def test_concurrent_identical_calls_make_one_upstream_call(provider: StandInProvider, make_cache: MakeCache) -> None:
    import threading

    cache = make_cache()
    provider.latency = 0.3
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(completion(**chat(provider, "stampede"), max_retries=0)))
        for _ in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 10 and provider.request_count == 1
    assert len({r.choices[0].message.content for r in results}) == 1
    assert cache.stats()["joined_in_flight"] == 9


async def test_concurrent_identical_acompletions_make_one_upstream_call(
    provider: StandInProvider, make_cache: MakeCache
) -> None:
    make_cache()
    provider.latency = 0.3
    results = await asyncio.gather(*(acompletion(**chat(provider, "async stampede")) for _ in range(10)))
    assert provider.request_count == 1
    assert len({r.choices[0].message.content for r in results}) == 1


def test_a_failing_leader_releases_its_followers(provider: StandInProvider, make_cache: MakeCache) -> None:
    import threading

    make_cache()
    provider.latency = 0.3
    provider.fail_next(1, status=400)  # the leader's call fails (no retry for a 400)
    outcomes: list[str] = []

    def call() -> None:
        try:
            completion(**chat(provider, "leader fails"), max_retries=0)
            outcomes.append("ok")
        except Exception:
            outcomes.append("error")

    threads = [threading.Thread(target=call) for _ in range(5)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("error") == 1 and outcomes.count("ok") == 4
    assert time.perf_counter() - started < 30  # followers did not wait out single_flight_timeout (120 s)


def _door_worker(redis_url: str, base_url: str, threads: int, ready: Any, go: Any, results: Any) -> None:
    import threading

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm as child_litellm

    from dspy_tiered_cache import TieredCache as ChildCache

    child_litellm.cache = ChildCache(redis_url=redis_url, disk=False)
    ready.put(True)
    answers: list[str] = []

    def call() -> None:
        r = child_litellm.completion(
            model=MODEL, messages=[{"role": "user", "content": "cross-process stampede"}], api_base=base_url,
            api_key=API_KEY, max_retries=0,
        )  # fmt: skip
        answers.append(r.choices[0].message.content)

    go.wait(60)
    pool = [threading.Thread(target=call) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(60)
    child_litellm.cache.flush()
    results.put(answers)


def test_identical_misses_across_processes_make_one_upstream_call(provider: StandInProvider, redis_url: str) -> None:
    import multiprocessing

    provider.latency = 1.0
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_door_worker, args=(redis_url, provider.base_url, 8, ready, go, results)) for _ in range(3)
    ]
    for p in procs:
        p.start()
    for _ in procs:  # each child has imported LiteLLM (seconds) and built its cache: the burst starts together
        ready.get(timeout=90)
    go.set()
    answers = [a for _ in procs for a in results.get(timeout=90)]
    for p in procs:
        p.join(30)
    assert len(answers) == 24 and len(set(answers)) == 1
    assert provider.request_count == 1
