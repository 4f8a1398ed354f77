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

Two more hit-path repairs live here, in one wrapper around LiteLLM's conversion of a cached value
(``LLMCachingHandler._convert_cached_result_to_model_response``), installed once:

* A non-streamed Anthropic messages hit is the stored dict itself, but LiteLLM imports the same proxy-only module
  to find that out. When that import fails, the wrapper asks LiteLLM to convert with a call type no branch
  matches, which returns the dict marked exactly as the Anthropic branch would. (A stored Anthropic *stream*
  cannot be replayed without that module; LiteLLM cannot stream Anthropic messages without it either.)
* A streamed text-completion hit is replayed by LiteLLM as chat chunks (``chunk.choices[0].text`` raises). When
  ``litellm.cache`` is a door that asks for it (class attribute ``replays_text_completion_chunks``), the replay is
  wrapped in LiteLLM's own ``TextCompletionStreamWrapper``, as an uncached ``text_completion(stream=True)`` is.

The wrapper also attaches the door's hit metadata (``_hidden_params["cache"]``) to every converted hit, from
:data:`HIT_NOTES`: the door appends one note per entry it served during the lookup.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, Literal

from dspy_tiered_cache.errors import CacheError

__all__ = ["HIT_NOTES", "MissingLiteLLMDependency", "ensure_hit_path", "merge_notes"]

#: The hit notes of the lookup under way (``{"level", "age_s", "saved_usage", "saved_usd"}`` per entry served).
#: A list, so the per-input lookups LiteLLM gathers for ``aembedding`` (tasks of their own) add to the same one.
HIT_NOTES: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar("dtc_hit_notes", default=None)

_ANTHROPIC_CALLS: Final = frozenset({"anthropic_messages", "aanthropic_messages"})
_TEXT_CALLS: Final = frozenset({"text_completion", "atext_completion"})
_STREAM_EVENTS_KEY: Final = "litellm_cached_anthropic_sse_events"
_NO_CONVERSION: Final = "dtc_passthrough"

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

    _wrap_conversion(caching_handler)
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


def merge_notes(notes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One hit's metadata from the notes of the entries it was made of (several for an ``aembedding`` list)."""
    if not notes:
        return None
    if len(notes) == 1:
        return notes[0]
    levels = {note["level"] for note in notes}
    ages = [note["age_s"] for note in notes if isinstance(note.get("age_s"), float)]
    usage: dict[str, int] = {}
    for note in notes:
        for name, value in (note.get("saved_usage") or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                usage[name] = usage.get(name, 0) + value
    return {
        "level": levels.pop() if len(levels) == 1 else "mixed",
        "age_s": max(ages) if ages else None,
        "saved_usage": usage or None,
        "saved_usd": sum(float(note.get("saved_usd") or 0.0) for note in notes),
    }


def _attach(result: Any) -> None:
    notes = HIT_NOTES.get()
    if not notes:
        return
    HIT_NOTES.set(None)
    note = merge_notes(notes)
    hidden = getattr(result, "_hidden_params", None)
    if note is not None and isinstance(hidden, dict) and "cache" not in hidden:
        hidden["cache"] = note


def _anthropic_replay_importable() -> bool:
    try:
        from litellm.llms.anthropic.messages.native import response_cache  # noqa: F401
    except ImportError:
        return False
    return True


def _wrap_conversion(caching_handler: Any) -> None:
    handler_class: Any = getattr(caching_handler, "LLMCachingHandler", None)
    convert = getattr(handler_class, "_convert_cached_result_to_model_response", None)
    if handler_class is None or convert is None or getattr(convert, "_dtc_wrapped", False):
        return
    anthropic_ok: list[bool] = []

    @functools.wraps(convert)
    def converted(self: Any, *args: Any, **named: Any) -> Any:
        if args or not {"cached_result", "call_type", "kwargs"} <= named.keys():  # not how LiteLLM calls it
            return convert(self, *args, **named)
        cached_result, call_type, kwargs = named.pop("cached_result"), named.pop("call_type"), named.pop("kwargs")
        rest = named
        if call_type in _ANTHROPIC_CALLS and isinstance(cached_result, dict):
            if not anthropic_ok:
                anthropic_ok.append(_anthropic_replay_importable())
            if not anthropic_ok[0] and _STREAM_EVENTS_KEY not in cached_result:
                call_type = _NO_CONVERSION  # the Anthropic branch returns this dict as is: skip its import
        result = convert(self, cached_result=cached_result, call_type=call_type, kwargs=kwargs, **rest)
        if call_type in _TEXT_CALLS and _replays_text_chunks() and _is_chat_replay(result):
            result = _as_text_completion_stream(result, kwargs)
        _attach(result)
        return result

    converted._dtc_wrapped = True  # type: ignore[attr-defined]
    handler_class._convert_cached_result_to_model_response = converted
    _wrap_embedding_merge(handler_class)


def _wrap_embedding_merge(handler_class: Any) -> None:
    """``aembedding`` hits are assembled by LiteLLM from per-input lookups, not converted: give them the notes of
    their inputs (a fresh list per call, so the gathered per-input lookups add to one list)."""
    retrieve: Callable[..., Any] | None = getattr(handler_class, "_retrieve_from_cache", None)
    assemble: Callable[..., Any] | None = getattr(handler_class, "_process_async_embedding_cached_response", None)
    if retrieve is None or assemble is None:
        return

    @functools.wraps(retrieve)
    async def retrieved(self: Any, *args: Any, **kwargs: Any) -> Any:
        HIT_NOTES.set([])
        return await retrieve(self, *args, **kwargs)

    @functools.wraps(assemble)
    def assembled(self: Any, *args: Any, **kwargs: Any) -> Any:
        response, all_hit = assemble(self, *args, **kwargs)
        if response is not None:
            _attach(response)
        return response, all_hit

    handler_class._retrieve_from_cache = retrieved
    handler_class._process_async_embedding_cached_response = assembled


def _replays_text_chunks() -> bool:
    import litellm

    return getattr(type(litellm.cache), "replays_text_completion_chunks", False) is True


def _is_chat_replay(result: Any) -> bool:
    from litellm.litellm_core_utils.streaming_handler import CustomStreamWrapper

    return isinstance(result, CustomStreamWrapper)


def _as_text_completion_stream(result: Any, kwargs: Any) -> Any:
    from litellm.text_completions.streaming_iterator import TextCompletionStreamWrapper

    options = kwargs.get("stream_options") if isinstance(kwargs, dict) else None
    wrapper = TextCompletionStreamWrapper(
        completion_stream=result,
        model=getattr(result, "model", None),
        stream_options=options if isinstance(options, dict) else None,
        custom_llm_provider="cached_response",
    )
    wrapper._hidden_params = getattr(result, "_hidden_params", {})  # type: ignore[attr-defined]
    return wrapper
