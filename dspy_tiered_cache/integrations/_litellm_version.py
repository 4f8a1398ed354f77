"""Which LiteLLM the LiteLLM door (``TieredCache``) needs, checked once at construction.

The two doors need different LiteLLMs. ``CachedLM`` goes through ``dspy.cache`` and needs no LiteLLM cache API,
so the package installs beside any LiteLLM a DSPy 3.x project resolves to (DSPy 3.2.0 caps it at 1.82.6). The
LiteLLM door is a ``litellm.Cache`` subclass built on ``Cache(_backend=)`` (1.105+) and on LiteLLM's hit path
without its proxy-only imports (1.106.x imports fastapi on every hit, 1.105-1.108 import mcp for every request
with ``tools=``): 1.109.0 is the oldest release its tests pass on.

On an older LiteLLM, ``TieredCache()`` *raises* :class:`LiteLLMTooOld` (a :class:`ConfigError`) rather than
warning: a warned-about ``litellm.cache`` would either fail every cache hit or quietly never hit, and a user
would find out from a traceback deep inside LiteLLM or a bill. Raising at construction keeps the rule "a
user-caused error is one clear line naming what to fix", before any request is made. Nothing is checked at
import: ``import dspy_tiered_cache`` and ``CachedLM`` work on every LiteLLM the package declares.
"""

from __future__ import annotations

import re
from importlib import metadata

from dspy_tiered_cache.settings import ConfigError

#: The oldest LiteLLM the LiteLLM door supports (keep in step with .ci/matrix and docs/compatibility-dspy.md).
LITELLM_DOOR_MIN = "1.109.0"
PIP_COMMAND = f'pip install "litellm>={LITELLM_DOOR_MIN},!=1.107.*"'


class LiteLLMTooOld(ConfigError):
    """The installed LiteLLM is older than the LiteLLM door needs (``CachedLM`` still works on it)."""


def _release(version: str) -> tuple[int, ...]:
    """``"1.82.6"`` -> ``(1, 82, 6)``; ``"1.75.5.post2"`` and ``"1.110.0rc1"`` -> their release numbers."""
    parts = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def installed_litellm() -> str | None:
    """The installed LiteLLM's version (its distribution metadata; LiteLLM itself is not imported)."""
    try:
        return metadata.version("litellm")
    except metadata.PackageNotFoundError:
        return None


def litellm_door_problem(version: str | None = None) -> str | None:
    """One line saying why the LiteLLM door cannot run on ``version`` (default: the installed one), or None."""
    version = installed_litellm() if version is None else version
    if version is not None and _release(version) >= _release(LITELLM_DOOR_MIN):
        return None
    found = "no LiteLLM is installed" if version is None else f"litellm {version} is installed"
    return (
        f"TieredCache (the LiteLLM door) needs litellm>={LITELLM_DOOR_MIN} and {found}: run {PIP_COMMAND} "
        "(CachedLM, the DSPy door, works on this LiteLLM)"
    )


def require_litellm_door() -> None:
    """Raise :class:`LiteLLMTooOld` (one line) unless the installed LiteLLM runs the LiteLLM door."""
    problem = litellm_door_problem()
    if problem is not None:
        raise LiteLLMTooOld(problem)
