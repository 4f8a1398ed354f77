"""The embedded default index (SQLite + numpy): partitions, expiry, other processes' writes."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dspy_tiered_cache.semantic.index import LocalIndex


def test_search_stays_in_its_partition_and_ranks_by_cosine(tmp_path: Path) -> None:
    index = LocalIndex(tmp_path / "s.sqlite3")
    index.add("p1", "k-a", "a", np.array([1.0, 0.0, 0.0]), None)
    index.add("p1", "k-b", "b", np.array([0.6, 0.8, 0.0]), None)
    index.add("p2", "k-c", "c", np.array([1.0, 0.0, 0.0]), None)
    found = index.search("p1", np.array([1.0, 0.1, 0.0]), 5, 0.5)
    assert [n.key for n in found] == ["k-a", "k-b"]
    assert found[0].similarity > found[1].similarity
    assert index.search("p3", np.array([1.0, 0.0, 0.0]), 5, 0.0) == []
    index.close()


def test_expired_rows_are_not_neighbours(tmp_path: Path) -> None:
    index = LocalIndex(tmp_path / "s.sqlite3")
    index.add("p", "old", "a", np.array([1.0, 0.0]), time.time() - 1)
    index.add("p", "live", "b", np.array([1.0, 0.1]), time.time() + 60)
    assert [n.key for n in index.search("p", np.array([1.0, 0.0]), 5, 0.0)] == ["live"]
    assert index.purge_expired() == 1
    index.close()


def test_a_write_by_another_connection_is_seen(tmp_path: Path) -> None:
    reader, writer = LocalIndex(tmp_path / "s.sqlite3"), LocalIndex(tmp_path / "s.sqlite3")
    writer.add("p", "k1", "a", np.array([1.0, 0.0]), None)
    assert len(reader.search("p", np.array([1.0, 0.0]), 5, 0.0)) == 1
    writer.add("p", "k2", "b", np.array([0.0, 1.0]), None)
    assert {n.key for n in reader.search("p", np.array([0.7, 0.7]), 5, 0.0)} == {"k1", "k2"}
    reader.close()
    writer.close()
