"""The CLI tells the truth: no success line for work it did not do, no minutes-long failures, no stranded leases.

``warm`` checks credentials and the endpoint before its first call and stops after N consecutive failures with one
line; a disk tier that cannot be created makes ``health`` exit 1 and ``warm`` / ``clear`` fail with one line.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# Imported up front: the timings below are the command's own work, not LiteLLM's import (seconds on a busy box).
import litellm  # noqa: F401

from dspy_tiered_cache.cli import main
from dspy_tiered_cache.testing.provider import StandInProvider

MODEL = "openai/gpt-4o-mini"
UNUSABLE = "/proc/nope/cache.sqlite3"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    sys.stdin = io.StringIO("")
    try:
        code = main(list(argv))
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("dspy-tiered-cache: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture
def requests_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "r.jsonl", [{"prompt": f"question {i}"} for i in range(8)])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leases_in(disk_path: Path) -> int:
    with sqlite3.connect(disk_path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM locks").fetchone()[0])


def test_warm_without_a_key_fails_at_once_with_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, requests_file: Path, disk_path: Path
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    started = time.monotonic()
    code, out, err = run(capsys, "warm", str(requests_file), "--model", MODEL, "--disk-path", str(disk_path))
    assert time.monotonic() - started < 5.0
    assert code == 1 and "warmed" not in out
    assert_one_line_error(err, "OPENAI_API_KEY")
    assert len(err.strip().splitlines()) == 1


def test_warm_with_an_unreachable_endpoint_fails_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, requests_file: Path, disk_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    base = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()
    code, out, err = run(capsys, "warm", str(requests_file), "--model", MODEL, "--api-base", base,
                         "--disk-path", str(disk_path))  # fmt: skip
    assert time.monotonic() - started < 5.0
    assert code == 1 and "warmed" not in out
    assert_one_line_error(err, "unreachable", base.split("/v1")[0])


def test_warm_stops_after_consecutive_failures_and_leaves_no_lease(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    provider: StandInProvider,
    requests_file: Path,
    disk_path: Path,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    argv = ["warm", str(requests_file), "--model", MODEL, "--api-base", provider.base_url, "--disk-path",
            str(disk_path), "--concurrency", "1", "--retries", "2", "--max-failures", "3", "--no-progress"]  # fmt: skip
    provider.set_failure("status", status=500, retry_after_ms=5)
    started = time.monotonic()
    code, _, err = run(capsys, *argv)
    assert code == 1 and time.monotonic() - started < 10.0
    assert_one_line_error(err, "stopped after 3 consecutive failures", "InternalServerError")
    assert len(err.strip().splitlines()) == 1
    assert provider.request_count < 8 * 3  # it stopped: not every request was tried with all its retries
    assert leases_in(disk_path) == 0  # the failed run leaves nothing that would stall the next one
    provider.recover()
    provider.reset()
    started = time.monotonic()
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "warmed 8 new" in out
    assert time.monotonic() - started < 5.0
    assert provider.request_count == 8 and leases_in(disk_path) == 0


def test_an_unusable_disk_path_is_an_error_not_ok(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, provider: StandInProvider, requests_file: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-key")
    code, out, err = run(capsys, "health", "--disk-path", UNUSABLE)
    assert code == 1 and "DOWN" in out and "/proc/nope" in err
    code, _, err = run(capsys, "clear", "--yes", "--disk-path", UNUSABLE)
    assert code == 1
    assert_one_line_error(err, "cannot clear the cache", "/proc/nope")
    code, out, err = run(capsys, "warm", str(requests_file), "--model", MODEL, "--api-base", provider.base_url,
                         "--disk-path", UNUSABLE)  # fmt: skip
    assert code == 1 and "warmed" not in out and provider.request_count == 0
    assert_one_line_error(err, "cannot warm the cache", "/proc/nope")


def test_a_creatable_disk_path_is_ok_and_health_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ro" / "cache.sqlite3"
    code, out, _ = run(capsys, "health", "--disk-path", str(path))
    assert code == 0 and "no file yet" in out and not path.exists()  # creatable: ok, and health created nothing
