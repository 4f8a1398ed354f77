"""The core's extension point (``dspy_tiered_cache.hooks``): features attach from above, bound once per core."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_tiered_cache import hooks
from dspy_tiered_cache.core import CacheCore
from dspy_tiered_cache.errors import CacheError
from dspy_tiered_cache.fleet import FleetPublisher
from dspy_tiered_cache.modes import ReplayMiss
from dspy_tiered_cache.report import StatsReport


class Recorder:
    """A feature's per-core state: remembers whether the core closed it."""

    def __init__(self, core: CacheCore) -> None:
        self.core = core
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def registry() -> Iterator[None]:
    """Restore the process's registry after a test that adds to it."""
    attachers, provided = dict(hooks._attachers), dict(hooks._provided)
    yield
    hooks._attachers.clear()
    hooks._attachers.update(attachers)
    hooks._provided.clear()
    hooks._provided.update(provided)


def test_the_shipped_features_attach_to_every_core(tmp_path: Path) -> None:
    names = [name for name, _ in hooks.attachers()]
    assert "fleet" in names
    assert {"export", "import", "report", "replay_miss"} <= set(hooks.operations())
    with CacheCore(disk_path=tmp_path / "c.sqlite3", fleet=True) as core:
        assert isinstance(core.fleet, FleetPublisher) and core.attached["fleet"] is core.fleet
        assert isinstance(core.report(), StatsReport)
    with CacheCore(disk_path=tmp_path / "d.sqlite3", fleet=False) as core:
        assert core.fleet is None and "fleet" not in core.attached


def test_a_feature_attaches_once_per_core_and_closes_with_it(registry: None) -> None:
    attached: list[Recorder] = []

    def attach(core: CacheCore) -> Recorder:
        attached.append(Recorder(core))
        return attached[-1]

    hooks.on_attach("recorder", attach)
    hooks.on_attach("recorder", attach)  # registering again replaces: still one per core
    with CacheCore(disk=False) as first, CacheCore(disk=False) as second:
        assert [r.core for r in attached] == [first, second]
        assert first.attached["recorder"] is attached[0]
        assert not attached[0].closed
    assert all(r.closed for r in attached)


def test_operations_are_bound_when_the_core_is_built(registry: None) -> None:
    """A provider registered later does not change an existing core; the lookup path never reads the registry."""
    calls: list[Any] = []

    def replaced(core: CacheCore) -> str:
        calls.append(core)
        return "replaced"

    with CacheCore(disk=False) as before:
        hooks.provide("report", replaced)
        with CacheCore(disk=False) as after:
            assert after.report() == "replaced" and calls == [after]
        assert isinstance(before.report(), StatsReport)
        hooks._attachers.clear()  # a registry emptied under a live core changes nothing for it
        hooks._provided.clear()
        key = before.key_for({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        before.set(key, {"answer": 1})
        hit = before.get(key)
        assert hit is not None and hit.value == {"answer": 1}


def test_a_replay_miss_is_described_by_the_record_replay_feature() -> None:
    with CacheCore(disk=False, mode="replay") as core:
        key = core.key_for({"model": "gpt-x", "messages": [{"role": "user", "content": "never recorded"}]})
        with pytest.raises(ReplayMiss, match="never recorded") as caught:
            core.get(key)
    assert caught.value.model == "gpt-x" and caught.value.prompt == "never recorded"


def test_without_a_describing_feature_a_replay_miss_still_names_its_namespace(registry: None) -> None:
    hooks._provided.pop("replay_miss")
    with CacheCore(disk=False, mode="replay", namespace="notes") as core:
        key = core.key_for({"model": "gpt-x", "messages": [{"role": "user", "content": "q"}]})
        with pytest.raises(ReplayMiss, match="namespace 'notes'") as caught:
            core.get(key)
    assert caught.value.key == key and caught.value.model is None


def test_an_operation_no_feature_provides_is_one_clear_error(registry: None) -> None:
    hooks._provided.pop("export")
    with CacheCore(disk=False) as core, pytest.raises(CacheError, match="no feature provides 'export'"):
        core.export("x.jsonl.gz")
