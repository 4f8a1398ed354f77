"""``dspy-tiered-cache dictionary``: trained on a real private Redis's entries, stored, adopted, read back."""

from __future__ import annotations

import json

import pytest
import redis

from dspy_tiered_cache.cli import main
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.testing.redis_server import RedisServer


def _fill(url: str, n: int) -> None:
    topics = ["caching", "Redis memory", "zstd dictionaries", "DSPy programs", "LiteLLM routers", "fleets"]
    with CacheCore(redis_url=url, memory=False, fleet=False, write_behind=False) as core:
        for i in range(n):
            topic = topics[i % len(topics)]
            text = f"Answer {i} about {topic}: " + f"the {topic} of request {i} are explained step by step. " * (
                4 + i % 7
            )
            core.set(core.key_for({"q": i}), {"choices": [{"message": {"role": "assistant", "content": text}}]})


def test_train_stores_a_dictionary_that_new_entries_use(
    private_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    url = private_redis.url
    _fill(url, 300)
    assert main(["--redis-url", url, "dictionary", "train", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["entries read"] == 300
    assert result["held-out bytes with it"] < result["held-out bytes now"]
    assert result["stored"].startswith("yes")
    client = redis.Redis.from_url(url)
    number = int(client.get("dtc:zdict:current"))
    assert client.get(f"dtc:zdict:{number:08x}") is not None
    client.close()
    assert main(["--redis-url", url, "dictionary", "status", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["adopted by the fleet"] == f"{number:#x}"


def test_train_on_an_empty_cache_is_one_clear_line(
    private_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--redis-url", private_redis.url, "dictionary", "train"]) == 1
    err = capsys.readouterr().err.strip()
    assert "only 0 entries" in err and "\n" not in err


def test_stats_show_bytes_per_entry_and_compression(
    private_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(private_redis.url, 40)
    assert main(["--redis-url", private_redis.url, "stats", "--format", "json"]) == 0
    (storage,) = json.loads(capsys.readouterr().out)["storage"]
    assert storage["tier"] == "l2" and storage["sampled"] == 40
    assert storage["compression_ratio"] > 1.5  # small answers compress with the shipped dictionary
    assert storage["memory_usage_per_entry"] > storage["bytes_per_entry"]
    assert main(["--redis-url", private_redis.url, "stats"]) == 0
    assert "B stored per entry" in capsys.readouterr().out
