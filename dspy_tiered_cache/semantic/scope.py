"""Which requests may share a semantic entry, and which are never compared at all (the guards).

Two requests are only ever *compared* when everything but the text of their last user turn is identical: the
model, every non-message parameter (temperature, tools, response_format, n, seed, ...), the system prompt and
every earlier turn, the namespace and its generation (so invalidating a namespace also empties its semantic
scope). All of that is hashed into a *partition*; the index searches one partition only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dspy_tiered_cache.keys import UncacheableRequest, canonical_request, request_digest

#: Parameters that make a call unsafe to answer from a neighbour: the answer is an action, not text.
_TOOL_PARAMS = ("tools", "functions", "tool_choice", "function_call")


@dataclass(frozen=True, slots=True)
class Scope:
    partition: str
    text: str


@dataclass(frozen=True, slots=True)
class Guards:
    max_chars: int = 2000
    max_messages: int = 6
    allow_tools: bool = False


def message_text(content: Any) -> str | None:
    """The text of a message; None for content that is not only text (images, audio, files)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                return None
        return "\n".join(parts)
    return None


def scope_of(
    request: Mapping[str, Any], namespace: str, generation: int, guards: Guards, secret: bytes | None = None
) -> Scope | str:
    """The request's partition and compared text, or the name of the guard that keeps it exact-only."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "not_chat"
    if len(messages) > guards.max_messages:
        return "long_conversation"
    if not guards.allow_tools and any(request.get(p) for p in _TOOL_PARAMS):
        return "tools"
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role") != "user" or set(last) - {"role", "content"}:
        return "last_turn_not_user_text"
    text = message_text(last.get("content"))
    if text is None:
        return "non_text_content"
    if not text.strip() or len(text) > guards.max_chars:
        return "text_length"
    if any(isinstance(m, Mapping) and (m.get("tool_calls") or m.get("role") == "tool") for m in messages[:-1]):
        return "tools"
    rest = {name: value for name, value in request.items() if name != "messages"}
    rest["__prefix__"] = messages[:-1]
    rest["__namespace__"] = [namespace, generation]
    try:
        partition = request_digest(canonical_request(rest, ()), secret)
    except UncacheableRequest:
        return "uncacheable"
    return Scope(partition, text)
