"""The DSPy door end to end: real DSPy programs, real HTTP to the stand-in provider, real Redis servers.

Every test counts the requests the provider received: that count is what a cache exists to cut. Both of
DSPy 3.4's engines are covered where the stored value differs (the native lm15 engine stores a plain dict,
the LiteLLM engine a pydantic ``ModelResponse``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dspy_tiered_cache import core as core_module

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map

import cloudpickle
import dspy
import pytest

from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations._dspy_install import DispatchingCache
from dspy_tiered_cache.integrations._dspy_release import HAS_ACLOSE, HAS_ENGINES
from dspy_tiered_cache.integrations.dspy import (
    CachedLM,
    DSPyCacheAdapter,
    install_dspy_cache,
    uninstall_dspy_cache,
)
from dspy_tiered_cache.testing.provider import StandInProvider
from dspy_tiered_cache.testing.redis_server import RedisServer

API_KEY = "sk-test-secret-never-stored"
MODEL = "openai/gpt-4o-mini"
# DSPy 3.4: native lm15 (stores a dict) and LiteLLM (stores a ModelResponse); 3.0-3.3 always call LiteLLM.
ENGINES = ["auto", "litellm"] if HAS_ENGINES else ["litellm"]

pytestmark = pytest.mark.filterwarnings(
    "ignore:Passing OpenAI-style message dictionaries:DeprecationWarning",
    "ignore::pydantic.warnings.PydanticDeprecatedSince20",
)


@pytest.fixture(autouse=True)
def _dspy_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """DSPy's own disk cache (if any test makes DSPy build it) lands in tmp; global state is restored."""
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    yield
    uninstall_dspy_cache()
    dspy.configure(lm=None, track_usage=False)
    default = core_module._default_core
    if default is not None:
        core_module._default_core = None
        default.close()


@pytest.fixture
def core(redis_url: str) -> Iterator[CacheCore]:
    with CacheCore(redis_url=redis_url, disk=False) as c:
        yield c


def make_lm(provider: StandInProvider, engine: str = "auto", **kwargs: Any) -> Any:
    if HAS_ENGINES:  # on DSPy 3.0-3.3 `engine` would be sent to the provider as a request argument
        kwargs["engine"] = engine
    return dspy.LM(MODEL, api_base=provider.base_url, api_key=API_KEY, num_retries=0, **kwargs)


async def aclose(lm: Any) -> None:
    """Close the LM's engine pools on this loop (DSPy 3.4+; 3.0-3.3 have no pools of their own, no aclose)."""
    if HAS_ACLOSE:
        await lm.aclose()


def answers(predictions: list[Any]) -> list[str]:
    return [p.answer for p in predictions]


# ---------------------------------------------------------------------------------------------- basics


@pytest.mark.parametrize("engine", ENGINES)
def test_predict_and_chain_of_thought_hit_with_identical_outputs(
    provider: StandInProvider, core: CacheCore, engine: str
) -> None:
    questions = ["What is DSPy?", "Why cache LM calls?"]
    # Reference: the same program without any cache.
    dspy.configure(lm=make_lm(provider, engine, cache=False))
    reference = [dspy.ChainOfThought("question -> answer")(question=q) for q in questions]
    provider.reset()

    dspy.configure(lm=CachedLM(make_lm(provider, engine), cache=core))
    program = dspy.ChainOfThought("question -> answer")
    first = [program(question=q) for q in questions]
    assert provider.request_count == 2
    second = [dspy.ChainOfThought("question -> answer")(question=q) for q in questions]
    assert provider.request_count == 2  # all hits
    for ref, miss, hit in zip(reference, first, second, strict=True):
        assert (ref.reasoning, ref.answer) == (miss.reasoning, miss.answer) == (hit.reasoning, hit.answer)
    assert core.stats.hits == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_hits_are_not_billed_and_savings_are_counted(provider: StandInProvider, core: CacheCore, engine: str) -> None:
    lm = CachedLM(make_lm(provider, engine), cache=core)
    dspy.configure(lm=lm, track_usage=True)
    predict = dspy.Predict("question -> answer")
    with dspy.track_usage() as first_usage:
        predict(question="count my tokens")
    with dspy.track_usage() as hit_usage:
        predict(question="count my tokens")
    assert provider.request_count == 1
    spent = first_usage.get_total_tokens()[MODEL]
    assert spent["prompt_tokens"] > 0
    assert hit_usage.get_total_tokens() == {}  # a hit bills nothing
    assert lm.history[-1]["usage"] == {}
    snap = core.stats.snapshot()
    assert snap["prompt_tokens_saved"] == spent["prompt_tokens"]
    assert snap["completion_tokens_saved"] == spent["completion_tokens"]
    assert snap["dollars_saved"] > 0  # gpt-4o-mini has a price in the cost map


def test_sync_and_async_share_one_entry(provider: StandInProvider, core: CacheCore) -> None:
    dspy.configure(lm=CachedLM(make_lm(provider), cache=core))
    predict = dspy.Predict("question -> answer")
    sync_answer = predict(question="shared?").answer
    async_answer = asyncio.run(predict.acall(question="shared?")).answer
    assert async_answer == sync_answer
    assert provider.request_count == 1
    asyncio.run(predict.acall(question="async first"))
    predict(question="async first")
    assert provider.request_count == 2


def test_cache_false_rollout_id_and_copy(provider: StandInProvider, core: CacheCore) -> None:
    lm = CachedLM(make_lm(provider), cache=core)
    dspy.configure(lm=lm)
    predict = dspy.Predict("question -> answer")
    predict(question="q")
    predict(question="q", config={"cache": False})
    assert provider.request_count == 2  # cache=False goes upstream even with an entry present
    uncached = lm.copy(cache=False)
    with dspy.context(lm=uncached):
        predict(question="q")
    assert provider.request_count == 3

    rolled = lm.copy(rollout_id=7, temperature=1.0)
    assert isinstance(rolled, CachedLM) and rolled.core is lm.core
    with dspy.context(lm=rolled):
        predict(question="q")  # a new rollout: a new entry
        predict(question="q")  # ... then a hit
    assert provider.request_count == 4
    with dspy.context(lm=lm.copy(rollout_id=7, temperature=1.0)):
        predict(question="q")
    assert provider.request_count == 4


def test_n_greater_than_one_is_cached_whole(provider: StandInProvider, core: CacheCore) -> None:
    dspy.configure(lm=CachedLM(make_lm(provider), cache=core))
    predict = dspy.Predict("question -> answer", n=3)
    first = predict(question="three please")
    upstream = provider.request_count
    second = predict(question="three please")
    assert provider.request_count == upstream
    assert len(second.completions) == 3
    assert [c.answer for c in second.completions] == [c.answer for c in first.completions]


@pytest.mark.parametrize("engine", ENGINES)
async def test_streaming_miss_streams_and_hit_returns_the_same_prediction(
    provider: StandInProvider, core: CacheCore, engine: str
) -> None:
    lm = CachedLM(make_lm(provider, engine), cache=core)
    program = dspy.streamify(
        dspy.Predict("question -> answer"),
        stream_listeners=[dspy.streaming.StreamListener(signature_field_name="answer")],
    )

    async def run() -> tuple[int, Any]:
        chunks, final = 0, None
        with dspy.context(lm=lm):  # dspy.configure belongs to the first task that called it
            async for item in program(question="stream this"):
                if isinstance(item, dspy.Prediction):
                    final = item
                else:
                    chunks += 1
        return chunks, final

    streamed, first = await run()
    cached, second = await run()
    assert streamed > 0 and cached == 0  # a hit has nothing to stream: DSPy yields the prediction
    assert first.answer == second.answer
    assert provider.request_count == 1


# ---------------------------------------------------------------------------------------------- single-flight


@pytest.mark.parametrize("engine", ENGINES)
def test_parallel_over_duplicates_makes_one_call_per_distinct_request(
    provider: StandInProvider, core: CacheCore, engine: str
) -> None:
    provider.latency = 0.05
    dspy.configure(lm=CachedLM(make_lm(provider, engine), cache=core))
    predict = dspy.Predict("question -> answer")
    examples = [dspy.Example(question=f"dup {i % 4}").with_inputs("question") for i in range(16)]
    results = dspy.Parallel(num_threads=8, disable_progress_bar=True)([(predict, ex) for ex in examples])
    assert provider.request_count == 4
    assert answers(results) == [answers(results)[i % 4] for i in range(16)]
    assert core.stats.joined > 0


async def test_async_gather_single_flight_without_starving_the_executor(
    provider: StandInProvider, core: CacheCore
) -> None:
    """More concurrent identical acalls than the default executor has workers: no deadlock, one call each."""
    provider.latency = 0.05
    predict = dspy.Predict("question -> answer")
    started = time.monotonic()
    lm = CachedLM(make_lm(provider), cache=core)
    with dspy.context(lm=lm):
        results = await asyncio.gather(*[predict.acall(question=f"gather {i % 2}") for i in range(24)])
    await aclose(lm)  # this loop's connection pool
    assert time.monotonic() - started < 10
    assert provider.request_count == 2
    assert len({r.answer for r in results}) == 2


def test_a_failing_leader_releases_its_followers_sync(provider: StandInProvider, core: CacheCore) -> None:
    provider.latency = 0.1
    provider.fail_next(1, status=400)
    lm = CachedLM(make_lm(provider), cache=core)
    barrier = threading.Barrier(6)

    def call() -> Any:
        # The LM itself, not a Predict: DSPy 3.0-3.3's ChatAdapter retries any error once with JSONAdapter (a
        # different request), which would hide the leader's failure.
        barrier.wait()
        try:
            return lm("the leader fails")[0]
        except Exception as exc:
            return exc

    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: call(), range(6)))
    assert time.monotonic() - started < 5  # nobody waited for a single-flight timeout
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failures) == 1
    assert provider.request_count == 2  # the failed leader's call, then one new leader for everyone else
    assert len({o for o in outcomes if not isinstance(o, Exception)}) == 1


async def test_a_failing_leader_releases_its_followers_async(provider: StandInProvider, core: CacheCore) -> None:
    provider.latency = 0.1
    provider.fail_next(1, status=400)
    started = time.monotonic()
    lm = CachedLM(make_lm(provider), cache=core)
    # The LM itself: DSPy 3.0-3.3's ChatAdapter would retry the failure with JSONAdapter (see the sync test).
    outcomes = await asyncio.gather(*[lm.acall("async leader fails") for _ in range(6)], return_exceptions=True)
    await aclose(lm)
    assert time.monotonic() - started < 5
    assert sum(isinstance(o, BaseException) for o in outcomes) == 1
    assert provider.request_count == 2


# ---------------------------------------------------------------------------------------------- programs


def test_bootstrap_compile_twice_second_makes_no_upstream_call(provider: StandInProvider, core: CacheCore) -> None:
    dspy.configure(lm=CachedLM(make_lm(provider), cache=core))
    trainset = [dspy.Example(question=f"train {i}", answer=f"a{i}").with_inputs("question") for i in range(4)]

    def compile_once() -> Any:
        optimizer = dspy.BootstrapFewShot(
            metric=lambda ex, pred, trace=None: True, max_bootstrapped_demos=2, max_rounds=2
        )
        return optimizer.compile(dspy.ChainOfThought("question -> answer"), trainset=trainset)

    first = compile_once()
    assert provider.request_count > 0
    provider.reset()
    second = compile_once()
    assert provider.request_count == 0
    assert [d.toDict() for d in second.predict.demos] == [d.toDict() for d in first.predict.demos]


def test_react_with_tools_reruns_from_cache(provider: StandInProvider, core: CacheCore) -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    dspy.configure(lm=CachedLM(make_lm(provider), cache=core))
    first = dspy.ReAct("question -> answer", tools=[add], max_iters=3)(question="what is 1 + 2?")
    upstream = provider.request_count
    assert upstream >= 2  # at least one step and the extraction
    second = dspy.ReAct("question -> answer", tools=[add], max_iters=3)(question="what is 1 + 2?")
    assert provider.request_count == upstream
    assert second.answer == first.answer and second.trajectory == first.trajectory


def test_evaluate_and_best_of_n_rerun_from_cache(provider: StandInProvider, core: CacheCore) -> None:
    dspy.configure(lm=CachedLM(make_lm(provider), cache=core))
    devset = [dspy.Example(question=f"dev {i}", answer="x").with_inputs("question") for i in range(6)]
    best = dspy.BestOfN(dspy.Predict("question -> answer"), N=3, reward_fn=lambda args, pred: 0.0, threshold=1.0)

    def run() -> float:
        evaluate = dspy.Evaluate(
            devset=devset, metric=lambda ex, pred, trace=None: True, num_threads=3, display_progress=False
        )
        best(question="best of three")  # three rollouts through lm.copy(rollout_id=...)
        return float(evaluate(dspy.Predict("question -> answer")).score)

    assert run() == 100.0
    assert provider.request_count == 6 + 3
    provider.reset()
    assert run() == 100.0
    assert provider.request_count == 0


# ---------------------------------------------------------------------------------------------- sharing


def test_a_second_process_reuses_the_cache_through_redis_and_a_pickled_program(
    provider: StandInProvider, redis_url: str, tmp_path: Path
) -> None:
    secret = "key-secret-for-hmac-0123456789"
    with CacheCore(redis_url=redis_url, disk=False, key_secret=secret) as shared:
        lm = CachedLM(make_lm(provider), cache=shared)
        program = dspy.ChainOfThought("question -> answer")
        program.predict.lm = lm
        expected = [program(question=f"cross-process {i}").answer for i in range(3)]
        assert provider.request_count == 3
        assert shared.flush(5.0)
        blob = cloudpickle.dumps(program)
    assert redis_url.encode() not in blob and secret.encode() not in blob
    (tmp_path / "program.pkl").write_bytes(blob)
    script = textwrap.dedent(
        f"""
        import json, os, cloudpickle
        import dspy
        program = cloudpickle.loads(open({str(tmp_path / "program.pkl")!r}, "rb").read())
        fresh = dspy.ChainOfThought("question -> answer")
        fresh.predict.lm = program.predict.lm
        out = [program(question=f"cross-process {{i}}").answer for i in range(2)]
        out.append(fresh(question="cross-process 2").answer)
        print(json.dumps({{"answers": out, "stats": program.predict.lm.core.stats.snapshot()}}))
        """
    )
    env = {
        **os.environ,
        "DSPY_TIERED_CACHE_REDIS_URL": redis_url,
        "DSPY_TIERED_CACHE_KEY_SECRET": secret,
        "DSPY_CACHEDIR": str(tmp_path / "child-dspy-cache"),
    }
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["answers"] == expected
    assert result["stats"]["tiers"]["l2"]["hits"] == 3
    assert provider.request_count == 3  # the second process made no upstream call


def test_redis_killed_mid_run_the_program_still_finishes(provider: StandInProvider, private_redis: RedisServer) -> None:
    with CacheCore(redis_url=private_redis.url, disk=False, redis_timeout_ms=100, redis_connect_timeout_ms=100) as c:
        dspy.configure(lm=CachedLM(make_lm(provider), cache=c))
        predict = dspy.Predict("question -> answer")
        before = [predict(question=f"before {i}").answer for i in range(3)]
        private_redis.kill()
        started = time.monotonic()
        again = [predict(question=f"before {i}").answer for i in range(3)]  # L1 still serves these
        fresh = [predict(question=f"after {i}").answer for i in range(5)]
        results = dspy.Parallel(num_threads=4, disable_progress_bar=True)(
            [(predict, dspy.Example(question=f"after {i % 5}").with_inputs("question")) for i in range(10)]
        )
        assert time.monotonic() - started < 10
        assert again == before
        assert answers(results) == [fresh[i % 5] for i in range(10)]
        assert provider.request_count == 3 + 5
        assert (
            c.stats.snapshot()["tiers"]["l2"]["errors"] + c.stats.snapshot()["tiers"]["l2"]["skipped_breaker_open"] > 0
        )


def test_include_api_base_separates_endpoints(provider: StandInProvider) -> None:
    with StandInProvider(salt="other model version") as other:
        for include, expected_calls in ((False, 1), (True, 2)):
            provider.reset()
            other.reset()
            with CacheCore(disk=False, include_api_base=include) as c:
                predict = dspy.Predict("question -> answer")
                with dspy.context(lm=CachedLM(make_lm(provider), cache=c)):
                    a = predict(question="which server?").answer
                with dspy.context(lm=CachedLM(make_lm(other), cache=c)):
                    b = predict(question="which server?").answer
            assert provider.request_count + other.request_count == expected_calls
            assert (a == b) is (not include)


def test_api_key_is_not_part_of_keys_or_values(
    provider: StandInProvider, core: CacheCore, redis_server: RedisServer
) -> None:
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=CachedLM(make_lm(provider), cache=core)):
        predict(question="key check")
    other_key = dspy.LM(MODEL, api_base=provider.base_url, api_key="sk-another-key", num_retries=0)
    with dspy.context(lm=CachedLM(other_key, cache=core)):
        predict(question="key check")
    assert provider.request_count == 1
    assert core.flush(5.0)
    client = redis_server.client()
    keys = client.keys("*")
    assert keys
    for key in keys:
        assert b"sk-" not in key
        value = client.get(key)
        if value is not None:
            assert API_KEY.encode() not in value


# ---------------------------------------------------------------------------------------------- DSPy's cache


def test_other_lms_keep_dspy_cache_and_its_default_is_not_built(
    provider: StandInProvider, core: CacheCore, tmp_path: Path
) -> None:
    saved = dspy.__dict__.pop("cache", None)  # as right after `import dspy`: DSPy's default not built yet
    try:
        lm = CachedLM(make_lm(provider), cache=core)
        dispatcher = dspy.__dict__["cache"]
        assert isinstance(dispatcher, DispatchingCache)
        with dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question="only ours")
        assert dispatcher.base is None
        assert not (tmp_path / "dspy-cache").exists()

        dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
        with pytest.warns(RuntimeWarning, match="configure_cache"), dspy.context(lm=lm):
            dspy.Predict("question -> answer")(question="only ours")
        assert provider.request_count == 1  # still served by the tiered cache
        base = dspy.cache.base
        with dspy.context(lm=make_lm(provider)):  # a plain LM uses the cache the user configured
            dspy.Predict("question -> answer")(question="plain lm")
            dspy.Predict("question -> answer")(question="plain lm")
        assert provider.request_count == 2
        assert len(base.memory_cache) == 1
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with dspy.context(lm=lm):
                dspy.Predict("question -> answer")(question="only ours")  # warned once only
    finally:
        uninstall_dspy_cache()
        if saved is not None:
            dspy.cache = saved


def test_install_dspy_cache_covers_plain_lms_and_the_embedder(provider: StandInProvider, core: CacheCore) -> None:
    adapter = install_dspy_cache(core)
    assert isinstance(adapter, DSPyCacheAdapter)
    embedder = dspy.Embedder(
        "openai/text-embedding-3-small", api_base=provider.base_url, api_key=API_KEY, encoding_format="float"
    )
    first = embedder(["one", "two"])
    second = embedder(["one", "two"])
    assert [list(v) for v in first] == [list(v) for v in second]
    with dspy.context(lm=make_lm(provider)):
        dspy.Predict("question -> answer")(question="global")
        dspy.Predict("question -> answer")(question="global")
    assert provider.request_count == 2
    assert core.stats.hits == 2
    uninstall_dspy_cache()
    assert not isinstance(dspy.__dict__.get("cache"), (DispatchingCache, DSPyCacheAdapter))


def test_adapter_never_raises(core: CacheCore) -> None:
    adapter = DSPyCacheAdapter(core)
    uncacheable = {"model": MODEL, "messages": [], "hook": object()}
    assert adapter.get(uncacheable, ["api_key"]) is None
    adapter.put(uncacheable, {"x": 1})
    adapter.put({"model": MODEL, "messages": []}, object())  # no JSON form: not stored, no error
    assert adapter.get({"model": MODEL, "messages": []}) is None
    assert core.stats.uncacheable == 2 and core.stats.store_skipped == 1
    core.set(
        adapter.cache_key({"model": MODEL, "messages": ["forged"]}),
        {"__dtc_value__": 1, "tagged": True, "data": {"__dtc_type__": "os.system"}},
    )
    assert adapter.get({"model": MODEL, "messages": ["forged"]}) is None


def test_cache_argument_forms(provider: StandInProvider, core: CacheCore) -> None:
    from dspy_tiered_cache.settings import load_settings

    plain = make_lm(provider)
    first, second = CachedLM(plain, memory_max_entries=5, disk=False), CachedLM(plain)
    assert first.core.settings.memory_max_entries == 5
    assert second.core is CachedLM(make_lm(provider)).core  # one env-configured core per process
    assert CachedLM(plain, cache=load_settings(disk=False)).core.settings.disk is False
    rewrapped = CachedLM(CachedLM(plain, cache=core), namespace="v2")
    assert rewrapped.core is core and rewrapped.cache_adapter.namespace == "v2"
    assert type(rewrapped.unwrap()) is dspy.LM and rewrapped.unwrap().model == MODEL
    with pytest.raises(TypeError, match="existing cache"):
        CachedLM(plain, cache=core, memory=False)
    with pytest.raises(TypeError, match="cache="):
        CachedLM(plain, cache="redis://localhost")
    with pytest.raises(TypeError, match=r"dspy\.LM"):
        CachedLM(dspy.utils.DummyLM([{"answer": "x"}]))

    class LegacyPlugin(dspy.LM):  # type: ignore[misc]
        def forward(self, prompt: Any = None, messages: Any = None, **kwargs: Any) -> Any:
            raise NotImplementedError

    with pytest.raises(TypeError, match="forward"):
        CachedLM(LegacyPlugin(MODEL))

    class Tweaked(dspy.LM):  # type: ignore[misc]
        pass

    with pytest.warns(RuntimeWarning, match="not its methods"):
        CachedLM(Tweaked(MODEL), cache=core)


@pytest.mark.litellm_door
def test_a_tiered_cache_as_the_cache_argument_shares_its_core(provider: StandInProvider, core: CacheCore) -> None:
    from dspy_tiered_cache.integrations.litellm import TieredCache

    assert CachedLM(make_lm(provider), cache=TieredCache(core=core)).core is core  # one cache for both doors


# ---------------------------------------------------------------------------------------------- saving


def test_deepcopy_pickle_and_saved_state(provider: StandInProvider, redis_url: str, tmp_path: Path) -> None:
    secret = "another-key-secret-0123456789"
    with CacheCore(redis_url=redis_url, disk=False, key_secret=secret) as c:
        lm = CachedLM(make_lm(provider), cache=c, namespace="prompt-v2", ttl=3600)
        program = dspy.ChainOfThought("question -> answer")
        program.predict.lm = lm
        answer = program(question="copy me").answer

        clone = copy.deepcopy(program)
        assert clone.predict.lm is not lm and clone.predict.lm.core is c
        restored = cloudpickle.loads(cloudpickle.dumps(program))  # DSPy's save_program=True format
        assert isinstance(restored.predict.lm, CachedLM) and restored.predict.lm.core is c
        plain_pickled = pickle.loads(pickle.dumps(lm))
        assert isinstance(plain_pickled, CachedLM) and plain_pickled.core is c
        assert plain_pickled.cache_adapter.namespace == "prompt-v2"
        assert clone(question="copy me").answer == restored(question="copy me").answer == answer
        assert provider.request_count == 1

        # Saving to JSON and loading with DSPy's default load(): tests/integrations/test_dspy_fidelity.py
