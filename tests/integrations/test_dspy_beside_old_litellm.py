"""The package installs beside the LiteLLM of every DSPy 3.x; the LiteLLM door says in one line when it is too old.

On the matrix's old-LiteLLM cells (DSPy 3.0.0 + litellm 1.64.1, DSPy 3.2.0 + litellm 1.82.6) the second test runs
against that real install; elsewhere it checks that the door builds.
"""

from __future__ import annotations

import pytest

from dspy_tiered_cache import CacheError, ConfigError
from dspy_tiered_cache.integrations._litellm_version import (
    LITELLM_DOOR_MIN,
    LiteLLMTooOld,
    installed_litellm,
    litellm_door_problem,
)


@pytest.mark.parametrize("version", ["1.64.1", "1.75.5.post2", "1.82.6", "1.106.12", "1.108.14"])
def test_older_releases_get_one_line_naming_the_release_and_the_pip_command(version: str) -> None:
    problem = litellm_door_problem(version)
    assert problem is not None and "\n" not in problem
    assert f"needs litellm>={LITELLM_DOOR_MIN}" in problem and f"litellm {version} is installed" in problem
    assert 'pip install "litellm>=1.109.0,!=1.107.*"' in problem and "CachedLM" in problem


@pytest.mark.parametrize("version", ["1.109.0", "1.109.3", "1.110.2", "1.110.0rc1", "2.0.0"])
def test_supported_releases_have_no_problem(version: str) -> None:
    assert litellm_door_problem(version) is None


def test_tiered_cache_on_the_installed_litellm_builds_or_refuses_in_one_line() -> None:
    from dspy_tiered_cache import TieredCache  # imports on every LiteLLM the package allows

    problem = litellm_door_problem()
    if problem is None:
        TieredCache(disk=False).close()
        return
    with pytest.raises(LiteLLMTooOld) as raised:
        TieredCache(disk=False)
    assert str(raised.value) == problem and "\n" not in problem
    assert isinstance(raised.value, ConfigError) and isinstance(raised.value, CacheError)
    assert f"litellm {installed_litellm()} is installed" in problem
