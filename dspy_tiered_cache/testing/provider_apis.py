"""The stand-in provider's answers for the APIs beyond chat, completions and embeddings.

LiteLLM's own cache serves transcription, rerank, the OpenAI Responses API and Anthropic's Messages API too, so
the stand-in answers them over real HTTP, in the wire formats the providers document, for the door's call-type
tests to compare ``litellm.Cache`` with ``TieredCache`` request for request:

* ``POST /v1/audio/transcriptions`` (multipart form, as the OpenAI SDK sends it): the transcript is a function of
  the audio *bytes* (never of the file's name), ``json`` / ``verbose_json`` / ``text`` response formats;
* ``POST /v1/rerank`` (Cohere's format, which LiteLLM follows): a relevance score per document;
* ``POST /v1/responses``: a ``response`` object with one output message; ``stream`` answers the event sequence
  OpenAI sends (``response.created`` ... ``response.output_text.delta`` ... ``response.completed``);
* ``POST /v1/messages``: an Anthropic ``message``; ``stream`` answers Anthropic's events (``message_start``,
  ``content_block_start``, ``content_block_delta`` ..., ``message_delta``, ``message_stop``).

Every builder here is pure (request body in, payload or events out); the server in :mod:`.provider` routes,
counts and sends them.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "anthropic_message",
    "anthropic_stream_events",
    "parse_multipart",
    "rerank",
    "responses_object",
    "responses_stream_events",
    "transcription",
]

_JSON = dict[str, Any]


class RequestError(ValueError):
    """A malformed request: the server answers it with HTTP 400 and this message."""


def _tokens(text: str) -> int:
    return max(1, -(-len(text) // 4)) if text else 0


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _snippet(text: str, limit: int = 40) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _pieces(text: str, size: int = 3) -> list[str]:
    words = re.findall(r"\S+\s*|\s+", text)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)] or [text]


# ------------------------------------------------------------------------------------------ transcription


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """The form fields and files of a ``multipart/form-data`` body: ``({name: text}, {name: (filename, bytes)})``."""
    if not content_type.startswith("multipart/form-data"):
        raise RequestError("expected a multipart/form-data body")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    if not message.is_multipart():
        raise RequestError("malformed multipart body")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def transcription(fields: Mapping[str, str], files: Mapping[str, tuple[str, bytes]], salt: str) -> tuple[Any, str]:
    """``(payload, content_type)`` of a transcription: the text depends on the audio bytes only."""
    if "file" not in files:
        raise RequestError("'file' is required")
    _, audio = files["file"]
    seed = hashlib.sha256(salt.encode() + b"\x00" + audio).hexdigest()
    text = f"Transcript {seed[:8]} of {len(audio)} bytes."
    seconds = round(max(0.1, len(audio) / 32000), 2)
    response_format = fields.get("response_format") or "json"
    if response_format == "text":
        return text, "text/plain"
    payload: _JSON = {"text": text, "usage": {"type": "duration", "seconds": seconds}}
    if response_format == "verbose_json":
        payload.update(
            task="transcribe",
            language=fields.get("language") or "english",
            duration=seconds,
            segments=[{"id": 0, "start": 0.0, "end": seconds, "text": text}],
        )
    return payload, "application/json"


# ------------------------------------------------------------------------------------------------ rerank


def rerank(body: Mapping[str, Any], salt: str) -> _JSON:
    """Cohere's rerank answer: documents ordered by a score derived from the query and the document."""
    query = body.get("query")
    documents = body.get("documents")
    if not isinstance(query, str) or not isinstance(documents, list) or not documents:
        raise RequestError("'query' must be a string and 'documents' a non-empty list")
    scored = []
    for index, document in enumerate(documents):
        text = document if isinstance(document, str) else json.dumps(document, sort_keys=True)
        score = int(_digest("rerank", query, text, salt)[:6], 16) / 0xFFFFFF
        scored.append((round(score, 6), index, text))
    scored.sort(key=lambda item: (-item[0], item[1]))
    top_n = body.get("top_n")
    if isinstance(top_n, int) and not isinstance(top_n, bool) and top_n > 0:
        scored = scored[:top_n]
    results: list[_JSON] = []
    for score, index, text in scored:
        result: _JSON = {"index": index, "relevance_score": score}
        if body.get("return_documents"):
            result["document"] = {"text": text}
        results.append(result)
    return {
        "id": str(uuid.uuid4()),
        "results": results,
        "meta": {"api_version": {"version": "1"}, "billed_units": {"search_units": 1}},
    }


# ----------------------------------------------------------------------------------------- Responses API


def _responses_input_text(body: Mapping[str, Any]) -> str:
    raw = body.get("input")
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list) or not raw:
        raise RequestError("'input' must be a string or a non-empty list of items")
    texts: list[str] = []
    for item in raw:
        content = item.get("content") if isinstance(item, Mapping) else item
        text = _content_text(content)
        texts.append(text if text is not None else json.dumps(item, sort_keys=True, default=str))
    return "\n".join(texts)


def _content_text(content: Any) -> str | None:
    """The text of a message's content: a string, or the ``text`` of its parts; None for anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return None


def responses_object(body: Mapping[str, Any], salt: str) -> _JSON:
    """A completed ``response`` object; its text depends on the input, instructions and previous response."""
    text_in = _responses_input_text(body)
    seed = _digest("responses", text_in, body.get("instructions"), body.get("previous_response_id"), salt)
    text = f"Response {seed[:8]}: {_snippet(text_in)}"
    input_tokens, output_tokens = _tokens(text_in), _tokens(text)
    return {
        "id": "resp_" + uuid.uuid4().hex,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model") or "gpt-4o-mini"),
        "output": [
            {
                "type": "message",
                "id": "msg_" + seed[:24],
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": None,
        "metadata": {},
    }


def responses_stream_events(body: Mapping[str, Any], salt: str) -> Iterator[tuple[str, _JSON]]:
    """``(event name, data)`` in the order OpenAI streams a text response."""
    final = responses_object(body, salt)
    message = final["output"][0]
    text = message["content"][0]["text"]
    pending = {**final, "status": "in_progress", "output": [], "usage": None}
    number = iter(range(1_000_000))

    def event(kind: str, **data: Any) -> tuple[str, _JSON]:
        return kind, {"type": kind, "sequence_number": next(number), **data}

    yield event("response.created", response=pending)
    yield event("response.in_progress", response=pending)
    yield event("response.output_item.added", output_index=0, item={**message, "status": "in_progress", "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.content_part.added", item_id=message["id"], output_index=0, content_index=0, part=part)
    for piece in _pieces(text):
        yield event("response.output_text.delta", item_id=message["id"], output_index=0, content_index=0, delta=piece)
    yield event("response.output_text.done", item_id=message["id"], output_index=0, content_index=0, text=text)
    done_part = {**part, "text": text}
    yield event("response.content_part.done", item_id=message["id"], output_index=0, content_index=0, part=done_part)
    yield event("response.output_item.done", output_index=0, item=message)
    yield event("response.completed", response=final)


# ------------------------------------------------------------------------------------ Anthropic messages


def _anthropic_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    texts = (_content_text(m.get("content")) if isinstance(m, Mapping) else None for m in messages)
    return "\n".join(text for text in texts if text is not None)


def anthropic_message(body: Mapping[str, Any], salt: str) -> _JSON:
    """An Anthropic ``message`` answer; its text depends on the messages and the system prompt."""
    if not isinstance(body.get("max_tokens"), int):
        raise RequestError("'max_tokens' is required")
    text_in = _anthropic_text(body)
    seed = _digest("messages", body.get("messages"), body.get("system"), salt)
    text = f"Message {seed[:8]}: {_snippet(text_in)}"
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": str(body.get("model") or "claude-sonnet-4-5"),
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": _tokens(text_in), "output_tokens": _tokens(text)},
    }


def anthropic_stream_events(body: Mapping[str, Any], salt: str) -> Iterator[tuple[str, _JSON]]:
    """``(event name, data)`` in the order Anthropic streams a text message."""
    final = anthropic_message(body, salt)
    text = final["content"][0]["text"]
    start = {**final, "content": [], "stop_reason": None, "usage": {**final["usage"], "output_tokens": 1}}
    yield "message_start", {"type": "message_start", "message": start}
    yield (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    yield "ping", {"type": "ping"}
    for piece in _pieces(text):
        delta = {"type": "text_delta", "text": piece}
        yield "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
    yield "content_block_stop", {"type": "content_block_stop", "index": 0}
    stop: _JSON = {"stop_reason": "end_turn", "stop_sequence": None}
    yield (
        "message_delta",
        {"type": "message_delta", "delta": stop, "usage": {"output_tokens": final["usage"]["output_tokens"]}},
    )
    yield "message_stop", {"type": "message_stop"}
