"""DSPy's one-time LiteLLM defaults, settled before our cache is installed, so that they never undo it.

DSPy turns LiteLLM's own cache off (``litellm.cache = None``: its on-disk cache replaces it) once per process:
3.0-3.2 when ``dspy`` is imported, 3.3+ lazily, the first time any DSPy code needs LiteLLM (an LM call, an
adapter asking ``supports_response_schema``...). A ``litellm.cache = TieredCache()`` made before that moment is
silently dropped, and every later LiteLLM call goes upstream: in a script that sets the cache and then runs a
DSPy program, or that mixes both doors on one core, the first DSPy call quietly turned the LiteLLM door off.

Running DSPy's memoised setup first (it never runs twice) keeps an assignment made afterwards; if our cache was
already installed when the setup runs, it is put back. Only DSPy's *own* one-time reset is undone: a user who sets
``litellm.cache = None`` later keeps that. DSPy is never imported here (``sys.modules`` only): without it there
is nothing to settle.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["settle_dspy_litellm_defaults"]


def _dspy_setup() -> Any:
    """DSPy's memoised "import LiteLLM and apply our defaults" (3.3+), if DSPy is loaded; else None."""
    module = sys.modules.get("dspy.clients._litellm")
    setup = getattr(module, "get_litellm", None)
    return setup if callable(setup) else None


def settle_dspy_litellm_defaults() -> None:
    """Let DSPy apply its one-time LiteLLM defaults now; put our cache back if it was installed and DSPy reset it.

    On DSPy 3.0-3.2 the reset already happened at ``import dspy`` (before any of our objects could be made in the
    usual import order), so there is nothing to run.
    """
    setup = _dspy_setup()
    if setup is None:
        return
    litellm = sys.modules.get("litellm")
    installed = getattr(litellm, "cache", None)
    try:
        setup(feature="dspy_tiered_cache")
    except ImportError:  # DSPy could not load LiteLLM: then it cannot reset it either
        return
    ours = type(installed).__module__.partition(".")[0] == __name__.partition(".")[0]
    if litellm is not None and ours and getattr(litellm, "cache", None) is None:
        setattr(litellm, "cache", installed)  # noqa: B010 (the module is untyped here: read from sys.modules)
