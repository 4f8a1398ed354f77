from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from dspy_tiered_cache.codec import CorruptEntry, FrameCodec
from dspy_tiered_cache.tiers.disk import DiskTier

from .contract import TierContract, entry

CODEC = FrameCodec(secret=None, compression_threshold=1024, max_bytes=8 * 1024 * 1024)


class TestDiskTier(TierContract):
    @pytest.fixture
    def tier(self, disk_path: Path) -> DiskTier:
        return DiskTier(disk_path, codec=CODEC)


def _writer(path: str, worker: int) -> None:
    tier = DiskTier(path, codec=CODEC)
    for i in range(50):
        tier.set(f"dtc:e:default:0:{worker}-{i}", entry(f"{worker}-{i}".encode()))
        tier.bump_generation("shared")


def test_several_processes_share_one_file(disk_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(disk_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    tier = DiskTier(disk_path, codec=CODEC)
    assert all(tier.get(f"dtc:e:default:0:{w}-{i}") is not None for w in range(3) for i in range(50))
    assert tier.get_generation("shared") == 150


def test_persists_across_instances(disk_path: Path) -> None:
    DiskTier(disk_path, codec=CODEC).set("dtc:e:default:0:p", entry(b"kept"))
    assert DiskTier(disk_path, codec=CODEC).get("dtc:e:default:0:p").payload == b"kept"  # type: ignore[union-attr]


def test_tampered_row_raises_corrupt(disk_path: Path) -> None:
    tier = DiskTier(disk_path, codec=CODEC)
    tier.set("dtc:e:default:0:t", entry(b'{"a": 1}'))
    with sqlite3.connect(disk_path) as conn:
        blob = bytearray(conn.execute("SELECT value FROM entries").fetchone()[0])
        blob[-2] ^= 0xFF
        conn.execute("UPDATE entries SET value = ?", (bytes(blob),))
    with pytest.raises(CorruptEntry):
        tier.get("dtc:e:default:0:t")


def test_size_bound_culls_oldest(disk_path: Path) -> None:
    tier = DiskTier(
        disk_path, codec=FrameCodec(secret=None, compression_threshold=0, max_bytes=10**7), max_bytes=50_000
    )
    for i in range(100):
        tier.set(f"dtc:e:default:0:{i:03d}", entry(b"y" * 1000))
    tier.cull()
    assert tier.get("dtc:e:default:0:099") is not None
    assert tier.get("dtc:e:default:0:000") is None
    assert tier.evictions > 0


def test_unwritable_path_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    tier = DiskTier(blocker / "sub" / "cache.sqlite3", codec=CODEC)
    with pytest.raises(OSError, match="DSPY_TIERED_CACHE_DISK_PATH"):
        tier.get("k")
