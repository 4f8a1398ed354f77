"""Every script in examples/ runs as a user would run it (a subprocess, no arguments) and shows what it claims.

The scripts are started together (each mostly waits on interpreter start-up and imports, so running them side by
side keeps this module to the time of the slowest), against the stand-in provider with a 10 ms delay per call.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 150


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Result]]:
    home = tmp_path_factory.mktemp("examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSPY_TIERED_CACHE_") or k.endswith("_SERVER")}
    env.update(
        DTC_EXAMPLES_LATENCY="0.01",
        XDG_CACHE_HOME=str(home / "xdg"),  # nothing lands in the developer's ~/.cache
        DSPY_CACHEDIR=str(home / "dspy"),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
    )
    env.pop("OPENAI_API_KEY", None)
    started = time.monotonic()
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(EXAMPLES / name)],
            cwd=home,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in SCRIPTS
    }
    out: dict[str, Result] = {}
    try:
        for name, proc in procs.items():
            remaining = max(1.0, TIMEOUT_S - (time.monotonic() - started))
            try:
                stdout, stderr = proc.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
                stderr += f"\n(killed after {TIMEOUT_S} s)"
            out[name] = Result(proc.returncode, stdout, stderr, time.monotonic() - started)
        yield out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()


def ok(results: dict[str, Result], name: str) -> str:
    result = results[name]
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def upstream_counts(text: str, label: str) -> int:
    match = re.search(re.escape(label) + r".*?(\d+) upstream calls", text)
    assert match, f"no {label!r} line in:\n{text}"
    return int(match.group(1))


def test_every_example_is_covered() -> None:
    assert set(SCRIPTS) == {
        "cached_decorator.py",
        "dspy_door.py",
        "litellm_door.py",
        "multiprocess_workers.py",
        "namespace_invalidation.py",
        "otel_console.py",
    }


def test_litellm_door(results: dict[str, Result]) -> None:
    out = ok(results, "litellm_door.py")
    assert "1st call:" in out and "cache_hit=False" in out.split("2nd call")[0]
    assert re.search(r"2nd call:.*cache_hit=True", out)
    assert "same answer: True" in out
    assert "acompletion of the same request: cache_hit=True" in out
    assert 'cache={"no-cache": True}: cache_hit=False' in out
    assert "embedding of the same inputs again: cache_hit=True" in out
    assert "3 upstream calls for 6 calls" in out
    assert "memory (l1)" in out and "tokens saved" in out


def test_dspy_door(results: dict[str, Result]) -> None:
    out = ok(results, "dspy_door.py")
    assert upstream_counts(out, "cold:") == 3
    assert upstream_counts(out, "warm:") == 0
    assert "dspy.Parallel: 8 calls, 2 upstream calls" in out
    assert upstream_counts(out, "a deep copy of the program") == 0


def test_cached_decorator(results: dict[str, Result]) -> None:
    out = ok(results, "cached_decorator.py")
    assert upstream_counts(out, "summarize (cold)") == 1
    assert upstream_counts(out, "summarize (warm)") == 0
    assert "returns a Summary again on a hit" in out
    assert upstream_counts(out, "same call with another api_key") == 0
    assert upstream_counts(out, "max_words=10") == 1
    assert "10 concurrent async classify() calls: 1 upstream calls, 1 distinct answer" in out
    assert upstream_counts(out, "after summarize.cache_clear()") == 1


def test_multiprocess_workers(results: dict[str, Result]) -> None:
    out = ok(results, "multiprocess_workers.py")
    assert "started a private Redis server" in out
    assert "upstream calls in total: 5 for 5 distinct questions" in out
    assert "stand-in provider received: 5 requests" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+\d\s+\d+\s+\d+\s+\d+\s+\d+\s", line)]
    assert len(rows) == 4
    assert all(int(row[4]) == 5 for row in rows)  # the second round: every worker's own memory tier


def test_namespace_invalidation(results: dict[str, Result]) -> None:
    out = ok(results, "namespace_invalidation.py")
    assert upstream_counts(out, "first run:") == 3
    assert "same requests: 0 upstream calls, answers unchanged: True (stale)" in out
    assert "core.invalidate_namespace('qa') -> generation 1" in out
    assert re.search(r"after invalidation:\s+3 upstream calls, answers changed: True", out)
    serving = re.findall(r"serving (v\d): (\d+) upstream calls", out)
    assert serving == [("v1", "3"), ("v1", "0"), ("v2", "3"), ("v1", "0")]


def test_otel_console(results: dict[str, Result]) -> None:
    out = ok(results, "otel_console.py")
    cold, warm = out.split("--- warm batch")
    # One span per cached call, nested under the application's span, saying which tier served it.
    assert re.search(r"└ dspy_tiered_cache .*door=decorator .*level=miss", cold)
    assert re.search(r"└ dspy_tiered_cache .*door=decorator .*level=l1", warm)
    assert "answer-batch" in cold and "answer-batch" in warm
    assert "sk-" not in out
