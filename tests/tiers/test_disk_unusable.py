"""A disk tier whose file cannot be created: detectable up front, and one warning (not a silent miss) in use."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dspy_tiered_cache.codec import FrameCodec
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.tiers.disk import DiskTier

UNUSABLE = "/proc/nope/cache.sqlite3"
CODEC = FrameCodec(secret=None, compression_threshold=1024, max_bytes=8 * 1024 * 1024)


def test_unusable_names_the_path_and_the_fix(tmp_path: Path) -> None:
    problem = DiskTier(UNUSABLE, codec=CODEC).unusable()
    assert problem is not None and "/proc/nope" in problem and "DSPY_TIERED_CACHE_DISK_PATH" in problem
    creatable = tmp_path / "a" / "b" / "cache.sqlite3"
    assert DiskTier(creatable, codec=CODEC).unusable() is None
    assert not (tmp_path / "a").exists()  # the probe created nothing
    assert not DiskTier(UNUSABLE, codec=CODEC).health().ok


def test_library_use_warns_once_and_serves(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dspy_tiered_cache"), CacheCore(disk_path=UNUSABLE) as core:
        for i in range(3):
            key = core.key_for({"q": i})
            core.set(key, {"a": i})
            assert core.get(key) is not None  # memory still serves
        core.flush(5.0)
    warnings = [r for r in caplog.records if "/proc/nope" in r.getMessage()]
    assert len(warnings) == 1
