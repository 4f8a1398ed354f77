"""Upstream errors pass through the cache as if it were not there.

The rule, cell by cell (failure kind x door x sync/async x retries): the exception that reaches the caller has the
type it has without the cache, arrives within the uncached call's time plus ``SLACK_S``, after as many upstream
attempts (the stand-in provider counts them), and no flight, lease or pending-write record outlives the call: the
same request answers at once after the provider recovers. Each cell measures the uncached call and the cached one
in the same run; ``pytest -s`` prints the table (the issue note's "ours vs no cache" figures).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import litellm

from dspy_tiered_cache import cached
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations.dspy import CachedLM
from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.testing.provider import StandInProvider

MODEL = "openai/gpt-4o-mini"
API_KEY = "sk-test-errors-0123456789"
SLACK_S = 1.0
CLIENT_TIMEOUT_S = 0.3

#: failure kind -> (provider mode, its options)
KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "500": ("status", {"status": 500, "retry_after_ms": 5}),
    "429": ("status", {"status": 429, "retry_after_ms": 5}),
    "timeout": ("hang", {"hang_s": 5.0}),
    "refused": ("refuse", {}),
    "midstream": ("midstream", {}),
}

pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing OpenAI-style message dictionaries:DeprecationWarning",
    "ignore::pydantic.warnings.PydanticDeprecatedSince20",
)

FIGURES: list[tuple[str, float, float, int, int]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_figures() -> Iterator[None]:
    yield
    if FIGURES:
        print("\n\nprovider errors: seconds until the caller gets the error (ours vs no cache), upstream attempts")
        print(f"{'cell':58} {'no cache':>9} {'ours':>7} {'attempts':>9}")
        for cell, bare, ours, bare_n, ours_n in FIGURES:
            print(f"{cell:58} {bare:9.3f} {ours:7.3f} {bare_n:>4}/{ours_n:<4}")


@pytest.fixture(autouse=True)
def _quiet_litellm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setattr(litellm, "suppress_debug_info", True)
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    previous = litellm.cache
    yield
    litellm.cache = previous
    litellm.num_retries = None  # LiteLLM's retry path resets this global; keep tests independent


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def fail(provider: StandInProvider, kind: str) -> None:
    provider.reset()
    mode, options = KINDS[kind]
    provider.set_failure(mode, **options)


def run(provider: StandInProvider, kind: str, call: Callable[[], Any]) -> tuple[type[BaseException], float, int]:
    fail(provider, kind)
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as caught:
            call()
        return caught.type, time.monotonic() - started, provider.request_count
    finally:
        provider.recover()


async def arun(
    provider: StandInProvider, kind: str, call: Callable[[], Awaitable[Any]]
) -> tuple[type[BaseException], float, int]:
    fail(provider, kind)
    started = time.monotonic()
    try:
        with pytest.raises(Exception) as caught:
            await call()
        return caught.type, time.monotonic() - started, provider.request_count
    finally:
        provider.recover()


def compare(
    cell: str, bare: tuple[type[BaseException], float, int], ours: tuple[type[BaseException], float, int]
) -> None:
    FIGURES.append((cell, bare[1], ours[1], bare[2], ours[2]))
    assert ours[0] is bare[0], f"{cell}: {ours[0].__name__} instead of {bare[0].__name__}"
    assert ours[2] == bare[2], f"{cell}: {ours[2]} upstream attempts instead of {bare[2]}"
    assert ours[1] <= bare[1] + SLACK_S, f"{cell}: {ours[1]:.2f} s instead of {bare[1]:.2f} s"


def assert_no_leftovers(cache: TieredCache) -> None:
    assert cache._leading == {} and cache._thread_leading == {}
    assert cache.backend.claims == {}
    assert len(cache.core.claims) == 0


def assert_lease_free(core: CacheCore, key: str) -> None:
    """Nobody holds the cross-process lease of ``key``: another instance could take it right now."""
    taken = core.claims.take(key)
    assert not taken.busy, "a lease outlived the call"
    assert taken.token or taken.found is not None or core.claims.tier is None
    if taken.token:
        core.claims.release(key, taken.token, on_entry=taken.on_entry)


# ------------------------------------------------------------------------------------ the LiteLLM door


def litellm_request(provider: StandInProvider, kind: str, retries: int, text: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": messages(text),
        "api_base": provider.base_url,
        "api_key": API_KEY,
        "num_retries": retries,
        "max_retries": 0,  # the OpenAI SDK's own retries: their jittered backoff would blur the figures
        "timeout": CLIENT_TIMEOUT_S,
        "stream": kind == "midstream",
    }


def consume(response: Any) -> Any:
    if isinstance(response, litellm.CustomStreamWrapper):
        return list(response)
    return response


async def aconsume(response: Any) -> Any:
    if isinstance(response, litellm.CustomStreamWrapper):
        return [chunk async for chunk in response]
    return response


def make_tiered(tmp_path: Path, **settings: Any) -> TieredCache:
    settings.setdefault("disk_path", tmp_path / "cache.sqlite3")
    return TieredCache(single_flight_timeout=30, **settings)


#: Cells whose uncached call alone takes seconds (client timeouts / connection backoff, times five attempts).
SLOW = {("timeout", 2), ("refused", 2)}


def cells() -> list[Any]:
    return [
        pytest.param(kind, retries, marks=[pytest.mark.slow] if (kind, retries) in SLOW else [])
        for kind in KINDS
        for retries in (0, 2)
    ]


@pytest.mark.parametrize(("kind", "retries"), cells())
def test_litellm_sync(provider: StandInProvider, tmp_path: Path, kind: str, retries: int) -> None:
    text = f"sync {kind} {retries}"
    request = litellm_request(provider, kind, retries, text)
    litellm.cache = None
    bare = run(provider, kind, lambda: consume(litellm.completion(**request)))
    cache = litellm.cache = make_tiered(tmp_path)
    try:
        ours = run(provider, kind, lambda: consume(litellm.completion(**request)))
        compare(f"litellm sync   {kind:9} num_retries={retries}", bare, ours)
        assert_no_leftovers(cache)
        assert_lease_free(cache.core, cache.get_cache_key(model=MODEL, messages=messages(text)))
        provider.reset()  # recovered: the same request answers at once, and is cached
        started = time.monotonic()
        consume(litellm.completion(**request))
        assert time.monotonic() - started < SLACK_S and provider.request_count == 1
        assert_no_leftovers(cache)
    finally:
        cache.close()


@pytest.mark.parametrize(("kind", "retries"), cells())
async def test_litellm_async(provider: StandInProvider, tmp_path: Path, kind: str, retries: int) -> None:
    text = f"async {kind} {retries}"
    request = litellm_request(provider, kind, retries, text)
    litellm.cache = None
    bare = await arun(provider, kind, lambda: aconsume_call(request))
    cache = litellm.cache = make_tiered(tmp_path)
    try:
        ours = await arun(provider, kind, lambda: aconsume_call(request))
        compare(f"litellm async  {kind:9} num_retries={retries}", bare, ours)
        assert_no_leftovers(cache)
        assert_lease_free(cache.core, cache.get_cache_key(model=MODEL, messages=messages(text)))
        provider.reset()
        started = time.monotonic()
        await aconsume_call(request)
        assert time.monotonic() - started < SLACK_S and provider.request_count == 1
        await litellm_writes_done()  # LiteLLM stores (and so ends a successful flight) from a task it does not await
        assert_no_leftovers(cache)
    finally:
        cache.close()


async def litellm_writes_done() -> None:
    from litellm.caching import caching_handler

    pending = [t for t in getattr(caching_handler, "_PENDING_CACHE_WRITES", ()) if not t.done()]
    if pending:
        await asyncio.wait(pending, timeout=5)
    for _ in range(3):  # a stream's write is scheduled by one more task
        await asyncio.sleep(0)


async def aconsume_call(request: dict[str, Any]) -> Any:
    return await aconsume(await litellm.acompletion(**request))


def test_litellm_issue_scenario_default_sdk_retries(provider: StandInProvider, tmp_path: Path) -> None:
    """The report as filed: HTTP 500, ``num_retries=2``, sync, the OpenAI SDK's own retries left on."""
    request = {"model": MODEL, "messages": messages("as filed"), "api_base": provider.base_url, "api_key": API_KEY,
               "num_retries": 2}  # fmt: skip
    litellm.cache = None
    bare = run(provider, "500", lambda: litellm.completion(**request))
    cache = litellm.cache = make_tiered(tmp_path)
    try:
        ours = run(provider, "500", lambda: litellm.completion(**request))
        compare("litellm sync   500 as filed (SDK retries on) num_retries=2", bare, ours)
        provider.reset()
        started = time.monotonic()
        litellm.completion(**request)
        assert time.monotonic() - started < SLACK_S and provider.request_count == 1
        assert_no_leftovers(cache)
    finally:
        cache.close()


def test_litellm_followers_of_a_failed_leader_get_the_failure_at_once(
    provider: StandInProvider, tmp_path: Path
) -> None:
    """Threads that joined a leader whose call fails go upstream at once (and fail as they would uncached)."""
    request = litellm_request(provider, "500", 1, "followers")
    provider.latency = 0.2  # the leader's attempt is still running when the followers join it
    cache = litellm.cache = make_tiered(tmp_path)
    fail(provider, "500")
    errors: list[type[BaseException]] = []
    durations: list[float] = []
    lock = threading.Lock()

    def one() -> None:
        started = time.monotonic()
        try:
            litellm.completion(**request)
        except Exception as exc:
            with lock:
                errors.append(type(exc))
        with lock:
            durations.append(time.monotonic() - started)

    try:
        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert errors == [litellm.InternalServerError] * 4
        # Each caller makes at most its own two attempts after waiting for one leader attempt (0.2 s each).
        assert max(durations) < 3 * 0.2 + SLACK_S + 1.0, durations
        assert_no_leftovers(cache)
        provider.recover()
        provider.latency = 0.0
        provider.reset()
        litellm.completion(**request)
        assert provider.request_count == 1
    finally:
        provider.recover()
        cache.close()


async def test_litellm_async_followers_of_a_failed_leader_get_the_failure_at_once(
    provider: StandInProvider, tmp_path: Path
) -> None:
    request = litellm_request(provider, "500", 1, "async followers")
    provider.latency = 0.2
    cache = litellm.cache = make_tiered(tmp_path)
    fail(provider, "500")
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(litellm.acompletion(**request) for _ in range(4)), return_exceptions=True)
        assert [type(r) for r in results] == [litellm.InternalServerError] * 4
        assert time.monotonic() - started < 3 * 0.2 + SLACK_S + 1.0
        assert_no_leftovers(cache)
        provider.recover()
        provider.latency = 0.0
        provider.reset()
        await litellm.acompletion(**request)
        assert provider.request_count == 1
    finally:
        provider.recover()
        cache.close()


@pytest.mark.parametrize("retries", [0, 2])
def test_litellm_embeddings(provider: StandInProvider, tmp_path: Path, retries: int) -> None:
    request = {"model": "openai/text-embedding-3-small", "input": ["a", "b"], "api_base": provider.base_url,
               "api_key": API_KEY, "num_retries": retries, "max_retries": 0}  # fmt: skip
    litellm.cache = None
    bare = run(provider, "500", lambda: litellm.embedding(**request))
    cache = litellm.cache = make_tiered(tmp_path)
    try:
        compare(f"litellm embed  500       num_retries={retries}", bare,
                run(provider, "500", lambda: litellm.embedding(**request)))  # fmt: skip
        litellm.cache = None
        abare = run(provider, "500", lambda: asyncio.run(litellm.aembedding(**request)))
        litellm.cache = cache
        compare(f"litellm aembed 500       num_retries={retries}", abare,
                run(provider, "500", lambda: asyncio.run(litellm.aembedding(**request))))  # fmt: skip
        assert_no_leftovers(cache)
    finally:
        cache.close()


def test_litellm_router_fallbacks(provider: StandInProvider, tmp_path: Path) -> None:
    """A Router falling back from a failing deployment to another gets the fallback's answer, cached or not."""
    healthy = StandInProvider().start()
    try:
        model_list = [
            {"model_name": "primary", "litellm_params": {"model": MODEL, "api_base": provider.base_url,
                                                         "api_key": API_KEY, "max_retries": 0}},
            {"model_name": "backup", "litellm_params": {"model": "openai/gpt-4o", "api_base": healthy.base_url,
                                                        "api_key": API_KEY, "max_retries": 0}},
        ]  # fmt: skip

        def call() -> tuple[float, Any]:
            router = litellm.Router(model_list=model_list, fallbacks=[{"primary": ["backup"]}], num_retries=1,
                                    retry_after=0)  # fmt: skip
            started = time.monotonic()
            response = router.completion(model="primary", messages=messages("router"))
            return time.monotonic() - started, response

        fail(provider, "500")
        litellm.cache = None
        bare_s, _ = call()
        bare_n = provider.request_count
        provider.reset()
        cache = litellm.cache = make_tiered(tmp_path)
        try:
            ours_s, response = call()
            FIGURES.append(("litellm router 500 -> fallback num_retries=1", bare_s, ours_s, bare_n,
                            provider.request_count))  # fmt: skip
            assert response.choices[0].message.content
            assert provider.request_count == bare_n and ours_s <= bare_s + SLACK_S
            assert_no_leftovers(cache)
        finally:
            cache.close()
    finally:
        provider.recover()
        healthy.stop()


# ---------------------------------------------------------------------------------------- the DSPy door

DSPY_KINDS = ["500", "429", "timeout", "refused"]


def make_lm(provider: StandInProvider, engine: str, retries: int, **kwargs: Any) -> Any:
    return dspy.LM(MODEL, api_base=provider.base_url, api_key=API_KEY, num_retries=retries, engine=engine,
                   timeout=CLIENT_TIMEOUT_S, max_retries=0, **kwargs)  # fmt: skip


@pytest.mark.parametrize("engine", ["auto", "litellm"])
@pytest.mark.parametrize("kind", DSPY_KINDS)
def test_dspy_sync(provider: StandInProvider, tmp_path: Path, kind: str, engine: str) -> None:
    text = f"dspy sync {kind} {engine}"
    bare_lm = make_lm(provider, engine, 0, cache=False)
    bare = run(provider, kind, lambda: bare_lm(messages=messages(text)))
    with CacheCore(disk_path=tmp_path / "c.sqlite3", single_flight_timeout=30) as core:
        lm = CachedLM(make_lm(provider, engine, 0), cache=core)
        ours = run(provider, kind, lambda: lm(messages=messages(text)))
        compare(f"dspy sync      {kind:9} engine={engine}", bare, ours)
        assert len(core.claims) == 0
        provider.reset()
        started = time.monotonic()
        lm(messages=messages(text))
        assert time.monotonic() - started < SLACK_S and provider.request_count == 1


@pytest.mark.parametrize("engine", ["auto", "litellm"])
@pytest.mark.parametrize("kind", DSPY_KINDS)
async def test_dspy_async(provider: StandInProvider, tmp_path: Path, kind: str, engine: str) -> None:
    text = f"dspy async {kind} {engine}"
    bare_lm = make_lm(provider, engine, 0, cache=False)
    bare = await arun(provider, kind, lambda: bare_lm.acall(messages=messages(text)))
    with CacheCore(disk_path=tmp_path / "c.sqlite3", single_flight_timeout=30) as core:
        lm = CachedLM(make_lm(provider, engine, 0), cache=core)
        ours = await arun(provider, kind, lambda: lm.acall(messages=messages(text)))
        compare(f"dspy async     {kind:9} engine={engine}", bare, ours)
        assert len(core.claims) == 0
        provider.reset()
        started = time.monotonic()
        await lm.acall(messages=messages(text))
        assert time.monotonic() - started < SLACK_S and provider.request_count == 1


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_dspy_retries(provider: StandInProvider, tmp_path: Path, engine: str) -> None:
    """DSPy's own ``num_retries`` (exponential backoff inside the LM call): same attempts, same time."""
    text = f"dspy retries {engine}"
    bare_lm = make_lm(provider, engine, 1, cache=False)
    bare = run(provider, "429", lambda: bare_lm(messages=messages(text)))
    with CacheCore(disk_path=tmp_path / "c.sqlite3", single_flight_timeout=30) as core:
        lm = CachedLM(make_lm(provider, engine, 1), cache=core)
        ours = run(provider, "429", lambda: lm(messages=messages(text)))
        compare(f"dspy sync      429       engine={engine} num_retries=1", bare, ours)
        assert len(core.claims) == 0


# ------------------------------------------------------------------------------------------- @cached


def test_cached_decorator_sync_and_async(provider: StandInProvider, tmp_path: Path) -> None:
    with CacheCore(disk_path=tmp_path / "c.sqlite3", single_flight_timeout=30) as core:

        def ask(text: str) -> str:
            response = litellm.completion(**litellm_request(provider, "500", 0, text))
            return str(response.choices[0].message.content)

        async def aask(text: str) -> str:
            response = await litellm.acompletion(**litellm_request(provider, "500", 0, text))
            return str(response.choices[0].message.content)

        litellm.cache = None
        wrapped, awrapped = cached(core=core)(ask), cached(core=core)(aask)
        bare = run(provider, "500", lambda: ask("d"))
        compare("@cached sync   500", bare, run(provider, "500", lambda: wrapped("d")))
        bare = run(provider, "500", lambda: asyncio.run(aask("a")))
        ours = run(provider, "500", lambda: asyncio.run(awrapped("a")))
        compare("@cached async  500", bare, ours)
        assert len(core.claims) == 0
        provider.reset()
        assert wrapped("d") and asyncio.run(awrapped("a")) and provider.request_count == 2
