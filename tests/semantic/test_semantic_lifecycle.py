"""The semantic tier's life around its answers, through the LiteLLM door over real HTTP: an embedding endpoint that
fails, a changed embedding model, ``delete()``, per-call lifetimes and the size bound of both indexes."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from dspy_tiered_cache.semantic.index import LocalIndex, RedisIndex
from dspy_tiered_cache.testing.provider import StandInProvider
from tests.integrations.conftest import MakeCache
from tests.semantic.conftest import semantic_settings
from tests.semantic.test_litellm_semantic import ANCHOR, MODEL, PARAPHRASE, _ask


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_embedding_failure_warns_once_naming_model_endpoint_and_settings_then_counts(
    make_cache: MakeCache, provider: StandInProvider, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}/v1"
    cache = make_cache(
        disk=True,
        disk_path=tmp_path / "c.sqlite3",
        **semantic_settings(
            provider, semantic_embedding_model="openai/text-embedding-3-small", semantic_embedding_api_base=endpoint
        ),
    )
    with caplog.at_level(logging.DEBUG, logger="dspy_tiered_cache"):
        first = _ask(provider, ANCHOR)
        _ask(provider, PARAPHRASE)
        _ask(provider, "How do I change my email address?")
        cache.flush()
        again = _ask(provider, ANCHOR)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    message = warnings[0]
    assert "openai/text-embedding-3-small" in message and endpoint in message
    assert "semantic_embedding_api_base" in message and "semantic_embedding_model" in message
    assert again.id == first.id  # exact caching carries on
    reasons = cache.stats()["semantic"]["reasons"]
    assert reasons["embedding_error"] >= 3


def test_changing_the_embedding_model_starts_a_fresh_partition_and_hits_resume(
    make_cache: MakeCache, provider: StandInProvider, tmp_path: Path
) -> None:
    path = tmp_path / "c.sqlite3"
    old = make_cache(disk=True, disk_path=path, **semantic_settings(provider))
    _ask(provider, ANCHOR)
    old.flush()
    old.close()
    # Another model with another dimension, on the same files: vectors of the two never meet.
    new = make_cache(
        disk=True, disk_path=path, **semantic_settings(provider, semantic_embedding_model="openai/bag-of-words-v2")
    )
    answered = provider.count("chat")
    _ask(provider, PARAPHRASE)
    assert provider.count("chat") == answered + 1  # the old model's row is no candidate
    new.flush()
    anchor_answer = _ask(provider, "How do I rename a branch in git?")
    new.flush()
    again = _ask(provider, "How can I rename a branch in git?")
    assert again.id == anchor_answer.id and again._hidden_params["cache"]["level"] == "semantic"
    assert "error" not in "".join(new.stats()["semantic"]["reasons"])


def test_delete_removes_the_index_row(semantic_cache: Any, provider: StandInProvider) -> None:
    _ask(provider, ANCHOR)
    semantic_cache.flush()
    semantic_cache.delete(model=MODEL, messages=[{"role": "user", "content": ANCHOR}])
    _ask(provider, PARAPHRASE)
    assert provider.count("chat") == 2
    reasons = semantic_cache.stats()["semantic"]["reasons"]
    assert "answer_gone" not in reasons and reasons.get("below_threshold") == 2  # the anchor's lookup, then ours


def test_a_per_call_ttl_bounds_the_index_row(make_cache: MakeCache, provider: StandInProvider, tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    cache = make_cache(disk=True, disk_path=path, ttl=3600, **semantic_settings(provider))
    before = time.time()
    _ask(provider, ANCHOR, cache={"ttl": 60})
    _ask(provider, "How do I change my email address?")
    cache.flush()
    with sqlite3.connect(path.with_name(path.name + ".semantic")) as db:
        expiries = sorted(row[0] for row in db.execute("SELECT exp FROM semantic"))
    assert len(expiries) == 2
    assert before + 60 <= expiries[0] <= time.time() + 60  # the call's own lifetime
    assert before + 3600 <= expiries[1] <= time.time() + 3600  # the configured one


def test_the_per_machine_index_is_bounded(tmp_path: Path) -> None:
    index = LocalIndex(tmp_path / "s.sqlite3", max_rows=100)
    rng = np.random.default_rng(3)
    for i in range(600):
        index.add("p", f"k{i}", f"text {i}", rng.standard_normal(8).astype(np.float32), None)
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:
        (rows,) = db.execute("SELECT COUNT(*) FROM semantic").fetchone()
    assert rows <= 100 + 256  # bounded between two checks (one every 256 writes)
    newest = index.search("p", rng.standard_normal(8).astype(np.float32), 1000, -1.0)
    assert "k599" in {n.key for n in newest} and "k0" not in {n.key for n in newest}
    index.close()


def test_the_shared_index_is_bounded(search_url: str) -> None:
    """The Redis index keeps at most ``max_rows`` rows, dropping the oldest, and ``delete`` takes a row's place in
    the bound with it. Two indexes stand for two processes sharing the server."""
    client = redis.Redis.from_url(search_url)
    first, second = RedisIndex(lambda: client, "dtc", max_rows=50), RedisIndex(lambda: client, "dtc", max_rows=50)
    rng = np.random.default_rng(5)
    for i in range(300):
        (first if i % 2 else second).add("p", f"k{i}", f"text {i}", rng.standard_normal(8).astype(np.float32), None)
        assert len(client.keys("dtc:sem:8:*")) <= 50
    kept = {n.key for n in first.search("p", rng.standard_normal(8).astype(np.float32), 100, -1.0)}
    assert "k299" in kept and "k0" not in kept and len(kept) == client.zcard("dtc:semrows")
    first.delete("k299")
    assert client.zcard("dtc:semrows") == len(client.keys("dtc:sem:8:*")) == len(kept) - 1
    assert "k299" not in {n.key for n in second.search("p", rng.standard_normal(8).astype(np.float32), 100, -1.0)}
    client.close()


def test_the_index_bound_is_a_setting(make_cache: MakeCache, provider: StandInProvider, search_url: str) -> None:
    """``semantic_max_rows`` reaches the shared index through the door: five different questions, two rows kept."""
    cache = make_cache(redis_url=search_url, semantic_max_rows=2, **semantic_settings(provider))
    for topic in ("tides", "volcanoes", "glaciers", "comets", "coral reefs"):
        _ask(provider, f"Why do {topic} form, in two sentences?")
    cache.flush()
    client = redis.Redis.from_url(search_url)
    assert client.zcard(f"{cache.core.settings.key_prefix}:semrows") <= 2
    assert len(client.keys(f"{cache.core.settings.key_prefix}:sem:*")) <= 2
    client.close()
