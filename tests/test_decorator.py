"""``@cached`` on real cores (memory, the disk file, a private Redis server).

Each test counts how many times the decorated function body really ran: that count is what a cache exists to cut.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.decorator import cached
from dspy_tiered_cache.keys import canonical_request
from dspy_tiered_cache.report import StatsReport, report

SECRET = "sk-live-never-in-a-key-or-value"


@pytest.fixture
def core(disk_path: Path) -> Iterator[CacheCore]:
    with CacheCore(disk_path=disk_path) as c:
        yield c


class Answer(BaseModel):
    text: str
    score: float


def test_sync_hit_and_argument_spelling(core: CacheCore) -> None:
    calls: list[tuple[str, int]] = []

    @cached(core=core)
    def ask(question: str, n: int = 1) -> dict[str, Any]:
        calls.append((question, n))
        return {"answer": question.upper(), "n": n}

    assert ask("hi") == {"answer": "HI", "n": 1}
    assert ask("hi") == {"answer": "HI", "n": 1}
    assert ask(question="hi") == {"answer": "HI", "n": 1}  # keyword or positional: one entry
    assert ask("hi", 1) == {"answer": "HI", "n": 1}  # the default applied explicitly: the same entry
    assert calls == [("hi", 1)]
    assert ask("hi", n=2) == {"answer": "HI", "n": 2}
    assert calls == [("hi", 1), ("hi", 2)]
    # A hit hands back a fresh object: mutating it does not change what the next caller gets.
    ask("hi")["answer"] = "mutated"
    assert ask("hi")["answer"] == "HI"


async def test_async_hit(core: CacheCore) -> None:
    calls = 0

    @cached(core=core)
    async def ask(question: str) -> list[str]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return [question, question]

    assert asyncio.iscoroutinefunction(ask)
    assert await ask("a") == ["a", "a"]
    assert await ask("a") == ["a", "a"]
    assert calls == 1


def test_concurrent_identical_sync_calls_run_once(core: CacheCore) -> None:
    calls = 0
    lock = threading.Lock()

    @cached(core=core)
    def slow(x: int) -> int:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(0.2)
        return x * 2

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(slow(21))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [42] * 8
    assert calls == 1
    assert core.stats.snapshot()["joined_in_flight"] == 7


async def test_concurrent_identical_async_calls_run_once(core: CacheCore) -> None:
    calls = 0

    @cached(core=core)
    async def slow(x: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return x * 2

    assert await asyncio.gather(*(slow(4) for _ in range(10)), slow(5)) == [8] * 10 + [10]
    assert calls == 2


def test_secret_arguments_never_enter_the_key(core: CacheCore) -> None:
    calls = 0

    @cached(core=core)
    def complete(prompt: str, api_key: str | None = None, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        return f"answer to {prompt}"

    complete("p", api_key=SECRET)
    complete("p", api_key="another-key")
    complete("p", api_key=SECRET, timeout=30, extra_headers={"Authorization": f"Bearer {SECRET}"})
    assert calls == 1
    # What the key is built from holds no trace of the credentials, top-level or passed through **kwargs.
    request = complete.cache.request(("p",), {"api_key": SECRET, "extra_headers": {"x": SECRET}})
    assert SECRET.encode() not in canonical_request(request)
    assert complete.cache.key("p", api_key=SECRET) == complete.cache.key("p")
    # ...while every other argument, in **kwargs too, is part of it.
    complete("p", temperature=0.5)
    assert calls == 2


def test_include_keeps_a_transport_named_argument(core: CacheCore) -> None:
    @cached(core=core)
    def tagged(text: str, metadata: dict[str, str]) -> str:
        return text + metadata["tag"]

    @cached(core=core, include=["metadata"])
    def tagged_included(text: str, metadata: dict[str, str]) -> str:
        return text + metadata["tag"]

    assert tagged("a", {"tag": "1"}) == "a1"
    assert tagged("a", {"tag": "2"}) == "a1"  # metadata is a transport option by default: not in the key
    assert tagged_included("a", {"tag": "1"}) == "a1"
    assert tagged_included("a", {"tag": "2"}) == "a2"


def test_values_cross_processes_as_json_through_redis(redis_url: str) -> None:
    """A second core (another process, as far as the cache knows) rebuilds the pydantic model from Redis."""
    calls = 0

    def score(text: str) -> Answer:
        nonlocal calls
        calls += 1
        return Answer(text=text, score=0.5)

    with CacheCore(redis_url=redis_url) as first, CacheCore(redis_url=redis_url) as second:
        assert cached(core=first)(score)("x") == Answer(text="x", score=0.5)
        first.flush()
        again = cached(core=second)(score)
        value = again("x")
        assert isinstance(value, Answer) and value == Answer(text="x", score=0.5)
        assert calls == 1
        assert second.stats.snapshot()["tiers"]["l2"]["hits"] == 1
        raw = first.tiers[-1].client.get(first.key_for(again.cache.request(("x",), {})))  # type: ignore[attr-defined]
        assert raw is not None and b"pickle" not in raw


def test_tuples_and_bytes_round_trip(core: CacheCore, disk_path: Path) -> None:
    @cached(core=core)
    def pair(x: int) -> tuple[int, bytes]:
        return (x, b"\x00\xff")

    assert pair(1) == (1, b"\x00\xff")
    core.flush()
    with CacheCore(disk_path=disk_path) as fresh:  # a new process's view: served by the disk file
        value = cached(core=fresh)(pair.__wrapped__)(1)
        assert value == (1, b"\x00\xff") and isinstance(value, tuple)
        assert fresh.stats.snapshot()["tiers"]["disk"]["hits"] == 1


def test_unstorable_values_are_returned_not_cached(core: CacheCore) -> None:
    calls = 0

    class Opaque:
        pass

    @cached(core=core)
    def make(x: int) -> Any:
        nonlocal calls
        calls += 1
        return Opaque()

    assert isinstance(make(1), Opaque)
    assert isinstance(make(1), Opaque)
    assert calls == 2
    assert core.stats.snapshot()["store_skipped"] == 2


def test_uncacheable_arguments_call_through_and_ignore_fixes_methods(core: CacheCore) -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        @cached(core=core)
        def plain(self, x: int) -> int:
            self.calls += 1
            return x

        @cached(core=core, ignore=["self"])
        def ignoring_self(self, x: int) -> int:
            self.calls += 1
            return x

    client = Client()
    assert client.plain(1) == client.plain(1) == 1
    assert client.calls == 2  # `self` has no canonical form: the call is not cached, and does not fail
    assert core.stats.snapshot()["uncacheable"] == 2
    assert client.ignoring_self(3) == client.ignoring_self(3) == 3
    assert client.calls == 3
    with pytest.raises(ValueError, match="name no parameter"):
        cached(core=core, ignore=["nope"])(lambda x: x)


def test_wrong_arguments_raise_the_functions_own_error(core: CacheCore) -> None:
    @cached(core=core)
    def f(x: int) -> int:
        return x

    with pytest.raises(TypeError):
        f(1, 2)  # type: ignore[call-arg]


def test_exceptions_are_not_cached(core: CacheCore) -> None:
    calls = 0

    @cached(core=core)
    def flaky(x: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("upstream 503")
        return x

    with pytest.raises(RuntimeError):
        flaky(1)
    assert flaky(1) == 1
    assert flaky(1) == 1
    assert calls == 2


def test_version_clear_and_delete(core: CacheCore) -> None:
    calls: list[str] = []

    def body(x: str) -> str:
        calls.append(x)
        return x

    v1 = cached(core=core, namespace="fn-a", version="1")(body)
    v2 = cached(core=core, namespace="fn-a", version="2")(body)
    other = cached(core=core, namespace="fn-b")(body)
    v1("a"), v1("a"), v2("a"), other("a")
    assert calls == ["a", "a", "a"]  # a new version is a new key

    core.flush()  # core.delete does not cancel a remote write still queued (reported to the core's owner)
    v1.cache.delete("a")
    v1("a"), v2("a")
    assert calls == ["a", "a", "a", "a"]  # one call forgotten, the other version kept

    generation = v1.cache_clear()
    assert generation >= 1
    v1("a"), v2("a"), other("a")
    assert calls == ["a"] * 6  # both versions in the namespace re-run; the other namespace is untouched


def test_unreadable_entry_is_a_miss_and_replaced(core: CacheCore) -> None:
    calls = 0

    @cached(core=core)
    def f(x: int) -> int:
        nonlocal calls
        calls += 1
        return x + 1

    key = f.cache.key(1)
    core.set(key, {"not": "a value envelope"})  # e.g. written by something else under our key
    assert f(1) == 2
    assert f(1) == 2
    assert calls == 1


def test_hits_credit_tokens_and_report(core: CacheCore) -> None:
    @cached(core=core)
    def completion(prompt: str) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 100, "completion_tokens": 20}, "text": prompt}

    completion("x")
    completion("x")
    completion("x")
    snap = core.stats.snapshot()
    assert snap["tokens_saved"] == 240
    rep = report(completion)
    assert isinstance(rep, StatsReport)
    assert rep.hits_by_level["l1"] == 2 and rep.hits_by_level["miss"] == 1
    assert "memory (l1)" in repr(rep) and "<table" in rep._repr_html_()
    assert completion.cache_info().tokens_saved == 240


def test_one_span_per_call(core: CacheCore, otel_spans: Any) -> None:
    @cached(core=core, namespace="spans")
    def f(x: int) -> int:
        return x

    f(1)
    f(1)
    spans = [s for s in otel_spans.get_finished_spans() if s.attributes.get("cache.door") == "decorator"]
    assert [s.attributes["cache.level"] for s in spans] == ["miss", "l1"]
    assert all(s.attributes["cache.namespace"] == "spans" for s in spans)


def test_generators_are_refused() -> None:
    with pytest.raises(TypeError, match="generator"):

        @cached
        def gen() -> Iterator[int]:
            yield 1


def test_bare_decorator_uses_the_env_configured_default_core(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dspy_tiered_cache import core as core_module

    monkeypatch.setattr(core_module, "_default_core", None)
    monkeypatch.setenv("DSPY_TIERED_CACHE_DISK_PATH", str(tmp_path / "env.sqlite3"))
    calls = 0

    @cached
    def f(x: int) -> int:
        nonlocal calls
        calls += 1
        return x

    try:
        assert f(1) == f(1) == 1
        assert calls == 1
        assert f.cache.core.settings.disk_path == tmp_path / "env.sqlite3"
    finally:
        f.cache.core.close()
