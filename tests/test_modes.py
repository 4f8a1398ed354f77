"""Modes through the core and ``@cached``: replay never computes and says what it was asked, refresh never reads.

The doors' own replay behaviour (LiteLLM swallowing backend errors, DSPy adapters) is covered with real HTTP in
tests/integrations/test_record_replay.py.
"""

from __future__ import annotations

import asyncio
import pickle
from pathlib import Path

import pytest

from dspy_tiered_cache import CacheCore, CacheError, ConfigError, ReplayMiss, cached
from dspy_tiered_cache.modes import abbreviate, check_mode, describe_difference, prompt_of
from dspy_tiered_cache.options import CallOptions


def test_mode_names_are_checked_once_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_mode("Replay") == "replay" and check_mode("read_write") == "read-write"
    with pytest.raises(ValueError, match="read-write, replay, refresh"):
        check_mode("record")
    monkeypatch.setenv("DSPY_TIERED_CACHE_MODE", "playback")
    with pytest.raises(ConfigError, match="DSPY_TIERED_CACHE_MODE"):
        CacheCore(disk=False)
    monkeypatch.setenv("DSPY_TIERED_CACHE_MODE", "replay")
    with CacheCore(disk=False) as core:
        assert core.settings.mode == "replay"


def test_replay_miss_is_a_cache_error_that_survives_pickling() -> None:
    exc = ReplayMiss(model="m", namespace="ns", prompt="hello", difference="x: 1 (recorded: 2)", key="k")
    assert isinstance(exc, CacheError)
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.model == "m" and again.difference == exc.difference


def test_replay_never_computes_and_names_the_request(disk_path: Path) -> None:
    calls: list[str] = []
    with CacheCore(disk_path=disk_path, record_requests=True) as core:

        @cached(core=core, namespace="qa")
        def ask(question: str, model: str = "small") -> str:
            calls.append(question)
            return question.upper()

        assert ask("What is a cache stampede?") == "WHAT IS A CACHE STAMPEDE?"

        @cached(core=core, namespace="qa", mode="replay")
        def ask_replay(question: str, model: str = "small") -> str:
            calls.append(question)
            return question.upper()

        # A recorded call in replay is served; a function whose calls were never recorded raises.
        hit = core.get_or_compute(
            ask.cache.key("What is a cache stampede?"),
            lambda: "computed",
            options=CallOptions(namespace="qa", mode="replay"),
        )
        assert hit[1] in ("l1", "disk")
        with pytest.raises(ReplayMiss) as info:
            ask_replay("What is a cache stampede?")
        assert calls == ["What is a cache stampede?"]
        message = str(info.value)
        assert "namespace 'qa'" in message and "What is a cache stampede?" in message
        assert "\n" not in message


def test_replay_miss_says_how_the_closest_recorded_request_differs(disk_path: Path) -> None:
    with CacheCore(disk_path=disk_path, record_requests=True) as recorder:

        @cached(core=recorder)
        def ask(question: str, temperature: float = 0.0) -> str:
            return question[::-1]

        ask("What is a TTL?")
        ask("Why put a memory tier in front of Redis?")
        recorder.flush()
    with CacheCore(disk_path=disk_path, mode="replay") as core:

        @cached(core=core)
        def ask(question: str, temperature: float = 0.0) -> str:  # the same qualified name: same keys
            raise AssertionError("replay must not call the function")

        assert ask("What is a TTL?") == "?LTT a si tahW"
        with pytest.raises(ReplayMiss) as info:
            ask("What is a TTL ?")
        assert "question: 'What is a TTL ?' (recorded: 'What is a TTL?')" in str(info.value)
        with pytest.raises(ReplayMiss) as info:
            ask("What is a TTL?", temperature=0.7)
        assert "temperature: 0.7 (recorded: 0)" in str(info.value)


def test_replay_is_read_only_and_refresh_never_reads(disk_path: Path) -> None:
    computed: list[int] = []

    def compute() -> dict[str, int]:
        computed.append(1)
        return {"n": len(computed)}

    with CacheCore(disk_path=disk_path) as core:
        key = core.key_for({"q": "x"})
        assert core.get_or_compute(key, compute) == ({"n": 1}, "miss")
        assert core.get_or_compute(key, compute)[1] == "l1"
        fresh, level = core.get_or_compute(key, compute, options=CallOptions(mode="refresh"))
        assert (fresh, level) == ({"n": 2}, "bypass")
        assert core.get(key).value == {"n": 2}  # type: ignore[union-attr]  # refresh wrote its answer
        assert core.set(key, {"n": 99}, options=CallOptions(mode="replay")) is False  # replay writes nothing
        assert core.get(key).value == {"n": 2}  # type: ignore[union-attr]
        with pytest.raises(ReplayMiss, match="bypasses the cache"):
            core.get(key, options=CallOptions(mode="replay", bypass_read=True))


async def test_async_replay_raises_the_same(disk_path: Path) -> None:
    with CacheCore(disk_path=disk_path, mode="replay") as core:

        @cached(core=core)
        async def ask(question: str) -> str:
            await asyncio.sleep(0)
            raise AssertionError("replay must not call the function")

        with pytest.raises(ReplayMiss, match=r'arguments .*"question":"never seen"'):
            await ask("never seen")


def test_message_helpers_pick_the_last_user_message_and_abbreviate() -> None:
    request = {
        "model": "openai/gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "first"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second " + "word " * 100},
        ],
    }
    assert prompt_of(request).startswith("second word")  # type: ignore[union-attr]
    short = abbreviate(prompt_of(request) or "")
    assert len(short) <= 120 and " ... " in short
    assert describe_difference(request, []) is None
