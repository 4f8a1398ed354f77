"""Bad input: values, keys and bytes the cache must refuse or survive.

Each case gets a clear log line and a miss (the caller's own answer, computed by a real HTTP call to the stand-in
provider, is returned untouched) and never an exception or a wrong answer. Secrets handed to a call, to the Redis
URL or to the settings never reach keys, values or logs.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import redis
from support.faults import (
    answer_text,
    ask,
    core_settings,
    prompt_for,
    reference_answers,
    request_for,
)

from dspy_tiered_cache import CacheCore, UncacheableRequest
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer
from dspy_tiered_cache.tiers.redis import RedisTier
from dspy_tiered_cache.tiers.redis_leases import LEASE_MARK


def _core(redis_url: str, **extra: Any) -> CacheCore:
    return CacheCore(**core_settings(redis_url, **extra))


def _entries(redis_url: str) -> list[bytes]:
    with redis.Redis.from_url(redis_url) as raw:
        return list(raw.scan_iter(match="dtc:e:*"))


def _computing(provider: StandInProvider, request: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Any:
    def compute() -> dict[str, Any]:
        answer = ask(provider.base_url, request)
        change(answer)
        return answer

    return compute


# -- values the cache cannot store -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({1, 2}, id="set"),
        pytest.param(object(), id="object"),
        pytest.param(datetime.datetime(2026, 1, 1), id="datetime"),
        pytest.param(b"\x00raw bytes", id="bytes"),
        pytest.param(2**70, id="int-over-64-bit"),
        pytest.param({1: "int key"}, id="non-str-dict-key"),
    ],
)
def test_unserializable_value_is_returned_untouched_and_not_stored(
    redis_url: str, provider: StandInProvider, caplog: pytest.LogCaptureFixture, extra: Any
) -> None:
    core = _core(redis_url)
    prompt = prompt_for(1, "unserializable")
    request = request_for(prompt)
    key = core.key_for(request)
    compute = _computing(provider, request, lambda answer: answer.update(extra=extra))
    with caplog.at_level(logging.DEBUG, logger="dspy_tiered_cache"):
        value, level = core.get_or_compute(key, compute)
        again, level_again = core.get_or_compute(key, compute)
    assert level == level_again == "miss"  # nothing was stored, so the second call computes again
    assert value["extra"] is extra and answer_text(value) == reference_answers([prompt])[prompt]
    assert answer_text(again) == answer_text(value)
    assert provider.request_count == 2
    assert core.stats.store_skipped == 2
    assert "not plain JSON data" in caplog.text and "not caching a value" in caplog.text
    assert core.flush()
    assert _entries(redis_url) == []
    core.close()


@pytest.mark.parametrize("number", [float("nan"), float("-inf")], ids=["nan", "-inf"])
def test_non_finite_floats_never_read_back_changed(redis_url: str, provider: StandInProvider, number: float) -> None:
    writer = _core(redis_url)
    request = request_for(prompt_for(2, "non-finite"))
    key = writer.key_for(request)

    def add_logprob(answer: dict[str, Any]) -> None:
        answer["choices"][0]["logprobs"] = {"content": [{"token": "4", "logprob": number}]}

    writer.get_or_compute(key, _computing(provider, request, add_logprob))
    assert writer.flush()
    reader = _core(redis_url)  # another process: what comes back from Redis
    hit = reader.get(key)
    writer.close()
    reader.close()
    if hit is None:
        return  # refusing to store it is fine
    got = hit.value["choices"][0]["logprobs"]["content"][0]["logprob"]
    assert isinstance(got, float), f"stored {number!r}, read back {got!r}"
    assert math.isnan(got) if math.isnan(number) else got == number


def test_oversized_value_skips_the_store_is_counted_and_never_fails_the_call(
    redis_url: str, provider: StandInProvider, caplog: pytest.LogCaptureFixture
) -> None:
    core = _core(redis_url, max_value_bytes=256)
    prompt = prompt_for(3, "oversized")
    request = request_for(prompt)
    key = core.key_for(request)
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"):
        value, level = core.get_or_compute(key, lambda: ask(provider.base_url, request))
        _, level_again = core.get_or_compute(key, lambda: ask(provider.base_url, request))
    assert len(orjson.dumps(value)) > 256
    assert answer_text(value) == reference_answers([prompt])[prompt]
    assert level == level_again == "miss" and provider.request_count == 2
    assert core.stats.store_skipped == 2
    assert "over max_value_bytes=256" in caplog.text and "DSPY_TIERED_CACHE_MAX_VALUE_BYTES" in caplog.text
    assert core.flush()
    assert _entries(redis_url) == []
    core.close()


# -- keys -----------------------------------------------------------------------------------------------
def test_a_1mb_prompt_makes_a_short_key_and_round_trips(redis_url: str, provider: StandInProvider) -> None:
    prompt = prompt_for(4, "huge") + " " + "lorem ipsum dolor sit amet " * (1_048_576 // 27)
    assert len(prompt) >= 1_000_000
    request = request_for(prompt)
    first = _core(redis_url)
    key = first.key_for(request)
    assert len(key) < 100
    value, level = first.get_or_compute(key, lambda: ask(provider.base_url, request))
    assert level == "miss" and answer_text(value) == reference_answers([prompt])[prompt]
    assert first.flush()
    other = _core(redis_url)  # another process
    value_again, level_again = other.get_or_compute(other.key_for(request), lambda: ask(provider.base_url, request))
    assert level_again == "l2" and answer_text(value_again) == answer_text(value)
    assert provider.request_count == 1
    assert all(len(k) < 100 for k in _entries(redis_url))
    first.close()
    other.close()


def test_lone_surrogate_in_a_prompt_is_uncacheable_with_a_clear_reason(redis_url: str) -> None:
    """A prompt that is not valid Unicode has no canonical bytes: the core says so with UncacheableRequest (the
    doors' signal to call upstream uncached), and nothing is written."""
    core = _core(redis_url)
    for text in ("broken \ud800 high surrogate", "broken \udfff low surrogate"):
        with pytest.raises(UncacheableRequest, match="surrogates not allowed"):
            core.key_for(request_for(text))
    assert core.flush()
    assert _entries(redis_url) == []
    core.close()


def test_lone_surrogate_in_a_response_is_returned_and_not_stored(
    redis_url: str, provider: StandInProvider, caplog: pytest.LogCaptureFixture
) -> None:
    core = _core(redis_url)
    request = request_for(prompt_for(5, "surrogate-response"))
    key = core.key_for(request)

    def break_text(answer: dict[str, Any]) -> None:
        answer["choices"][0]["message"]["content"] += " \udcff"

    with caplog.at_level(logging.DEBUG, logger="dspy_tiered_cache"):
        value, level = core.get_or_compute(key, _computing(provider, request, break_text))
        _, level_again = core.get_or_compute(key, _computing(provider, request, break_text))
    assert value["choices"][0]["message"]["content"].endswith(" \udcff")
    assert level == level_again == "miss" and core.stats.store_skipped == 2
    assert "surrogates not allowed" in caplog.text
    assert core.flush()
    assert _entries(redis_url) == []
    core.close()


# -- foreign values under our prefix --------------------------------------------------------------------
@pytest.mark.parametrize(
    "foreign",
    [b"plain text from another program", b'{"choices": []}', b"\x80\x04\x95 pickle-ish", b""],
    ids=["text", "json", "pickle-ish", "empty"],
)
def test_foreign_string_under_our_key_is_a_logged_miss(
    redis_url: str, provider: StandInProvider, caplog: pytest.LogCaptureFixture, foreign: bytes
) -> None:
    core = _core(redis_url, memory=False)
    prompt = prompt_for(11, "foreign-string")
    request = request_for(prompt)
    key = core.key_for(request)
    with redis.Redis.from_url(redis_url) as raw:
        raw.set(key, foreign)
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"):
        value, level = core.get_or_compute(key, lambda: ask(provider.base_url, request))
    assert level == "miss" and answer_text(value) == reference_answers([prompt])[prompt]
    assert core.stats.tiers["l2"].corrupt == 1 and core.breakers["l2"].opened == 0
    assert "corrupt entry in tier l2" in caplog.text and "serving a miss" in caplog.text
    core.close()


@pytest.mark.parametrize("kind", ["hash", "list", "set"])
def test_foreign_redis_type_under_our_key_is_a_miss_not_an_outage(
    redis_url: str, provider: StandInProvider, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """GET on a hash answers WRONGTYPE: that is an answer about one key, not a dead server."""
    core = _core(redis_url, memory=False)
    prompt = prompt_for(6, "foreign-type")
    request = request_for(prompt)
    key = core.key_for(request)
    with redis.Redis.from_url(redis_url) as raw:
        if kind == "hash":
            raw.hset(key, "field", "v")
        elif kind == "list":
            raw.rpush(key, "v")
        else:
            raw.sadd(key, "v")
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"):
        levels = []
        for _ in range(5):
            value, level = core.get_or_compute(key, lambda: ask(provider.base_url, request))
            assert answer_text(value) == reference_answers([prompt])[prompt]
            levels.append(level)
            core.flush()
    assert levels[0] == "miss" and set(levels[1:]) == {"l2"}  # our SET replaced the foreign value
    assert core.breakers["l2"].opened == 0 and core.breakers["l2"].state == "closed"
    assert "WRONGTYPE" in caplog.text
    core.close()


def test_foreign_value_under_the_generation_key_still_answers_right(
    redis_url: str, provider: StandInProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with redis.Redis.from_url(redis_url) as raw:
        raw.set("dtc:gen:default", b"not-a-number")
    core = _core(redis_url)
    prompt = prompt_for(7, "foreign-generation")
    request = request_for(prompt)
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"):
        for _ in range(3):
            value, _ = core.get_or_compute(core.key_for(request), lambda: ask(provider.base_url, request))
            assert answer_text(value) == reference_answers([prompt])[prompt]
    assert provider.request_count == 1
    assert "generation" in caplog.text
    core.close()


def test_foreign_value_under_the_generation_key_is_neither_an_outage_nor_reread_per_call(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as raw:
        raw.set("dtc:gen:default", b"not-a-number")
        core = _core(redis_url, generation_refresh_s=60.0)
        raw.config_resetstat()
        for i in range(20):  # a door's calls: build the key, look it up
            core.get(core.key_for(request_for(prompt_for(i, "generation-reads"))))
        gets = raw.info("commandstats").get("cmdstat_get", {}).get("calls", 0)
        for i in range(5):  # several callers building keys at once (no lookup in between)
            core.key_for(request_for(prompt_for(i, "burst")))
    opened = core.breakers["l2"].opened
    core.close()
    assert gets <= 22, f"{gets} GETs for 20 lookups: the generation key is re-read on every call"
    assert opened == 0, "a foreign value under the generation key opened the Redis breaker"


def test_foreign_value_under_the_generation_key_does_not_defeat_invalidation(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as raw:
        raw.set("dtc:gen:default", b"not-a-number")
    before = _core(redis_url)
    request = request_for(prompt_for(12, "invalidated"))
    before.set(before.key_for(request), {"answer": "from before the invalidation"})
    assert before.flush()
    before.invalidate_namespace()
    before.close()
    later = _core(redis_url)  # a process started after the invalidation
    hit = later.get(later.key_for(request))
    later.close()
    assert hit is None, f"served {hit.value!r} although the namespace was invalidated"


@pytest.mark.parametrize("where", ["entry-key", "lease-key"])
def test_foreign_lease_without_expiry_delays_a_call_by_at_most_single_flight_timeout(
    redis_url: str, provider: StandInProvider, where: str
) -> None:
    """A lease nobody will release (no TTL) cannot hang a caller beyond single_flight_timeout: on the entry key
    (Redis 7) or on the separate lease key (older servers)."""
    core = _core(redis_url, single_flight_timeout=0.5)
    prompt = prompt_for(8, "foreign-lease")
    request = request_for(prompt)
    key = core.key_for(request)
    tier = core.claims.tier
    with redis.Redis.from_url(redis_url) as raw:
        if where == "entry-key":
            raw.set(key, LEASE_MARK + b"f" * 32)
        else:
            assert isinstance(tier, RedisTier)
            tier._entry_leases = False  # as on a server before Redis 7
            raw.set(key.replace(":e:", ":lock:", 1), b"held-by-someone-else")
    began = time.perf_counter()
    value, level = core.get_or_compute(key, lambda: ask(provider.base_url, request))
    assert time.perf_counter() - began < 1.5
    assert level == "miss" and answer_text(value) == reference_answers([prompt])[prompt]
    core.close()


def test_foreign_messages_on_the_invalidation_channel_are_ignored(redis_url: str) -> None:
    mine, theirs = _core(redis_url), _core(redis_url)
    key = mine.key_for(request_for(prompt_for(9, "bus")))
    theirs.key_for(request_for(prompt_for(9, "bus")))
    for core in (mine, theirs):
        bus = getattr(core, "_bus", None)
        assert bus is not None and bus.wait_connected(5.0)
    assert theirs.set(key, {"answer": 1})
    assert theirs.memory is not None
    with redis.Redis.from_url(redis_url) as raw:
        for junk in (b"\x80\x81 not json", b"[1, 2]", b'{"op": "del", "key": 12}', b'{"op": "ns", "gen": "x"}', b"{}"):
            raw.publish("dtc:inv", junk)
    time.sleep(0.3)
    assert theirs.memory.get(key) is not None  # junk changed nothing
    mine.delete(key)  # a real invalidation still gets through: the subscriber survived the junk
    deadline = time.monotonic() + 3.0
    while theirs.memory.get(key) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert theirs.memory.get(key) is None
    mine.close()
    theirs.close()


# -- secrets --------------------------------------------------------------------------------------------
SECRETS = ("sk-SECRET-123", "pw-SECRET-456", "ks-SECRET-789", "ek-SECRET-0123456789abcdef")


def test_secrets_never_reach_keys_values_or_logs(provider: StandInProvider, caplog: pytest.LogCaptureFixture) -> None:
    """An API key in the request (and in headers/metadata), a Redis password, the key_secret and an encryption
    key go through misses, hits, another instance, a corrupt entry, invalidations and a dead Redis; all logs at
    DEBUG (every logger) and every key and value in Redis are then searched for them."""
    caplog.set_level(logging.DEBUG)
    prompt = prompt_for(10, "secrets")
    request = {
        **request_for(prompt),
        "api_key": "sk-SECRET-123",
        "extra_headers": {"Authorization": "Bearer sk-SECRET-123"},
        "metadata": {"user_api_key": "sk-SECRET-123"},
    }
    with RedisServer(password="pw-SECRET-456") as server:
        settings = core_settings(server.url, key_secret="ks-SECRET-789")
        core, other = CacheCore(**settings), CacheCore(**settings)
        encrypted = CacheCore(**{**settings, "encryption_keys": ["ek-SECRET-0123456789abcdef"], "key_prefix": "enc"})
        key = core.key_for(request)
        value, _ = core.get_or_compute(key, lambda: ask(provider.base_url, request))
        core.get_or_compute(key, lambda: ask(provider.base_url, request))  # l1 hit
        assert core.flush()
        assert other.get_or_compute(other.key_for(request), lambda: ask(provider.base_url, request))[1] == "l2"
        encrypted.get_or_compute(encrypted.key_for(request), lambda: ask(provider.base_url, request))
        assert encrypted.flush()
        raw = server.client()
        raw.set(other.key_for({**request, "seed": 1}), b"corrupt bytes")  # a corrupt entry: a logged miss
        other.get(other.key_for({**request, "seed": 1}))
        core.invalidate_namespace()
        core.delete(key)
        stored: list[bytes] = []
        for name in raw.scan_iter():
            stored.append(name)
            blob = raw.get(name) if raw.type(name) == b"string" else raw.dump(name)
            stored.append(blob if isinstance(blob, bytes) else b"")
        assert len(stored) >= 4
        texts = [repr(core), repr(core.health()), repr(core.settings.masked()), repr(core.stats.snapshot())]
        server.kill()  # failures log the tier, its URL and the error
        for i in range(5):
            core.get_or_compute(core.key_for({**request, "seed": i}), lambda: ask(provider.base_url, request))
        texts.append(repr(core.health()))
        for c in (core, other, encrypted):
            c.close()
    assert answer_text(value) == reference_answers([prompt])[prompt]
    logs = caplog.text + "".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "cannot" in logs  # the dead Redis was logged, so the search covered failure lines too
    for secret in SECRETS:
        assert secret not in logs, f"{secret} in the logs"
        assert not any(secret.encode() in blob for blob in stored), f"{secret} stored in Redis"
        assert not any(secret in text for text in texts), f"{secret} in repr/health/settings/stats"
        assert secret not in key
