"""Record and replay across processes, through both doors, with real HTTP (issue 16's "done when").

A DSPy ``ChainOfThought`` program and a ``litellm.completion`` call are recorded against the stand-in provider and
exported; another Python process, whose provider is unreachable and whose mode is ``replay``, imports the file
into an empty cache and must print the same outputs; a changed question there fails with ``ReplayMiss`` in well
under a second (no network retries). The file is deterministic and carries no key or endpoint.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import dspy
import litellm
import pytest

from dspy_tiered_cache import CacheCore, ReplayMiss
from dspy_tiered_cache.integrations.dspy import CachedLM
from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.testing.provider import StandInProvider

MODEL = "openai/gpt-4o-mini"
QUESTION = "What is a cache stampede?"
KEY = "sk-record-replay-test-key"

#: The same program in the replaying process: the stand-in is gone, only an unreachable port is left.
REPLAY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time, warnings
    warnings.filterwarnings("ignore")
    # litellm before dspy: DSPy 3.4.0's lazy import of openai breaks `import dspy, litellm` with openai 3.x
    # (a circular import inside openai, before any code of ours runs); DSPy 3.4.1 does not.
    import litellm, dspy
    from dspy_tiered_cache import CacheCore, ReplayMiss
    from dspy_tiered_cache.integrations.dspy import CachedLM
    from dspy_tiered_cache.integrations.litellm import TieredCache

    recording, api_base = sys.argv[1], sys.argv[2]
    core = CacheCore()  # DSPY_TIERED_CACHE_MODE=replay and an empty disk file, from the environment
    assert core.settings.mode == "replay", core.settings.mode
    imported = core.import_(recording)
    lm = dspy.LM("openai/gpt-4o-mini", api_base=api_base, api_key="sk-other", num_retries=3)
    dspy.configure(lm=CachedLM(lm, cache=core))
    qa = dspy.ChainOfThought("question -> answer")
    prediction = qa(question=%(question)r)
    litellm.cache = TieredCache(core=core)
    response = litellm.completion(
        model="openai/gpt-4o-mini", api_base=api_base, api_key="sk-other",
        messages=[{"role": "user", "content": "Name one cache eviction policy."}],
    )
    misses = []
    for call in (
        lambda: qa(question=%(question)r.replace("stampede", "avalanche")),
        lambda: litellm.completion(
            model="openai/gpt-4o-mini", api_base=api_base, api_key="sk-other", num_retries=3,
            messages=[{"role": "user", "content": "Name two cache eviction policies."}],
        ),
    ):
        started = time.perf_counter()
        try:
            call()
            misses.append({"raised": None})
        except ReplayMiss as exc:
            misses.append({"raised": "ReplayMiss", "seconds": time.perf_counter() - started, "message": str(exc)})
        except Exception as exc:
            misses.append({"raised": type(exc).__name__, "message": str(exc)})
    print(json.dumps({
        "imported": imported.entries,
        "reasoning": prediction.reasoning, "answer": prediction.answer,
        "completion": response.choices[0].message.content,
        "misses": misses,
    }))
    """
)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def recorded(tmp_path: Path, provider: StandInProvider) -> tuple[Path, dict[str, str], CacheCore]:
    previous = litellm.cache
    core = CacheCore(disk_path=tmp_path / "recorder.sqlite3", record_requests=True)
    try:
        lm = dspy.LM(MODEL, api_base=provider.base_url, api_key=KEY, num_retries=0)
        with dspy.context(lm=CachedLM(lm, cache=core)):
            prediction = dspy.ChainOfThought("question -> answer")(question=QUESTION)
        litellm.cache = TieredCache(core=core)
        response = litellm.completion(
            model=MODEL,
            api_base=provider.base_url,
            api_key=KEY,
            messages=[{"role": "user", "content": "Name one cache eviction policy."}],
        )
    finally:
        litellm.cache = previous
    assert provider.request_count == 2
    outputs = {
        "reasoning": prediction.reasoning,
        "answer": prediction.answer,
        "completion": response.choices[0].message.content,
    }
    path = tmp_path / "recording.jsonl.gz"
    summary = core.export(path)
    assert summary.entries == 2 and summary.with_requests == 2
    yield path, outputs, core
    core.close()


def test_recording_replays_identically_in_another_process(
    recorded: tuple[Path, dict[str, str], CacheCore], tmp_path: Path, provider: StandInProvider
) -> None:
    path, outputs, _ = recorded
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSPY_TIERED_CACHE_") or k.endswith("_SERVER")}
    env.update(
        DSPY_TIERED_CACHE_MODE="replay",
        DSPY_TIERED_CACHE_DISK_PATH=str(tmp_path / "empty.sqlite3"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    env.pop("OPENAI_API_KEY", None)
    api_base = f"http://127.0.0.1:{_closed_port()}/v1"
    proc = subprocess.run(
        [sys.executable, "-c", REPLAY_SCRIPT % {"question": QUESTION}, str(path), api_base],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["imported"] == 2
    assert {k: result[k] for k in outputs} == outputs
    dspy_miss, litellm_miss = result["misses"]
    for miss in (dspy_miss, litellm_miss):
        assert miss["raised"] == "ReplayMiss", miss
        assert miss["seconds"] < 1.0, miss  # at once: no upstream attempt, no retries
        assert "namespace 'default'" in miss["message"] and "openai/gpt-4o-mini" in miss["message"]
    assert "avalanche" in dspy_miss["message"] and "stampede" in dspy_miss["message"]  # asked vs recorded
    assert (
        "'Name two cache eviction policies.' (recorded: 'Name one cache eviction policy.')" in (litellm_miss["message"])
    )
    assert provider.request_count == 2  # the replaying process never reached the (recording) provider


def test_exports_are_deterministic_inspectable_and_hold_no_secrets(
    recorded: tuple[Path, dict[str, str], CacheCore], tmp_path: Path, provider: StandInProvider
) -> None:
    path, _, core = recorded
    again = tmp_path / "again.jsonl.gz"
    time.sleep(1.1)  # an export time in the file would now differ
    core.export(again)
    assert again.read_bytes() == path.read_bytes()
    # Re-imported into an empty cache and exported from there: still the same bytes.
    with CacheCore(disk_path=tmp_path / "other.sqlite3") as other:
        other.import_(path)
        third = tmp_path / "third.jsonl.gz"
        other.export(third)
    assert third.read_bytes() == path.read_bytes()
    text = gzip.decompress(path.read_bytes()).decode()
    header, *entries = (json.loads(line) for line in text.splitlines())
    assert header == {
        "entries": 2,
        "format": "dspy-tiered-cache/recording",
        "keying": "sha256",
        "namespaces": ["default"],
        "version": 1,
    }
    assert [e["request"]["model"] for e in entries] == [MODEL, MODEL]
    assert KEY not in text and "sk-" not in text
    assert provider.base_url not in text and f":{provider.port}" not in text


def test_replay_context_manager_in_this_process(
    recorded: tuple[Path, dict[str, str], CacheCore],
) -> None:
    from dspy_tiered_cache import replay

    path, outputs, _ = recorded
    api_base = f"http://127.0.0.1:{_closed_port()}/v1"
    lm = dspy.LM(MODEL, api_base=api_base, api_key="sk-other", num_retries=0)
    previous = litellm.cache
    with replay(path, lm=lm) as core:
        assert core.settings.mode == "replay"
        qa = dspy.ChainOfThought("question -> answer")
        assert qa(question=QUESTION).answer == outputs["answer"]
        with pytest.raises(ReplayMiss):
            qa(question="Something never asked")
        response = litellm.completion(
            model=MODEL,
            api_base=api_base,
            messages=[{"role": "user", "content": "Name one cache eviction policy."}],
        )
        assert response.choices[0].message.content == outputs["completion"]
    assert litellm.cache is previous


def test_litellm_door_modes_and_replay_miss_spans(provider: StandInProvider, tmp_path: Path, otel_spans: Any) -> None:
    """``TieredCache(mode=...)`` takes our modes beside LiteLLM's own; replay misses are spans of their own."""
    call = {"model": MODEL, "api_base": provider.base_url, "api_key": KEY}
    previous = litellm.cache
    try:
        with CacheCore(disk_path=tmp_path / "c.sqlite3") as core:
            litellm.cache = TieredCache(core=core)
            first = litellm.completion(**call, messages=[{"role": "user", "content": "one"}])
            litellm.cache = TieredCache(core=core, mode="replay")
            again = litellm.completion(**call, messages=[{"role": "user", "content": "one"}])
            assert again.choices[0].message.content == first.choices[0].message.content
            with pytest.raises(ReplayMiss, match="'two'"):
                litellm.completion(**call, messages=[{"role": "user", "content": "two"}])
            assert provider.request_count == 1
            litellm.cache = TieredCache(core=core, mode="refresh")
            litellm.completion(**call, messages=[{"role": "user", "content": "one"}])
            assert provider.request_count == 2  # refresh never reads
        built = TieredCache(mode="replay", disk=False)
        assert built.core.settings.mode == "replay" and built.mode.value == "default_on"
        built.close()
    finally:
        litellm.cache = previous
    levels = [s.attributes["cache.level"] for s in otel_spans.get_finished_spans() if "cache.level" in s.attributes]
    assert "replay-miss" in levels


def test_dspy_door_modes(provider: StandInProvider, tmp_path: Path) -> None:
    """``CachedLM(lm, mode=...)``: refresh calls upstream and re-records; replay serves it and raises on the rest."""
    lm = dspy.LM(MODEL, api_base=provider.base_url, api_key=KEY, num_retries=0)
    with CacheCore(disk_path=tmp_path / "d.sqlite3") as core:
        with dspy.context(lm=CachedLM(lm, cache=core)):
            dspy.Predict("question -> answer")(question="one")
        with dspy.context(lm=CachedLM(lm, cache=core, mode="refresh")):
            refreshed = dspy.Predict("question -> answer")(question="one")
        assert provider.request_count == 2
        replaying = CachedLM(lm, cache=core, mode="replay")
        assert replaying.cache_adapter.mode == "replay"  # saved state is a plain dspy.LM (DSPy fidelity, issue 14)
        with dspy.context(lm=replaying):
            assert dspy.Predict("question -> answer")(question="one").answer == refreshed.answer
            with pytest.raises(ReplayMiss, match="question ## ]] two"):
                dspy.Predict("question -> answer")(question="two")
        assert provider.request_count == 2
