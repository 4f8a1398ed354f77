"""A cache hit must not need the packages only LiteLLM's proxy server uses (fastapi, soundfile, mcp).

The default install carries none of them (tests/integrations/test_clean_install.py proves it on a fresh venv and
.ci/run's matrix checks each venv it builds); here, in whatever venv runs the suite, the door must serve hits, and
LiteLLM's stream-replay check must keep its answers: a hit replayed as a stream defers its success callbacks to
the stream's end, a plain hit logs them at once.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import litellm
from litellm.caching import caching_handler

from dspy_tiered_cache.integrations._litellm_hit_path import ensure_hit_path
from dspy_tiered_cache.integrations.litellm import TieredCache
from dspy_tiered_cache.testing.provider import StandInProvider

MakeCache = Callable[..., TieredCache]


def _chat(provider: StandInProvider, content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": content}],
        "api_base": provider.base_url,
        "api_key": "sk-hit-path",
        **extra,
    }


def test_hits_keep_litellms_stream_replay_answers(provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()
    litellm.completion(**_chat(provider, "replay"))
    plain = litellm.completion(**_chat(provider, "replay"))
    streamed = litellm.completion(**_chat(provider, "replay", stream=True))
    assert plain._hidden_params.get("cache_hit") is True
    assert provider.request_count == 1

    check = caching_handler._should_defer_streaming_cache_hit_callbacks
    assert check(cached_result=streamed) is True  # callbacks run when the replayed stream ends
    assert check(cached_result=plain) is False  # ... and at once for a plain hit
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == plain.choices[0].message.content

    fastapi_installed = importlib.util.find_spec("fastapi") is not None
    assert ensure_hit_path() == ("native" if fastapi_installed else "guarded")


_IMPORTS_PROBE = textwrap.dedent(
    """
    import sys
    from dspy_tiered_cache import CacheCore, CacheSettings, cached

    calls = []

    @cached(ttl=60, namespace="probe")
    def square(x: int) -> dict:
        calls.append(x)
        return {"y": x * x}

    assert square(3) == square(3) == {"y": 9}
    assert calls == [3], calls
    CacheCore(CacheSettings(disk=False)).close()
    print(sorted(m for m in ("dspy", "litellm", "openai", "fastapi") if m in sys.modules))
    """
)


def test_core_and_cached_import_neither_dspy_nor_litellm(tmp_path: Path) -> None:
    """``@cached`` and the core serve any Python function; importing DSPy and LiteLLM costs seconds."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
