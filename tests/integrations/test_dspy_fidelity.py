"""DSPy's own behaviour holds with the tiered cache: saved programs load, non-JSON values are cached, code that
reads ``dspy.cache`` keeps working, and DSPy's global off switch switches ``CachedLM`` off too.

Real DSPy, real HTTP to the stand-in provider, through both of DSPy 3.4's engines (native lm15 and LiteLLM).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import logging
import os
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map

import dspy
import numpy
import pytest
from dspy.clients.cache import request_cache

from dspy_tiered_cache import core as core_module
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.integrations import _dspy_install
from dspy_tiered_cache.integrations import dspy as dspy_door
from dspy_tiered_cache.integrations._dspy_release import HAS_ENGINES, HAS_SAFE_LOAD, RECORDS_LM_CLASS
from dspy_tiered_cache.integrations.dspy import CachedLM, install_dspy_cache, uninstall_dspy_cache, wrap_program_lms
from dspy_tiered_cache.portable import RecordingError, read_recording
from dspy_tiered_cache.testing.provider import StandInProvider

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
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy-cache"))
    saved = dspy.__dict__.get("cache")
    yield
    uninstall_dspy_cache()
    if saved is not None:
        dspy.cache = saved
    dspy.configure(lm=None, track_usage=False)
    default = core_module._default_core
    if default is not None:
        core_module._default_core = None
        default.close()


@pytest.fixture
def core() -> Iterator[CacheCore]:
    with CacheCore(disk=False) as c:
        yield c


def make_lm(provider: StandInProvider, engine: str = "auto", **kwargs: Any) -> Any:
    if HAS_ENGINES:  # on DSPy 3.0-3.3 `engine` would be sent to the provider as a request argument
        kwargs["engine"] = engine
    return dspy.LM(MODEL, api_base=provider.base_url, api_key=API_KEY, num_retries=0, **kwargs)


# ------------------------------------------------------------------------------------- 1. saved programs load


@pytest.mark.parametrize("engine", ENGINES)
def test_a_saved_program_loads_with_dspy_default_load_and_caches_again_once_wrapped(
    provider: StandInProvider, core: CacheCore, tmp_path: Path, engine: str
) -> None:
    dspy.configure(lm=make_lm(provider, engine))
    program = dspy.ChainOfThought("question -> answer")
    program.predict.set_lm(CachedLM(make_lm(provider, engine), cache=core, namespace="prompt-v2", ttl=3600))
    answer = program(question="save me").answer
    assert provider.request_count == 1

    dspy_door._saved_warning["shown"] = False
    path = tmp_path / "program.json"
    with pytest.warns(UserWarning, match=r"wrap_program_lms.*namespace='prompt-v2', ttl=3600"):
        program.save(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        program.save(str(path))  # once per process
    saved = json.loads(path.read_text())
    lm_state = saved["predict"]["lm"]
    assert lm_state.get("_dspy_lm_class", "dspy.clients.lm.LM") == "dspy.clients.lm.LM"  # recorded on 3.4+
    assert set(lm_state) <= set(make_lm(provider, engine).dump_state()) | {"api_base"}  # nothing of ours
    assert API_KEY not in path.read_text()

    loaded = dspy.ChainOfThought("question -> answer")
    loaded.load(str(path))  # DSPy's default: no allow_unsafe_lm_state
    assert type(loaded.predict.lm) is dspy.LM
    dropped = ("api_base", "api_key") if HAS_SAFE_LOAD else ("api_key",)  # DSPy 3.0-3.1 keep the endpoint
    assert loaded.predict.lm.kwargs == {k: v for k, v in program.predict.lm.kwargs.items() if k not in dropped}
    assert wrap_program_lms(loaded, core, namespace="prompt-v2") == ["predict"]
    assert isinstance(loaded.predict.lm, CachedLM) and loaded.predict.lm.core is core
    assert wrap_program_lms(loaded, core) == []  # already cached: left alone
    # The loaded LM has no endpoint (DSPy 3.2+ drops api_base by default): only a hit can answer, and it does.
    assert loaded(question="save me").answer == answer
    assert provider.request_count == 1


def test_dump_state_of_plain_lms_is_unchanged(provider: StandInProvider, core: CacheCore) -> None:
    before = make_lm(provider).dump_state()
    cached = CachedLM(make_lm(provider), cache=core, namespace="v1")
    dspy_door._saved_warning["shown"] = True
    assert make_lm(provider).dump_state() == before
    assert before.get("_dspy_lm_class", "dspy.clients.lm.LM") == "dspy.clients.lm.LM"  # recorded on 3.4+
    assert cached.unwrap().dump_state() == before
    # The CachedLM saves exactly what its LM would, never the api_key (DSPy 3.0.0-3.0.3 save it in plain text).
    assert cached.dump_state() == {k: v for k, v in before.items() if k != "api_key"}


@pytest.mark.skipif(
    not RECORDS_LM_CLASS,
    reason="DSPy 3.0-3.3 load every LM as dspy.LM; our releases that recorded CachedLM required DSPy 3.4",
)
def test_files_saved_by_earlier_releases_still_load_as_cached_lms(provider: StandInProvider, tmp_path: Path) -> None:
    """Earlier releases recorded CachedLM itself; DSPy loads those only with allow_unsafe_lm_state=True."""
    state = make_lm(provider).dump_state()
    state.pop("api_base", None)
    state["_dspy_lm_class"] = "dspy_tiered_cache.integrations.dspy.CachedLM"
    state["tiered_cache"] = {"namespace": "old", "ttl": 60}
    path = tmp_path / "old.json"
    dspy.Predict("question -> answer").save(str(path))
    saved = json.loads(path.read_text())
    saved["lm"] = state
    path.write_text(json.dumps(saved))
    loaded = dspy.Predict("question -> answer")
    loaded.load(str(path), allow_unsafe_lm_state=True)
    assert isinstance(loaded.lm, CachedLM)
    assert loaded.lm.cache_adapter.namespace == "old" and loaded.lm.cache_adapter.ttl == 60
    assert "tiered_cache" not in loaded.lm.kwargs


# ------------------------------------------------------------------------------------- 2. non-JSON values


def embed_locally(texts: list[str]) -> Any:
    """A stand-in for SentenceTransformer.encode: a float32 matrix, one row per text."""
    embed_locally.calls += 1  # type: ignore[attr-defined]
    return numpy.array([[len(t), t.count("a"), 0.5] for t in texts], dtype=numpy.float32)


embed_locally.calls = 0  # type: ignore[attr-defined]


def test_embedder_with_a_local_numpy_function_is_cached(core: CacheCore) -> None:
    install_dspy_cache(core)
    embed_locally.calls = 0  # type: ignore[attr-defined]
    embedder = dspy.Embedder(embed_locally, caching=True)
    first = embedder(["alpha", "beta"])
    second = embedder(["alpha", "beta"])
    third = asyncio.run(embedder.acall(["alpha", "beta"]))  # sync and async share the entry
    assert embed_locally.calls == 1  # type: ignore[attr-defined]
    for again in (second, third):
        assert type(again) is numpy.ndarray and again.dtype == first.dtype
        assert numpy.array_equal(again, first)
    embedder(["gamma"])
    assert embed_locally.calls == 2  # type: ignore[attr-defined]


@dataclasses.dataclass
class Judgement:
    verdict: str
    scores: Any
    evidence: tuple[str, ...] = ()


judge_calls: list[str] = []


@request_cache()
def judge(claim: str) -> Judgement:
    judge_calls.append(claim)
    return Judgement(verdict=claim.upper(), scores=numpy.arange(3, dtype=numpy.int64), evidence=(claim,))


def test_request_cache_returning_a_dataclass_is_cached_with_its_type(core: CacheCore) -> None:
    install_dspy_cache(core)
    judge_calls.clear()
    first = judge(claim="sky is blue")
    again = judge(claim="sky is blue")
    assert judge_calls == ["sky is blue"]
    assert type(again) is Judgement and again is not first
    assert again.verdict == first.verdict and again.evidence == ("sky is blue",)
    assert again.scores.dtype == numpy.int64 and numpy.array_equal(again.scores, first.scores)


class Opaque:
    """No whitelisted form: not cached, the call still succeeds, one warning per type."""


@request_cache()
def make_opaque(n: int) -> Opaque:
    return Opaque()


def test_unknown_types_are_not_cached_and_warned_once_per_type(
    core: CacheCore, caplog: pytest.LogCaptureFixture
) -> None:
    install_dspy_cache(core)
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache.dspy"):
        results = [make_opaque(n=1), make_opaque(n=1), make_opaque(n=2)]
        install_dspy_cache(CacheCore(disk=False))  # another adapter: still the same type, still no new warning
        results.append(make_opaque(n=1))
        dspy.cache.override.core.close()
    assert all(isinstance(r, Opaque) for r in results) and len({id(r) for r in results}) == 4
    warned = [r for r in caplog.records if "Opaque" in r.getMessage()]
    assert len(warned) == 1 and "docs/compatibility.md" in warned[0].getMessage()
    assert core.stats.store_skipped == 3


# ------------------------------------------------------------------------------------- 3. reading dspy.cache


@request_cache()
def shout(text: str) -> str:
    return text.upper()


@pytest.mark.parametrize("engine", ENGINES)
def test_code_reading_dspy_cache_keeps_working(
    provider: StandInProvider, core: CacheCore, tmp_path: Path, engine: str
) -> None:
    install_dspy_cache(core)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=make_lm(provider, engine)):
        answer = predict(question="memory?").answer
    shout(text="hi")
    request = {"text": "hi", "_fn_identifier": f"{shout.__module__}.{shout.__qualname__}"}
    key = dspy.cache.cache_key(request)
    assert len(key) == 64 and int(key, 16) >= 0  # a SHA-256 hex digest, as DSPy's
    assert key in dspy.cache and key in dspy.cache.memory_cache
    assert dspy.cache.memory_cache[key] == "HI"
    assert len(dspy.cache.memory_cache) == 2 and len(list(dspy.cache.memory_cache)) == 2
    assert getattr(dspy.cache, "disk_cache", None) is None
    with pytest.raises(AttributeError, match=r"adapter\.core"):
        _ = dspy.cache.disk_cache

    path = tmp_path / "memory.jsonl.gz"
    dspy.cache.save_memory_cache(str(path))  # the record/replay recording format, never pickle
    recording = read_recording(path)
    assert len(recording.entries) == 2 and recording.namespaces == ["default"]
    assert API_KEY.encode() not in gzip.decompress(path.read_bytes())
    dspy.cache.reset_memory_cache()
    assert len(dspy.cache.memory_cache) == 0

    with CacheCore(disk=False) as fresh:  # another process's memory, filled from the file
        install_dspy_cache(fresh)
        assert dspy.cache.load_memory_cache(str(path)) == 2
        with dspy.context(lm=make_lm(provider, engine)):
            assert predict(question="memory?").answer == answer
        assert provider.request_count == 1
        assert fresh.stats.snapshot()["tiers"]["l1"]["hits"] == 1

        pickled = tmp_path / "dspy.pkl"
        pickled.write_bytes(pickle.dumps({"k": "v"}))
        with pytest.raises(RecordingError, match="not a valid"):
            dspy.cache.load_memory_cache(str(pickled), allow_pickle=True)


# ------------------------------------------------------------------------------------- 4. DSPy's off switch


@pytest.mark.parametrize("engine", ENGINES)
def test_configure_cache_off_switches_cached_lm_off_and_says_how(
    provider: StandInProvider, core: CacheCore, engine: str
) -> None:
    lm = CachedLM(make_lm(provider, engine), cache=core)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm):
        predict(question="switch")
        predict(question="switch")
    assert provider.request_count == 1

    _dspy_install._state["warned_off"] = False
    dspy.configure_cache(enable_memory_cache=False, enable_disk_cache=False)
    with pytest.warns(RuntimeWarning) as record, dspy.context(lm=lm):
        predict(question="switch")  # upstream: caching is off
        predict(question="switch off")
        predict(question="switch off")
    assert provider.request_count == 4
    assert any("DSPY_TIERED_CACHE_ENABLED=false" in str(w.message) for w in record)
    assert core.stats.hits == 1 and core.stats.stores == 1  # nothing read or written while off

    later = CachedLM(make_lm(provider, engine), cache=core)  # built after the switch: follows it too
    with dspy.context(lm=later), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict(question="switch")
    assert provider.request_count == 5

    dspy.configure_cache(enable_memory_cache=True, enable_disk_cache=False)  # one DSPy tier on: cached again
    with dspy.context(lm=lm), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict(question="switch")
    assert provider.request_count == 5 and core.stats.hits == 2
