"""LiteLLM's cache-hit path, without the packages only LiteLLM's proxy server needs.

On every cache hit, each LiteLLM release the door supports asks whether the cached result is replayed as a stream
(``litellm.caching.caching_handler._should_defer_streaming_cache_hit_callbacks``: streams log their success
callbacks when they end, so the hit must not log them too). To ask, it imports LiteLLM's Anthropic pass-through
response cache, and that module imports ``litellm.proxy`` and so fastapi: a web framework only ``litellm[proxy]``
installs. Without it, every hit raises ``ModuleNotFoundError`` to the caller (measured on 1.105.0 to 1.110.2; the
module moved from ``llms.anthropic.pass_through.messages`` to ``llms.anthropic.messages.native`` in 1.110).

Making every user install fastapi (plus what LiteLLM's audio and MCP paths pull in) to read a cache would defeat
the point of a small default install, so :func:`ensure_hit_path` asks the question once itself. If LiteLLM can
answer, nothing changes. If the import fails, the answer for the Anthropic stream class is known without it: no
instance of a class whose module cannot be imported can exist in this process. The check then reduces to LiteLLM's
other replay streams, and LiteLLM's function is replaced by one that tests exactly those (its result for every
object that can exist here is unchanged; only the doomed import is skipped).
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Literal

from dspy_tiered_cache.errors import CacheError

__all__ = ["MissingLiteLLMDependency", "ensure_hit_path"]

log = logging.getLogger("dspy_tiered_cache")

_DEFER_CHECK: Final = "_should_defer_streaming_cache_hit_callbacks"

HitPath = Literal["native", "guarded", "unrecognized"]

_lock = threading.Lock()
_state: HitPath | None = None


class MissingLiteLLMDependency(CacheError, ImportError):
    """LiteLLM cannot serve cache hits in this environment, and the door cannot route around it."""


def ensure_hit_path() -> HitPath:
    """Make sure a cache hit does not import what is not installed; returns what was found.

    ``"native"``: LiteLLM's hit path imports cleanly here (e.g. fastapi is installed), untouched.
    ``"guarded"``: the import failed and LiteLLM's check was replaced by the equivalent one above.
    ``"unrecognized"``: this LiteLLM has no such check (or a different one): nothing to do.
    Raises :class:`MissingLiteLLMDependency` only if even LiteLLM's own stream classes cannot be imported.
    """
    global _state
    state = _state
    if state is None:
        with _lock:
            state = _state
            if state is None:
                state = _state = _settle()
    return state


def _settle() -> HitPath:
    from litellm.caching import caching_handler

    check = getattr(caching_handler, _DEFER_CHECK, None)
    if not callable(check):
        return "unrecognized"
    try:
        check(cached_result=None)  # what every hit does first; None is never a stream
    except ImportError as exc:
        missing = exc.name or str(exc)
    except TypeError:  # another signature: a release outside the tested range
        return "unrecognized"
    else:
        return "native"

    try:
        from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper
        from litellm.responses.streaming_iterator import BaseResponsesAPIStreamingIterator
    except ImportError as exc:
        raise MissingLiteLLMDependency(
            f"LiteLLM cannot serve cache hits here: its hit path needs {missing}, and its stream classes do not "
            f"import either ({exc}). Install LiteLLM's optional packages: pip install 'litellm[proxy]'"
        ) from exc
    replay_streams: Final = (CustomStreamWrapper, BaseResponsesAPIStreamingIterator)

    def defer_when_replayed_as_stream(*, cached_result: object) -> bool:
        """LiteLLM's check without the Anthropic pass-through stream, whose module cannot import here."""
        return isinstance(cached_result, replay_streams)

    defer_when_replayed_as_stream.__wrapped__ = check  # type: ignore[attr-defined]
    setattr(caching_handler, _DEFER_CHECK, defer_when_replayed_as_stream)
    log.debug("LiteLLM's cache-hit check imports %s, which is not installed: using the equivalent check", missing)
    return "guarded"
