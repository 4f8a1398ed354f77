"""pytest plugin (installed with the package): LLM calls in tests, recorded once and replayed ever after.

``pytest --llm-cache=replay`` (the default)
    every test module's LLM answers come from its recording, ``<tests dir>/recordings/<module>.jsonl.gz``; a new or
    changed prompt fails the test with the :class:`~dspy_tiered_cache.ReplayMiss` message (what was asked, and how
    it differs from the closest recorded request). No network, no API key: the mode for CI.
``pytest --llm-cache=record``
    answers already recorded are replayed, new ones go upstream, and the module's recording is rewritten at the
    end of the module (delete the file first to re-record everything).
``pytest --llm-cache=off``
    the cache stays out of the way: every call goes upstream, nothing is recorded.

Tests use the ``llm_cache`` fixture: a :class:`~dspy_tiered_cache.core.CacheCore` shared by the module's tests,
to pass as ``CachedLM(lm, cache=llm_cache)``, ``TieredCache(core=llm_cache)`` or ``@cached(core=llm_cache)``.
The recordings folder is ``recordings`` beside each test module (ini option ``llm_cache_dir``).

This module imports neither LiteLLM nor DSPy: loading the plugin costs nothing to projects that do not use it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from dspy_tiered_cache.core import CacheCore

CHOICES = ("replay", "record", "off")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dspy-tiered-cache", "LLM answers recorded and replayed by dspy_tiered_cache")
    group.addoption(
        "--llm-cache",
        choices=CHOICES,
        default=None,
        help="replay (default): LLM answers only from the recordings, a new prompt fails the test; "
        "record: replay what is recorded, call upstream for the rest and save it; off: no cache",
    )
    parser.addini("llm_cache_dir", "folder of LLM recordings, beside each test module", default="recordings")
    parser.addini("llm_cache", "default of --llm-cache (replay, record or off)", default="replay")


def recording_path(config: pytest.Config, module_path: Path) -> Path:
    return module_path.parent / str(config.getini("llm_cache_dir")) / f"{module_path.stem}.jsonl.gz"


def _choice(config: pytest.Config) -> str:
    value = config.getoption("--llm-cache") or str(config.getini("llm_cache"))
    if value not in CHOICES:
        raise pytest.UsageError(f"llm_cache = {value!r} is not one of {', '.join(CHOICES)}")
    return value


@pytest.fixture(scope="module")
def _llm_cache_module(request: pytest.FixtureRequest) -> Iterator[CacheCore]:
    """One cache per test module: memory plus a scratch SQLite file, never the developer's own cache."""
    choice = _choice(request.config)
    path = recording_path(request.config, Path(str(request.node.path)))
    with tempfile.TemporaryDirectory(prefix="llm-cache-") as scratch:
        core = CacheCore(
            redis_url=None,
            disk=True,
            disk_path=Path(scratch) / "cache.sqlite3",
            namespace="default",
            ttl=None,
            key_secret=None,
            encryption_keys=[],
            mode="replay" if choice == "replay" else "read-write",
            enabled=choice != "off",
            record_requests=True,
            write_behind=False,
            telemetry=False,
        )
        try:
            if choice != "off" and path.exists():
                core.import_(path)
            yield core
            if choice == "record":
                core.export(path)
        finally:
            core.close()


@pytest.fixture
def llm_cache(_llm_cache_module: CacheCore) -> CacheCore:
    """The module's LLM cache: pass it as ``cache=`` (CachedLM), ``core=`` (TieredCache, @cached)."""
    return _llm_cache_module


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A test failing on a replay miss is told which recording it replayed and how to add the call to it."""
    outcome = yield
    excinfo = call.excinfo
    uses_fixture = "llm_cache" in getattr(item, "fixturenames", ())
    if excinfo is None or not uses_fixture or item.config.getoption("--llm-cache", None) == "off":
        return
    from dspy_tiered_cache.modes import ReplayMiss

    if excinfo.errisinstance(ReplayMiss):
        path = recording_path(item.config, Path(str(item.path)))
        state = "" if path.exists() else " (missing)"
        report = outcome.get_result()
        report.sections.append(
            ("llm-cache", f"replayed {path}{state}; record new calls with: pytest --llm-cache=record {item.nodeid}")
        )
