"""`litellm.cache = TieredCache()` survives DSPy's one-time reset of LiteLLM's cache.

DSPy sets ``litellm.cache = None`` once per process, the first time it needs LiteLLM (3.3+: lazily, e.g. on the
first ``dspy.LM`` call). That reset used to drop a TieredCache assigned earlier, so every later LiteLLM call went
upstream. Each case runs in a fresh interpreter: the reset is memoised per process, so this test process (which
has long since run it) cannot show it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dspy_tiered_cache.testing.provider import StandInProvider

#: Every case ends with the same direct LiteLLM call twice: the second must be a hit from the TieredCache.
TWO_DIRECT_CALLS = textwrap.dedent(
    """
    answers = [
        litellm.completion(
            model="openai/gpt-4o-mini", api_base=api_base, api_key="sk-test",
            messages=[{"role": "user", "content": "Name one cache eviction policy."}],
        ).choices[0].message.content
        for _ in range(2)
    ]
    print(json.dumps({"cache": type(litellm.cache).__name__, "same": answers[0] == answers[1]}))
    """
)

#: The LiteLLM door set up before any DSPy call; a plain dspy.LM call (DSPy's first use of LiteLLM; DSPy turns
#: LiteLLM's cache off for its own requests), then the same direct LiteLLM call twice.
LM_AFTER_CACHE = (
    textwrap.dedent(
        """
    import inspect, json, sys
    import litellm, dspy
    from dspy_tiered_cache import TieredCache
    api_base = sys.argv[1]
    litellm.cache = TieredCache()
    # DSPy 3.4+ may call OpenAI through its own engine: ask for LiteLLM's, as 3.0-3.3 always use
    engine = {"engine": "litellm"} if "engine" in inspect.signature(dspy.LM.__init__).parameters else {}
    lm = dspy.LM("openai/gpt-4o-mini", api_base=api_base, api_key="sk-test", cache=False, num_retries=0, **engine)
    lm("What is a cache stampede?")
    """
    )
    + TWO_DIRECT_CALLS
)

#: The cache assigned before DSPy is even imported; a CachedLM made afterwards; then direct LiteLLM calls.
CACHE_BEFORE_DSPY_IMPORT = (
    textwrap.dedent(
        """
    import json, sys
    import litellm
    from dspy_tiered_cache import TieredCache
    api_base = sys.argv[1]
    litellm.cache = TieredCache()
    import dspy
    from dspy_tiered_cache import CachedLM
    dspy.configure(lm=CachedLM(dspy.LM("openai/gpt-4o-mini", api_base=api_base, api_key="sk-test")))
    dspy.Predict("question -> answer")(question="What is a cache stampede?")
    """
    )
    + TWO_DIRECT_CALLS
)


def _run(script: str, provider: StandInProvider, tmp_path: Path) -> dict[str, object]:
    env = dict(
        os.environ,
        DSPY_TIERED_CACHE_DISK_PATH=str(tmp_path / "cache.sqlite3"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    env.pop("DSPY_TIERED_CACHE_REDIS_URL", None)  # the embedded default: no Redis needed
    proc = subprocess.run(
        [sys.executable, "-c", script, provider.base_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("script", "upstream"),
    [(LM_AFTER_CACHE, 2), (CACHE_BEFORE_DSPY_IMPORT, 2)],  # one DSPy call, one LiteLLM call (then a hit)
    ids=["dspy-lm-after-cache", "cache-before-dspy-import"],
)
def test_dspy_first_use_of_litellm_keeps_the_tiered_cache(
    script: str, upstream: int, provider: StandInProvider, tmp_path: Path
) -> None:
    result = _run(script, provider, tmp_path)
    assert result == {"cache": "TieredCache", "same": True}
    assert provider.request_count == upstream  # the repeated call was a hit: nothing else went upstream
