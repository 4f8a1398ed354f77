"""The fleet view end to end: worker processes count, the shared tier sums, ``stats`` reports the sum.

Workers are real processes (real LiteLLM and DSPy, real HTTP to the stand-in provider) sharing one private
redis-server; each prints its own counters when done and exits without closing anything, so the final batch
comes from the exit hook.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.fleet import SEP, buckets_since, read_fleet, summarize
from dspy_tiered_cache.stats import fleet_model_name, model_prices
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import dspy
    import litellm
    from dspy_tiered_cache import CachedLM, TieredCache

    index, base_url = int(sys.argv[1]), sys.argv[2]
    cache = TieredCache(namespace="service")  # redis_url from DSPY_TIERED_CACHE_REDIS_URL
    litellm.cache = cache
    model, key = "openai/gpt-4o-mini", "sk-fleet-test-key-0123"
    meta = []
    for prompt in (f"own question {index}", "shared question", f"own question {index}"):
        first = litellm.completion(model=model, messages=[{"role": "user", "content": prompt}],
                                   api_base=base_url, api_key=key)
        again = litellm.completion(model=model, messages=[{"role": "user", "content": prompt}],
                                   api_base=base_url, api_key=key)
        assert again._hidden_params.get("cache_hit") is True
        assert first._hidden_params.get("cache_hit") or "cache" not in first._hidden_params
        info = again._hidden_params["cache"]
        assert info["saved_usage"]["prompt_tokens"] == (first.usage.prompt_tokens if not first._hidden_params.get(
            "cache_hit") else first._hidden_params["cache"]["saved_usage"]["prompt_tokens"])
        assert again.usage.prompt_tokens == info["saved_usage"]["prompt_tokens"]  # LiteLLM's convention kept
        meta.append(info)
    async def one_async():
        return await litellm.acompletion(model=model, messages=[{"role": "user", "content": "shared question"}],
                                         api_base=base_url, api_key=key)
    meta.append(asyncio.run(one_async())._hidden_params["cache"])

    lm = CachedLM(dspy.LM(model, api_base=base_url, api_key=key, num_retries=0), cache=cache, namespace="programs")
    dspy.configure(lm=lm)
    predict = dspy.Predict("question -> answer")
    for n, question in enumerate((f"dspy {index}", "dspy shared", f"dspy {index}", "dspy shared")):
        predict(question=question)
        entry = lm.history[-1]
        assert n != 0 or "cache" not in entry  # a miss carries no cache metadata
        assert n < 2 or "cache" in entry  # repeats are hits, and say so
        if "cache" in entry:
            assert entry["usage"] == {}  # DSPy's convention kept: a hit bills nothing
            meta.append(entry["cache"])
    stats = cache.core.stats.snapshot()
    stats["dollars_saved"] = cache.core.stats.dollars_saved  # the snapshot rounds to 6 decimals
    print(json.dumps({"stats": stats, "meta": meta}))
    # no close(): the exit hook publishes the last batch
    """
)


def run_workers(n: int, redis_url: str, provider: StandInProvider) -> list[dict[str, Any]]:
    env = {**os.environ, "DSPY_TIERED_CACHE_REDIS_URL": redis_url, "DSPY_TIERED_CACHE_FLEET_FLUSH_S": "60"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), provider.base_url],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def cli_stats(redis_url: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "dspy_tiered_cache", "--redis-url", redis_url, *extra, "stats", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def test_three_workers_fleet_totals_equal_the_sum_of_their_counters(
    private_redis: RedisServer, provider: StandInProvider
) -> None:
    redis_url = private_redis.url  # a server of our own: other tests' cores publish to the session's server
    results = run_workers(3, redis_url, provider)
    own = [r["stats"] for r in results]
    fleet = cli_stats(redis_url)["fleet"]
    for field in ("hits", "misses", "tokens_saved", "prompt_tokens_saved", "completion_tokens_saved"):
        assert fleet[field] == sum(s[field] for s in own), field
    assert fleet["dollars_saved"] == pytest.approx(sum(s["dollars_saved"] for s in own), rel=1e-9)
    assert fleet["hits"] >= 3 * 4  # every worker: 3 LiteLLM re-asks and at least one DSPy repeat
    # Priced for a known model: gpt-4o-mini's price per token times the tokens saved.
    prices = model_prices("gpt-4o-mini")
    assert prices is not None
    # One model, one row: the LiteLLM door's "gpt-4o-mini" and the DSPy door's "openai/gpt-4o-mini".
    assert set(fleet["by_model"]) == {"gpt-4o-mini"}
    model_row = fleet["by_model"]["gpt-4o-mini"]
    assert model_row["dollars_saved"] == pytest.approx(
        model_row["prompt_tokens_saved"] * prices[0] + model_row["completion_tokens_saved"] * prices[1], rel=1e-9
    )
    assert model_row["dollars_saved"] > 0
    assert set(fleet["by_namespace"]) == {"service", "programs"}
    assert fleet["hit_rate"] == pytest.approx(fleet["hits"] / (fleet["hits"] + fleet["misses"]), abs=1e-4)
    # --namespace restricts the totals to that namespace.
    programs = cli_stats(redis_url, "--namespace", "programs")["fleet"]
    assert programs["hits"] == fleet["by_namespace"]["programs"]["hits"]
    assert set(programs["by_namespace"]) == {"programs"}
    assert programs["hits"] + cli_stats(redis_url, "--namespace", "service")["fleet"]["hits"] == fleet["hits"]
    # Hits say what they saved, through both doors.
    for result in results:
        for meta in result["meta"]:
            assert set(meta) == {"level", "age_s", "saved_usage", "saved_usd"}
            assert meta["level"] in ("l1", "l2", "joined")
            assert meta["age_s"] >= 0
            assert meta["saved_usage"]["prompt_tokens"] > 0
            assert meta["saved_usd"] > 0


def test_batches_are_applied_once_and_kept_across_an_outage(tmp_path: Path) -> None:
    """A retried batch (reply lost) is not counted twice; while Redis hangs the counts wait, then land once."""
    with RedisServer() as server:
        core = CacheCore(redis_url=server.url, fleet_flush_s=3600)
        assert core.fleet is not None
        key = core.key_for({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
        core.get(key)
        core.set(key, {"answer": 1})
        for _ in range(5):
            core.get(key)
        assert core.fleet.flush()
        publisher = core.fleet
        pending = (publisher._seq, int(time.time() // 3600), {f"n{SEP}default{SEP}h": 1000})
        assert publisher.store.apply(publisher.id, *pending) is False  # same seq again: ignored
        assert read_fleet(core)["hits"] == 5
        server.pause()  # hung: the batch times out, and may still be applied once the server resumes
        try:
            for _ in range(3):
                core.get(key)
            assert core.fleet.flush() is False
            assert core.fleet.failures == 1
        finally:
            server.resume()
        assert core.fleet.flush()
        fleet = read_fleet(core)
        assert (fleet["hits"], fleet["misses"]) == (core.stats.hits, core.stats.misses) == (8, 1)
        core.close()


def test_disk_tier_keeps_fleet_counters_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite3"
    with CacheCore(disk_path=path, fleet_flush_s=3600) as core:
        key = core.key_for({"q": 1}, namespace="batch")
        core.get(key)
        core.set(key, {"usage": {"prompt_tokens": 10, "completion_tokens": 5}})
        core.get(key)
        core.stats.record_savings("gpt-4o-mini", {"prompt_tokens": 10, "completion_tokens": 5}, key=key)
    with CacheCore(disk_path=path, fleet=False) as reader:
        fleet = read_fleet(reader, since="1h")
    assert fleet is not None
    assert (fleet["hits"], fleet["misses"], fleet["tokens_saved"]) == (1, 1, 15)
    assert fleet["store"] == "disk"
    assert fleet["by_namespace"]["batch"]["dollars_saved"] > 0


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-mini",
        "openai/gpt-4o-mini",
        "azure/gpt-4o",
        "anthropic/claude-3-haiku-20240307",
        "openrouter/openai/gpt-4o",
        "ollama_chat/llama3",
        "hosted_vllm/meta/llama-3",
        "gemini/gemini-1.5-flash",
        "text-embedding-3-small",
        "openai/text-embedding-3-small",
        "bedrock/anthropic.claude-v2",
    ],
)
def test_model_names_resolve_as_litellm_resolves_them(model: str) -> None:
    """The fleet's model name is the one ``litellm.get_llm_provider`` resolves (without importing LiteLLM)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    assert fleet_model_name(model) == litellm.get_llm_provider(model)[0]


def test_model_names_outside_litellm_providers_stay_as_given(tmp_path: Path) -> None:
    assert fleet_model_name("org/my-model") == "org/my-model"
    assert fleet_model_name("bag-of-words") == "bag-of-words"
    assert fleet_model_name(None) == fleet_model_name("") == ""
    # Counted under both spellings, read back as one row.
    with CacheCore(disk_path=tmp_path / "c.sqlite3", fleet_flush_s=3600) as core:
        key = core.key_for({"q": 1}, namespace="ns")
        for name in ("gpt-4o-mini", "openai/gpt-4o-mini"):
            core.stats.record_savings(name, {"prompt_tokens": 10, "completion_tokens": 5}, key=key)
    with CacheCore(disk_path=tmp_path / "c.sqlite3", fleet=False) as reader:
        fleet = read_fleet(reader, since="1h")
    assert fleet is not None and set(fleet["by_model"]) == {"gpt-4o-mini"}
    assert fleet["by_model"]["gpt-4o-mini"]["tokens_saved"] == 30


def test_memory_only_cache_has_no_fleet() -> None:
    with CacheCore(disk=False) as core:
        assert core.fleet is None
        assert read_fleet(core) is None


def test_summary_restricts_to_a_namespace_and_old_buckets_are_outside_the_window() -> None:
    fields = {
        f"n{SEP}a{SEP}h": 3.0,
        f"n{SEP}a{SEP}m": 1.0,
        f"n{SEP}b{SEP}h": 2.0,
        f"s{SEP}a{SEP}m1{SEP}p": 10.0,
        f"s{SEP}a{SEP}m1{SEP}usd": 0.5,
        f"t{SEP}l1{SEP}h": 5.0,
    }
    everything = summarize(fields)
    assert (everything["hits"], everything["misses"], everything["dollars_saved"]) == (5, 1, 0.5)
    only_b = summarize(fields, namespace="b")
    assert (only_b["hits"], only_b["tokens_saved"], only_b["by_model"]) == (2, 0, {})
    now = 1_000_000 * 3600.0 + 10
    assert buckets_since(3600, now) == [999_999, 1_000_000]
    assert len(buckets_since(7 * 24 * 3600, now)) == 7 * 24 + 1


def test_redis_keys_expire(redis_url: str) -> None:
    with CacheCore(redis_url=redis_url, fleet_flush_s=3600) as core:
        core.get(core.key_for({"q": 2}))
    client = redis.Redis.from_url(redis_url)
    keys = client.keys("{dtc:fleet}*")
    assert keys
    assert all(0 < client.ttl(k) <= 8 * 24 * 3600 for k in keys)
    client.close()


def _forked_worker(url: str) -> None:
    core = _inherited[0]
    for i in range(3):
        key = core.key_for({"child": i})
        core.get(key)
        core.set(key, {"i": i})
        core.get(key)
    # no close(): a multiprocessing child ends with os._exit, which skips atexit


_inherited: list[CacheCore] = []


def test_forked_worker_publishes_its_own_counts_only(redis_url: str) -> None:
    """A pre-fork worker (multiprocessing, gunicorn, celery) inherits its parent's counters: it must publish what
    it counted itself, and its last batch must land although ``os._exit`` skips ``atexit``."""
    import multiprocessing

    core = CacheCore(redis_url=redis_url, fleet_flush_s=3600, key_prefix="forktest")
    _inherited[:] = [core]
    try:
        parent_key = core.key_for({"parent": 1})
        core.get(parent_key)  # one miss in the parent, not yet published
        child = multiprocessing.get_context("fork").Process(target=_forked_worker, args=(redis_url,))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        fleet = read_fleet(core)
        assert (fleet["hits"], fleet["misses"]) == (3, 3)  # the child's alone
        assert core.fleet is not None and core.fleet.flush()
        fleet = read_fleet(core)
        assert (fleet["hits"], fleet["misses"]) == (3, 4)  # plus the parent's miss, once
    finally:
        _inherited.clear()
        core.close()


def test_report_shows_the_fleet_with_a_chart(tmp_path: Path) -> None:
    from dspy_tiered_cache.report import report

    with CacheCore(disk_path=tmp_path / "c.sqlite3", fleet_flush_s=3600) as core:
        for ns in ("alpha", "beta"):
            key = core.key_for({"q": ns}, namespace=ns)
            core.set(key, {"a": 1})
            core.get(key)
            core.stats.record_savings("gpt-4o-mini", {"prompt_tokens": 100, "completion_tokens": 10}, key=key)
        shown = report(core, fleet=True, since="1h")
        assert shown.fleet is not None and shown.fleet["hits"] == 2  # this process's counts were published first
        text = str(shown)
        assert "fleet (every process, last 1h)" in text and "alpha" in text and "gpt-4o-mini" in text
        page = shown._repr_html_()
        assert "<svg" in page and page.count("<rect") == 2 and "dollars saved per namespace" in page
        only_beta = report(core, fleet=True, namespace="beta")
        assert only_beta.fleet is not None and list(only_beta.fleet["by_namespace"]) == ["beta"]


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
def test_fleet_counters_on_cluster_and_sentinel(topology: str, request: pytest.FixtureRequest) -> None:
    """One hash tag keeps a bucket, its batch script and the sequence keys in one Cluster slot."""
    if topology == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        core = CacheCore(redis_url=cluster.url, redis_cluster=True, fleet_flush_s=3600, key_prefix="fleet-cluster")
    else:
        sentinel = request.getfixturevalue("redis_sentinel")
        core = CacheCore(redis_url=sentinel.sentinel_url, fleet_flush_s=3600, key_prefix="fleet-sentinel")
    with core:
        before = read_fleet(core)
        assert before is not None
        key = core.key_for({"topology": topology})
        core.get(key)
        core.set(key, {"a": 1})
        core.get(key)
        assert core.fleet is not None and core.fleet.flush()
        after = read_fleet(core)
        assert after is not None
        assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (1, 1)


def test_reset_counters_and_misses_taken_back_are_published_exactly(tmp_path: Path) -> None:
    with CacheCore(disk_path=tmp_path / "c.sqlite3", fleet_flush_s=3600) as core:
        assert core.fleet is not None
        key = core.key_for({"q": "reset"})
        for _ in range(3):
            core.get(key)
        assert core.fleet.flush()
        core.stats.miss(key, -1)  # a semantic hit takes back the exact lookup's miss, one batch later
        assert core.fleet.flush()
        fleet = read_fleet(core)
        assert fleet is not None and fleet["misses"] == core.stats.misses == 2
        core.stats.reset()
        core.get(key)
        assert core.fleet.flush()
        fleet = read_fleet(core)
        assert fleet is not None and fleet["misses"] == 3  # 2 before the reset, 1 after


def test_small_counts_wait_for_a_batch_but_reach_the_fleet_at_close(tmp_path: Path) -> None:
    """A periodic batch costs ~10 Redis commands: a process that counted a few lookups does not send one every
    ``fleet_flush_s``, yet nothing it counted is missing from the fleet view once it closes."""
    path = tmp_path / "c.sqlite3"
    with CacheCore(disk_path=path, fleet_flush_s=0.01) as core:
        key = core.key_for({"q": 1}, namespace="quiet")
        core.get(key)
        core.set(key, {"answer": 1})
        core.get(key)
        assert core.fleet is not None
        assert core.fleet.flush(periodic=True) and core.fleet.batches == 0
        with CacheCore(disk_path=path, fleet=False) as reader:
            assert (read_fleet(reader, since="1h") or {}).get("hits", 0) == 0
    assert core.fleet.batches == 1
    with CacheCore(disk_path=path, fleet=False) as reader:
        fleet = read_fleet(reader, since="1h")
    assert fleet is not None and (fleet["hits"], fleet["misses"]) == (1, 1)


def test_fleet_view_shows_bytes_per_entry_and_compression_per_tier(redis_url: str) -> None:
    """Every process adds what its tiers stored (entries, payload bytes, stored bytes) to its batches; the fleet
    view divides them: bytes per entry and compression ratio per tier, fleet-wide, in ``stats`` too."""
    from dspy_tiered_cache.report import fleet_tables

    answer = {"choices": [{"message": {"content": "A cached answer that compresses well. " * 40}}]}
    for _ in range(2):  # two processes' worth of batches, summed
        with CacheCore(redis_url=redis_url, disk=False, key_prefix="fleetbytes", fleet_flush_s=3600) as core:
            for i in range(3):
                core.set(core.key_for({"q": i, "run": time.monotonic()}), answer)
            core.flush()
            l2 = core.tiers[-1]
            expected = (l2.writes, l2.payload_bytes, l2.stored_bytes)
    with CacheCore(redis_url=redis_url, disk=False, key_prefix="fleetbytes", fleet=False) as reader:
        fleet = read_fleet(reader, since="1h")
    assert fleet is not None
    tier = fleet["tiers"]["l2"]
    assert (tier["writes"], tier["payload_bytes"], tier["stored_bytes"]) == tuple(2 * n for n in expected)
    assert tier["bytes_per_entry"] == round(expected[2] / expected[0], 1)
    assert tier["compression_ratio"] == round(expected[1] / expected[2], 3) and tier["compression_ratio"] > 2
    table = fleet_tables(fleet)
    assert "bytes per entry" in table and f"{tier['compression_ratio']:.2f}x" in table
