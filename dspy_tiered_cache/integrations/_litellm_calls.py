"""What the LiteLLM door knows about each call type LiteLLM's cache serves.

LiteLLM's ``Cache`` caches chat, text completion, embeddings, transcription, rerank, the Responses API and
Anthropic messages by default. The door caches the same list, read from the installed LiteLLM
(:func:`default_call_types`), so a LiteLLM release that adds a type is covered without a release of ours. This
module holds what differs between those types and nothing else:

* which call a request is, for its span and its hit metadata (:func:`call_type_of`, :func:`operation_of`);
* requests that must not be cached at all, and why (:func:`bypass_reason`): a Responses API request with
  ``background=True`` returns a handle to a job, not an answer, and one that names a ``conversation`` continues
  server-side state that changes with every turn, so the same request later means something else;
* the key of an audio file: its bytes, never its name (:func:`audio_digest`);
* whether a stored answer fits the call asking for it (:func:`fits`): LiteLLM keys a chat request and an
  Anthropic messages request with the same model, messages and max_tokens alike, and a Responses request like an
  embedding of the same input, so a hit of the wrong shape is a miss here instead of a wrong-type answer;
* what a hit saved, with the conventions LiteLLM prices that type by (:func:`saved_of`): tokens for chat, text,
  embeddings, Responses and Anthropic messages; seconds of audio for transcription; search units for rerank.
"""

from __future__ import annotations

import hashlib
import os
import sys
import typing
from collections.abc import Mapping
from typing import Any, Final

from dspy_tiered_cache.keys import UncacheableRequest
from dspy_tiered_cache.stats import saved_usd

__all__ = [
    "audio_digest",
    "bypass_reason",
    "call_type_of",
    "default_call_types",
    "fits",
    "operation_of",
    "saved_of",
]

#: What the door cached by default before it read LiteLLM's list (LiteLLM releases without one).
_FALLBACK: Final = (
    "completion", "acompletion", "text_completion", "atext_completion", "embedding", "aembedding",
)  # fmt: skip

#: Span operation per call type (the async twin of each maps to the same name).
_OPERATIONS: Final = {
    "completion": "chat",
    "text_completion": "text_completion",
    "embedding": "embeddings",
    "transcription": "transcription",
    "rerank": "rerank",
    "responses": "responses",
    "anthropic_messages": "messages",
}

#: LiteLLM's key for Anthropic stream events in a cached Anthropic messages entry.
STREAM_EVENTS_KEY: Final = "litellm_cached_anthropic_sse_events"


def default_call_types() -> tuple[str, ...]:
    """Every call type the installed LiteLLM's own ``Cache`` caches by default."""
    from litellm.types import caching

    found = getattr(caching, "DEFAULT_CACHING_SUPPORTED_CALL_TYPES", None)
    if isinstance(found, (tuple, list)) and all(isinstance(name, str) for name in found):
        return tuple(found)
    literal = getattr(caching, "CachingSupportedCallTypes", None)
    names = typing.get_args(literal) if literal is not None else ()
    return tuple(names) if names else _FALLBACK


def call_type_of(kwargs: Mapping[str, Any]) -> str | None:
    """The LiteLLM call type (``"aresponses"``, ``"completion"``, ...) of a lookup; None when LiteLLM did not say.

    LiteLLM hands its logging object with every lookup; writes arrive without it (then None)."""
    logging_obj = kwargs.get("litellm_logging_obj")
    call_type = getattr(logging_obj, "call_type", None) if logging_obj is not None else None
    value = getattr(call_type, "value", call_type)
    return value if isinstance(value, str) else None


def _base(call_type: str) -> str:
    if call_type.startswith("a") and call_type[1:] in _OPERATIONS:
        return call_type[1:]
    return call_type


def operation_of(kwargs: Mapping[str, Any]) -> str:
    """The span's operation name: chat, text_completion, embeddings, transcription, rerank, responses, messages."""
    call_type = call_type_of(kwargs)
    if call_type is not None and _base(call_type) in _OPERATIONS:
        return _OPERATIONS[_base(call_type)]
    if "file" in kwargs:
        return "transcription"
    if "documents" in kwargs and "query" in kwargs:
        return "rerank"
    if "messages" in kwargs:
        return "chat"
    return "embeddings" if "input" in kwargs else "text_completion"


def bypass_reason(kwargs: Mapping[str, Any]) -> str | None:
    """Why this request must neither read nor write the cache, or None when it may."""
    if kwargs.get("background") is True:
        return "a background Responses request returns a job handle, not an answer"
    if kwargs.get("conversation") is not None:
        return "a Responses request on a conversation continues server-side state that changes every turn"
    return None


def audio_digest(file: Any) -> str:
    """The SHA-256 of an audio upload's bytes, from any form LiteLLM accepts (bytes, a ``(name, content, ...)``
    tuple, an open file, a path). Never falls back to the name: two recordings saved as ``audio.wav`` differ."""
    content = file[1] if isinstance(file, tuple) and len(file) >= 2 else file
    data: Any = None
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
    elif isinstance(content, os.PathLike):
        try:
            with open(content, "rb") as handle:
                data = handle.read()
        except OSError:
            data = None
    elif callable(getattr(content, "read", None)):
        try:
            position = content.tell()
            content.seek(0)
            data = content.read()
            content.seek(position)
        except (OSError, AttributeError, ValueError):
            data = None
    if not isinstance(data, bytes):
        raise UncacheableRequest("the audio file's bytes could not be read, so it cannot be keyed on its content")
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fits(call_type: str | None, response: Any) -> bool:
    """Whether a stored answer has the shape the call asking for it returns (see the module docstring)."""
    if call_type is None or type(response) is not dict:
        return True
    base = _base(call_type)
    if base == "anthropic_messages":
        return response.get("type") == "message" or STREAM_EVENTS_KEY in response
    if STREAM_EVENTS_KEY in response or response.get("type") == "message":
        return False
    is_chat = "choices" in response
    if base == "responses":  # LiteLLM bridges some providers' Responses calls through chat completions
        return response.get("object") == "response" or is_chat
    if response.get("object") == "response":
        return False
    if base in ("completion", "text_completion"):
        return is_chat
    if base == "embedding":
        return "embedding" in response or "data" in response
    if base == "rerank":
        return "results" in response
    if base == "transcription":
        return "text" in response
    return True


def saved_of(response: Mapping[str, Any], model: str | None) -> tuple[str | None, dict[str, Any] | None, float]:
    """``(model, usage, dollars)`` a hit saved, each type priced the way LiteLLM prices it; ``model`` is the
    request's, for answers that do not name theirs (rerank)."""
    answered = response.get("model")
    model = answered if isinstance(answered, str) else model
    usage = response.get("usage")
    if isinstance(usage, Mapping) and usage.get("type") == "duration":  # transcription: seconds of audio
        seconds = usage.get("seconds")
        return model, dict(usage), _unit_cost(model or "whisper-1", "input_cost_per_second", seconds)
    if isinstance(usage, Mapping):
        usage = dict(usage)
        return model, usage, saved_usd(model, usage)
    if "embedding" in response and response.get("prompt_tokens") is not None:  # one cached embedding item
        usage = {"prompt_tokens": response["prompt_tokens"]}
        return model, usage, saved_usd(model, usage)
    meta = response.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, Mapping) else None
    if isinstance(billed, Mapping):  # rerank: search units (queries)
        return (
            model,
            {"search_units": billed.get("search_units")},
            _unit_cost(model, "input_cost_per_query", billed.get("search_units")),
        )
    return model, None, 0.0


def _unit_cost(model: str | None, field: str, units: Any) -> float:
    litellm = sys.modules.get("litellm")
    table = getattr(litellm, "model_cost", None)
    if not model or not isinstance(table, Mapping) or not isinstance(units, (int, float)):
        return 0.0
    entry = table.get(model) or table.get(model.split("/", 1)[-1])
    price = entry.get(field) if isinstance(entry, Mapping) else None
    return float(price) * float(units) if isinstance(price, (int, float)) else 0.0
