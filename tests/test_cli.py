"""The ``dspy-tiered-cache`` command: every subcommand against real tiers, and its error paths.

Most tests call ``main(argv)`` in-process (the same code the console script runs, minus interpreter start-up);
a few run the real command in a subprocess. A user's mistake must give one line on stderr and a non-zero exit
code, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from dspy_tiered_cache import CacheCore
from dspy_tiered_cache.cli import main
from dspy_tiered_cache.testing.provider import StandInProvider

DEAD_REDIS = "redis://127.0.0.1:1/0"


def run(capsys: pytest.CaptureFixture[str], *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "expected an error on stderr"
    assert "Traceback" not in err
    assert lines[-1].startswith("dspy-tiered-cache: error: ")
    for fragment in fragments:
        assert fragment in lines[-1]


def fill(disk_path: Path, namespace: str, n: int) -> list[str]:
    with CacheCore(disk_path=disk_path, write_behind=False) as core:
        keys = [core.key_for({"q": i}, namespace=namespace) for i in range(n)]
        for key in keys:
            core.set(key, {"answer": "x" * 100})
        return keys


def hits(disk_path: Path, namespace: str, n: int) -> int:
    with CacheCore(disk_path=disk_path, memory=False) as core:
        return sum(core.get(core.key_for({"q": i}, namespace=namespace)) is not None for i in range(n))


# ------------------------------------------------------------------------------------------ entry points


def test_console_script_and_module_run_the_same_main() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["dspy-tiered-cache"] == "dspy_tiered_cache.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "dspy_tiered_cache", "config", "--format", "json", "--namespace", "from-cli"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["settings"]["namespace"] == "from-cli" and data["sources"]["namespace"] == "command line"
    # The quick commands must not pay LiteLLM's or DSPy's import time.
    code = (
        "import sys; from dspy_tiered_cache.cli import main; main(['config']); "
        "print(sorted(m for m in ('litellm', 'dspy') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().endswith("[]"), result.stdout


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


# ------------------------------------------------------------------------------------------------ config


def test_config_masks_secrets_and_names_sources(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_TIERED_CACHE_TTL", "60")
    monkeypatch.setenv("DSPY_TIERED_CACHE_KEY_SECRET", "hmac-secret-value")
    code, out, _ = run(capsys, "config", "--redis-url", "redis://:hunter2@localhost:6379/0", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert "hunter2" not in out and "hmac-secret-value" not in out
    assert data["settings"]["redis_url"] == "redis://:****@localhost:6379/0"
    assert data["sources"]["redis_url"] == "command line"
    assert data["sources"]["ttl"] == "env DSPY_TIERED_CACHE_TTL" and data["settings"]["ttl"] == 60
    assert data["sources"]["memory"] == "default"
    assert data["tiers"] == ["memory", "redis"]
    code, out, _ = run(capsys, "--redis-url", "redis://:hunter2@localhost:6379/0", "config")  # option before it
    assert code == 0 and "hunter2" not in out and "memory -> redis" in out


def test_bad_settings_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "config", "--redis-url", "http://:pw@localhost")
    assert code == 2
    assert_one_line_error(err, "--redis-url", "scheme 'http' is not supported")
    assert "pw" not in err
    monkeypatch.setenv("DSPY_TIERED_CACHE_TTL", "-1")
    code, _, err = run(capsys, "stats")
    assert code == 2
    assert_one_line_error(err, "DSPY_TIERED_CACHE_TTL")


# ------------------------------------------------------------------------------------------------- stats


def test_stats_without_a_disk_file_does_not_create_one(capsys: pytest.CaptureFixture[str], disk_path: Path) -> None:
    code, out, _ = run(capsys, "stats", "--disk-path", str(disk_path))
    assert code == 0
    assert "no file yet" in out
    assert not disk_path.exists()


def test_stats_counts_entries_per_namespace(capsys: pytest.CaptureFixture[str], disk_path: Path) -> None:
    fill(disk_path, "alpha", 3)
    fill(disk_path, "beta", 2)
    with CacheCore(disk_path=disk_path) as core:
        core.invalidate_namespace("beta")
    fill(disk_path, "beta", 1)
    code, out, _ = run(capsys, "stats", "--disk-path", str(disk_path), "--format", "json")
    assert code == 0
    data = json.loads(out)
    (disk,) = data["tiers"]
    rows = {r["namespace"]: r for r in disk["namespaces"]}
    assert rows["alpha"]["entries"] == 3 and rows["alpha"]["generation"] == 0 and rows["alpha"]["bytes"] > 300
    assert rows["beta"]["entries"] == 1 and rows["beta"]["unreachable"] == 2 and rows["beta"]["generation"] == 1
    assert data["health"][0]["ok"] is True
    code, out, _ = run(capsys, "stats", "--disk-path", str(disk_path))
    assert code == 0
    assert "alpha" in out and "(total)" in out and "fleet · every process" in out


def test_stats_on_redis_with_a_scan_limit(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    with CacheCore(redis_url=redis_url, write_behind=False) as core:
        for i in range(12):
            core.set(core.key_for({"q": i}, namespace="shared"), {"a": i})
    code, out, _ = run(capsys, "--redis-url", redis_url, "stats", "--format", "json")
    assert code == 0
    (redis_tier,) = json.loads(out)["tiers"]
    assert redis_tier["tier"] == "l2" and redis_tier["namespaces"][0]["entries"] == 12
    assert redis_tier["truncated"] is False
    code, out, _ = run(capsys, "--redis-url", redis_url, "stats", "--scan-limit", "5")
    assert code == 0 and "SCAN stopped after 5 keys" in out


def test_stats_with_redis_down_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "stats", "--redis-url", DEAD_REDIS)
    assert code == 1 and out == ""
    assert_one_line_error(err, "tier l2 is unreachable", "127.0.0.1:1")


# ------------------------------------------------------------------------------------------------ health


def test_health(capsys: pytest.CaptureFixture[str], redis_url: str, disk_path: Path) -> None:
    code, out, _ = run(capsys, "health", "--redis-url", redis_url, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["ok"] is True
    (tier,) = data["tiers"]
    assert tier["tier"] == "l2" and tier["version"] and tier["latency_ms"] is not None
    fill(disk_path, "x", 1)
    code, out, _ = run(capsys, "health", "--disk-path", str(disk_path))
    assert code == 0 and "sqlite" in out and "ok" in out


def test_health_exits_1_when_a_configured_tier_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    code, out, err = run(capsys, "health", "--redis-url", DEAD_REDIS)
    assert time.monotonic() - started < 5  # no retry loop
    assert code == 1
    assert "DOWN" in out
    assert "tier l2 is down" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------- clear


def test_clear_asks_first(capsys: pytest.CaptureFixture[str], disk_path: Path) -> None:
    fill(disk_path, "default", 4)
    code, _, err = run(capsys, "clear", "--disk-path", str(disk_path), stdin="n\n")
    assert code == 1
    assert "Remove every cached entry" in err
    assert_one_line_error(err, "not confirmed")
    assert hits(disk_path, "default", 4) == 4
    code, out, _ = run(capsys, "clear", "--disk-path", str(disk_path), stdin="y\n")
    assert code == 0 and "removed 4 entries" in out
    assert hits(disk_path, "default", 4) == 0


def test_clear_yes_on_redis_keeps_other_prefixes(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    with CacheCore(redis_url=redis_url, write_behind=False) as core:
        for i in range(5):
            core.set(core.key_for({"q": i}), {"a": i})
        client = core.tiers[-1].client  # type: ignore[attr-defined]
        client.set("someone-else:key", b"keep me")
        code, out, _ = run(capsys, "clear", "--yes", "--redis-url", redis_url)
        assert code == 0 and "removed 5 entries" in out
        assert client.get("someone-else:key") == b"keep me"


def test_clear_namespace_invalidates_only_that_namespace(capsys: pytest.CaptureFixture[str], disk_path: Path) -> None:
    fill(disk_path, "model-v1", 3)
    fill(disk_path, "other", 2)
    code, out, _ = run(capsys, "clear", "--namespace", "model-v1", "--yes", "--disk-path", str(disk_path))
    assert code == 0
    assert "namespace 'model-v1' invalidated (generation 1)" in out
    assert hits(disk_path, "model-v1", 3) == 0
    assert hits(disk_path, "other", 2) == 2


def test_clear_refuses_when_a_tier_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "clear", "--yes", "--redis-url", DEAD_REDIS, "--namespace", "ns")
    assert code == 1
    assert_one_line_error(err, "cannot clear the cache", "l2")


# -------------------------------------------------------------------------------------------------- warm


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = "sk-test-warm-never-stored"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    return key


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_warm_is_resumable(
    capsys: pytest.CaptureFixture[str], provider: StandInProvider, disk_path: Path, tmp_path: Path, api_key: str
) -> None:
    requests: list[dict[str, Any]] = [{"prompt": f"question {i}"} for i in range(4)]
    requests.append({"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]})
    requests.append({"model": "openai/text-embedding-3-small", "input": ["a", "b"]})
    path = write_jsonl(tmp_path / "requests.jsonl", requests)
    argv = [
        "warm",
        str(path),
        "--model",
        "openai/gpt-4o-mini",
        "--api-base",
        provider.base_url,
        "--disk-path",
        str(disk_path),
        "--concurrency",
        "3",
        "--no-progress",
    ]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "warmed 6 new, 0 already cached, 0 failed of 6 requests" in out
    assert provider.request_count == 6
    # Run again: nothing to do. Add two lines: only they go upstream.
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "warmed 0 new, 6 already cached" in out
    assert provider.request_count == 6
    write_jsonl(path, [*requests, {"prompt": "new one"}, {"prompt": "another"}])
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "warmed 2 new, 6 already cached" in out
    assert provider.request_count == 8
    # What was warmed is what a later identical LiteLLM call hits, and the key never held the API key.
    assert api_key.encode() not in disk_path.read_bytes()


def test_warm_failures_are_retried_by_the_next_run(
    capsys: pytest.CaptureFixture[str], provider: StandInProvider, disk_path: Path, tmp_path: Path, api_key: str
) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "one"}, {"prompt": "two"}, {"prompt": "three"}])
    argv = [
        "warm",
        str(path),
        "--model",
        "openai/gpt-4o-mini",
        "--api-base",
        provider.base_url,
        "--disk-path",
        str(disk_path),
        "--concurrency",
        "1",
        "--retries",
        "0",
        "--no-progress",
    ]
    provider.fail_next(1, status=400, message="bad request for the test")
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert "warmed 2 new, 0 already cached, 1 failed" in out
    assert "warm: line" in err and "Traceback" not in err and api_key not in err
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "warmed 1 new, 2 already cached, 0 failed" in out


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"prompt": "ok", "model": "m"}\nnot json\n', "r.jsonl:2: not JSON"),
        ('["a list"]\n', "must be a JSON object"),
        ('{"messages": [{"role": "user", "content": "x"}]}\n', "no model"),
        ('{"model": "m"}\n', 'give "messages"'),
        ("\n\n", "no requests"),
    ],
)
def test_warm_checks_the_whole_file_first(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(content, encoding="utf-8")
    code, _, err = run(capsys, "warm", str(path), "--disk-path", str(tmp_path / "c.sqlite3"))
    assert code == 2
    assert_one_line_error(err, fragment)


def test_warm_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "warm", str(tmp_path / "missing.jsonl"), "--model", "m")
    assert code == 2
    assert_one_line_error(err, "no such file", "missing.jsonl")


# --------------------------------------------------------------------------------------------- benchmark


def test_benchmark(capsys: pytest.CaptureFixture[str], redis_url: str, disk_path: Path) -> None:
    code, out, _ = run(
        capsys,
        "benchmark",
        "--count",
        "20",
        "--redis-url",
        redis_url,
        "--disk-path",
        str(disk_path),
        "--format",
        "json",
    )
    assert code == 0
    data = json.loads(out)
    assert [r["tier"] for r in data["results"]] == ["l1", "disk", "l2"]
    for r in data["results"]:
        assert 0 < r["hit"]["p50_us"] <= r["hit"]["p99_us"]
    assert not disk_path.exists()  # measured on a scratch file, never in the real cache
    code, out, _ = run(capsys, "benchmark", "--count", "10")
    assert code == 0 and "hit p50" in out and "no Redis configured" in out


# -------------------------------------------------------------------------------------------------- demo


def demo_numbers(out: str) -> dict[int, tuple[int, list[int]]]:
    """run number -> (upstream calls, served per tier) from the demo's table."""
    rows: dict[int, tuple[int, list[int]]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in ("1", "2") and parts[2] in ("s", "ms"):
            rows[int(parts[0])] = (int(parts[3]), [int(p) for p in parts[4:] if p != "/"])
    return rows


def test_demo_cold_then_warm_from_disk(tmp_path: Path) -> None:
    """The real command, twice: the second process's first run is served by the disk file."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    started = time.monotonic()
    first = subprocess.run(
        [sys.executable, "-m", "dspy_tiered_cache", "demo", "--latency", "0.05"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert time.monotonic() - started < 30
    assert first.returncode == 0, first.stderr
    rows = demo_numbers(first.stdout)
    assert rows[1] == (6, [0, 0]) and rows[2] == (0, [6, 0])  # cold: 6 upstream calls; warm: 6 memory hits
    assert "saved: 6 of 12 LM calls" in first.stdout and "at gpt-4o-mini prices" in first.stdout
    assert str(tmp_path / "xdg" / "dspy_tiered_cache" / "cache.sqlite3") in first.stdout  # the real default path

    second = subprocess.run(
        [sys.executable, "-m", "dspy_tiered_cache", "demo", "--keep", "--latency", "0.05"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert second.returncode == 0, second.stderr
    rows = demo_numbers(second.stdout)
    assert rows[1] == (0, [0, 6]) and rows[2] == (0, [6, 0])  # a new process: disk, then memory
    assert "saved: 12 of 12 LM calls" in second.stdout


def test_demo_on_redis(capsys: pytest.CaptureFixture[str], redis_url: str) -> None:
    code, out, err = run(capsys, "demo", "--redis-url", redis_url, "--latency", "0.01")
    assert code == 0, err
    assert "served by the cache (l1 / l2)" in out
    rows = demo_numbers(out)
    assert rows[1] == (6, [0, 0]) and rows[2] == (0, [6, 0])


def test_demo_errors_are_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run(capsys, "demo", "--namespace", "mine")
    assert code == 2
    assert_one_line_error(err, "demo always uses its own namespace")
    code, _, err = run(capsys, "demo", "--redis-url", DEAD_REDIS)
    assert code == 1
    assert_one_line_error(err, "l2 is unreachable")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    code, _, err = run(capsys, "demo", "--model", "openai/gpt-4o-mini")
    assert code == 1
    assert_one_line_error(err, "OPENAI_API_KEY")
