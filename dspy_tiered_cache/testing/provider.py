"""A local stand-in for an OpenAI-compatible LLM provider, for tests, examples, notebooks and benchmarks.

Why it exists: the cache must be exercised over the same path real traffic takes (real LiteLLM, real DSPy,
real HTTP, real JSON) without an API key, without the internet and without paying for tokens. This module
is *not* a model: it is a small HTTP server (stdlib only) that answers the OpenAI wire format well enough
for ``litellm.completion`` / ``litellm.acompletion`` / ``litellm.text_completion`` / ``litellm.embedding``
and ``dspy.LM`` (both its native engine and its LiteLLM engine) to work against it. A user with a key runs
exactly the same code against a real model by dropping ``api_base`` (or pointing it at the real provider).

What it answers:

* ``POST /v1/chat/completions`` - non-streamed and streamed (SSE, a final usage chunk when
  ``stream_options.include_usage`` is set, then ``data: [DONE]``); ``n`` choices; tool calls when the request
  carries ``tools`` and either ``tool_choice`` forces a function / is ``"required"`` or the last message is a
  user message containing the marker ``CALL_TOOL`` (the arguments are generated from the tool's JSON schema,
  so they validate); JSON mode / structured outputs (``response_format``) answer with a JSON object.
  Prompts built by DSPy's ``ChatAdapter`` / ``JSONAdapter`` are recognised: the system message lists the
  output fields (``Your output fields are: 1. `reasoning` (str): ...``) and the reply carries every one of
  them in the adapter's format (``[[ ## answer ## ]]`` ... ``[[ ## completed ## ]]``, or a JSON object), with
  values of the declared type, so ``dspy.Predict`` and ``dspy.ChainOfThought`` parse.
* ``POST /v1/completions`` - text completions (``prompt`` a string or a list; ``n``; streaming).
* ``POST /v1/embeddings`` - ``input`` a string or a list; unit-length float vectors of ``embedding_dim``
  (or the request's ``dimensions``), returned as floats or as base64 float32 (the OpenAI SDK asks for base64).
  The model ``bag-of-words`` answers with :func:`bag_of_words_vector` (256 dimensions unless ``dimensions``):
  texts sharing words are close, as the semantic tier's tests and benchmark need.
* ``POST /v1/audio/transcriptions``, ``/v1/rerank``, ``/v1/responses`` (streamed too) and Anthropic's
  ``/v1/messages`` (streamed too): see :mod:`.provider_apis`.
* ``GET /v1/models`` and ``GET /health``.

Determinism: the *content* of an answer is a function of the request's messages (plus tools and
``response_format``, which change the answer's shape) and of the provider's ``salt``; the same request gives
the same content, different ones differ. Sampling parameters and the model name do not change the content.
Every response gets a fresh ``id``, so a cached answer is recognisable: it carries the id of the call that
filled the cache.

Instrumentation (thread-safe): ``request_count``, ``endpoint_counts``, ``requests`` (parsed JSON bodies;
headers are never recorded, so an API key never lands in a test log), ``in_flight`` / ``max_in_flight``
(for single-flight tests), ``fail_next(n, status)`` to inject errors, ``set_failure(mode)`` / ``recover()`` to
fail every request until told otherwise (HTTP 500/429, a hang, connection refused, an answer cut off midway;
also ``POST /control/failure`` and ``POST /control/recover`` for a provider in another process),
``latency`` / ``chunk_delay`` to simulate a slow model, ``reset()``.

Use::

    with StandInProvider(latency=0.01) as p:
        litellm.completion(model="openai/gpt-4o-mini", api_base=p.base_url, api_key="sk-test", messages=[...])
        assert p.request_count == 1

or as a separate process (examples, multi-process tests)::

    python -m dspy_tiered_cache.testing.provider --port 0 --latency 0.3   # prints the base URL
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import hashlib
import json
import math
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast

from dspy_tiered_cache.testing import provider_apis as apis

__all__ = ["BAG_OF_WORDS_MODEL", "TOOL_CALL_MARKER", "StandInProvider", "bag_of_words_vector", "main"]

#: Put this text in the last user message (with ``tools`` in the request) to get a tool call back.
TOOL_CALL_MARKER = "CALL_TOOL"

_JSON = dict[str, Any]

# DSPy prompt structure (dspy/adapters/chat_adapter.py, json_adapter.py, utils.py), DSPy 3.x.
_OUTPUT_SECTION_RE = re.compile(
    r"Your output fields are:\n(?P<body>.*?)(?:\nAll interactions will be structured|\n\n|\Z)", re.S
)
_OUTPUT_FIELD_LINE_RE = re.compile(r"^\d+\. `(?P<name>\w+)` \((?P<type>.+?)\):", re.M)
_FIELD_NOTE_RE = re.compile(r"\{(?P<name>\w+)\}\s+# note: the value you produce (?P<note>.*)$", re.M)
_CHAT_REMINDER_RE = re.compile(r"`\[\[ ## (\w+) ## \]\]`")
_JSON_REMINDER_RE = re.compile(r"Respond with a JSON object in the following order of fields: (?P<body>.*)")
_FIELD_HEADER_RE = re.compile(r"^\[\[ ## (\w+) ## \]\]\s*$", re.M)
_JSON_STRUCTURE_MARKER = "Outputs will be a JSON object with the following fields."


# --------------------------------------------------------------------------------------------------------
# deterministic content
# --------------------------------------------------------------------------------------------------------


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _digest(*parts: Any) -> str:
    return hashlib.sha256(_canonical(parts).encode("utf-8")).hexdigest()


def _rough_tokens(text: str) -> int:
    """About four characters per token, like the usual rule of thumb for English; never zero for text."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _message_text(content: Any) -> str:
    """The text of a message ``content`` (a string, or a list of parts as sent for multimodal messages)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts: list[str] = []
        for part in content:
            if isinstance(part, Mapping):
                if isinstance(part.get("text"), str):
                    texts.append(part["text"])
                else:
                    texts.append(_canonical(part))
            else:
                texts.append(str(part))
        return "\n".join(texts)
    return _canonical(content)


def _messages_tokens(messages: Sequence[Any]) -> int:
    total = 0
    for message in messages:
        if isinstance(message, Mapping):
            total += 4 + _rough_tokens(_message_text(message.get("content")))
            if message.get("tool_calls"):
                total += _rough_tokens(_canonical(message["tool_calls"]))
        else:
            total += _rough_tokens(str(message))
    return total + 2 if messages else 0


def _snippet(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------------
# values generated from JSON schemas (tool arguments, structured outputs, DSPy typed fields)
# --------------------------------------------------------------------------------------------------------


def _resolve_ref(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        if not isinstance(node, Mapping) or part not in node:
            return {}
        node = node[part]
    return node if isinstance(node, Mapping) else {}


def _example_from_schema(
    schema: Any, seed: str, *, root: Mapping[str, Any] | None = None, depth: int = 0, label: str = "value"
) -> Any:
    """A deterministic instance of ``schema`` (enough of JSON Schema for tool parameters and pydantic models)."""
    if not isinstance(schema, Mapping) or depth > 8:
        return f"{label}-{seed[:6]}"
    root = schema if root is None else root
    number = int(seed[:8], 16)
    if "$ref" in schema:
        return _example_from_schema(
            _resolve_ref(str(schema["$ref"]), root), seed, root=root, depth=depth + 1, label=label
        )
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        options = schema["enum"]
        return options[number % len(options)]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            chosen = next((o for o in options if not (isinstance(o, Mapping) and o.get("type") == "null")), options[0])
            return _example_from_schema(chosen, seed, root=root, depth=depth + 1, label=label)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {
            str(name): _example_from_schema(sub, _digest(seed, name), root=root, depth=depth + 1, label=str(name))
            for name, sub in properties.items()
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1) or 1))
        if isinstance(schema.get("maxItems"), int):
            count = min(count, schema["maxItems"])
        items = schema.get("items", {})
        if isinstance(schema.get("prefixItems"), list):
            return [
                _example_from_schema(sub, _digest(seed, i), root=root, depth=depth + 1, label=label)
                for i, sub in enumerate(schema["prefixItems"])
            ]
        return [
            _example_from_schema(items, _digest(seed, i), root=root, depth=depth + 1, label=label) for i in range(count)
        ]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        high = int(schema.get("maximum", low + 99))
        return low + number % (high - low + 1) if high >= low else low
    if kind == "number":
        low_f = float(schema.get("minimum", 0.0))
        return round(low_f + (number % 10000) / 100.0, 2)
    if kind == "boolean":
        return number % 2 == 0
    if kind == "null":
        return None
    if schema.get("format") == "date-time":
        return "2024-01-01T00:00:00Z"
    if schema.get("format") == "date":
        return "2024-01-01"
    return f"{label}-{seed[:8]}"


# --------------------------------------------------------------------------------------------------------
# DSPy-aware replies
# --------------------------------------------------------------------------------------------------------


class _OutputField:
    __slots__ = ("name", "note", "type_name")

    def __init__(self, name: str, type_name: str = "str", note: str = "") -> None:
        self.name = name
        self.type_name = type_name
        self.note = note


def _dspy_output_fields(messages: Sequence[Any]) -> list[_OutputField]:
    """The output fields a DSPy adapter asked for, in order; ``[]`` when the prompt is not a DSPy prompt."""
    system = "\n".join(
        _message_text(m.get("content"))
        for m in messages
        if isinstance(m, Mapping) and m.get("role") in ("system", "developer")
    )
    fields: dict[str, _OutputField] = {}
    section = _OUTPUT_SECTION_RE.search(system)
    if section:
        for match in _OUTPUT_FIELD_LINE_RE.finditer(section.group("body")):
            fields[match.group("name")] = _OutputField(match.group("name"), match.group("type").strip())
    if not fields:
        # Fallback: the reminder DSPy appends to the last user message.
        last_user = next(
            (
                _message_text(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, Mapping) and m.get("role") == "user"
            ),
            "",
        )
        names = [n for n in _CHAT_REMINDER_RE.findall(last_user) if n != "completed"]
        if not names:
            reminder = _JSON_REMINDER_RE.search(last_user)
            if reminder:
                names = re.findall(r"`(\w+)`", reminder.group("body"))
        for name in names:
            fields.setdefault(name, _OutputField(name))
    if not fields:
        return []
    # Type notes ("# note: the value you produce must ...") from the structure section: plain lines for the
    # ChatAdapter, JSON-encoded string values for the JSONAdapter.
    notes_text = system
    marker = system.find(_JSON_STRUCTURE_MARKER)
    if marker >= 0:
        brace = system.find("{", marker)
        if brace >= 0:
            with contextlib.suppress(ValueError):
                structure, _ = json.JSONDecoder().raw_decode(system[brace:])
                if isinstance(structure, Mapping):
                    notes_text += "\n" + "\n".join(str(v) for v in structure.values())
    for match in _FIELD_NOTE_RE.finditer(notes_text):
        field = fields.get(match.group("name"))
        if field is not None and not field.note:
            field.note = match.group("note").strip()
    return list(fields.values())


def _dspy_inputs(messages: Sequence[Any]) -> list[str]:
    """Values of the ``[[ ## field ## ]]`` sections of the last user message (DSPy inputs), in order."""
    last_user = next(
        (
            _message_text(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, Mapping) and m.get("role") == "user"
        ),
        "",
    )
    parts = _FIELD_HEADER_RE.split(last_user)
    values: list[str] = []
    for i in range(1, len(parts) - 1, 2):
        value = parts[i + 1].split("\n\nRespond with", 1)[0].strip()
        values.append(value)
    return values


def _field_value(field: _OutputField, seed: str, topic: str) -> Any:
    """A value the DSPy adapter can parse into the field's declared type."""
    number = int(seed[:8], 16)
    note = field.note
    type_name = field.type_name.replace(" ", "")
    schema_marker = "must adhere to the JSON schema:"
    schema_at = note.find(schema_marker)
    if schema_at >= 0:
        with contextlib.suppress(ValueError):
            schema, _ = json.JSONDecoder().raw_decode(note[schema_at + len(schema_marker) :].strip())
            return _example_from_schema(schema, seed, label=field.name)
    choices_at = note.find("one of:")
    if choices_at >= 0:
        options = [o.strip() for o in note[choices_at + len("one of:") :].split(";") if o.strip()]
        if options:
            choice = options[number % len(options)]
            if type_name.startswith("Literal["):
                with contextlib.suppress(ValueError, SyntaxError):
                    literal_values = ast.literal_eval("[" + type_name[len("Literal[") : -1] + "]")
                    for value in literal_values:
                        if str(value) == choice:
                            return value
            return choice
    if type_name == "bool" or "True or False" in note:
        return number % 2 == 0
    if type_name == "int" or "single int" in note:
        return number % 100
    if type_name == "float" or "single float" in note:
        return round((number % 10000) / 100.0, 2)
    if type_name.startswith(("list[", "List[")):
        return [f"{field.name}-{seed[:8]}"]
    if type_name.startswith(("dict[", "Dict[")):
        return {}
    label = field.name.replace("_", " ").capitalize()
    about = f": {topic}" if topic else ""
    if field.name == "reasoning":
        return f"Reasoning {seed[:8]}: let us think step by step{about}."
    return f"{label} {seed[:8]}{about}"


def _format_chat_value(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


# --------------------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------------------


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, error_type: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The stdlib default backlog is 5: a burst of concurrent clients (single-flight tests, benchmarks) would
    # overflow it and stall for a SYN retransmit (~1 s). Real providers accept bursts.
    request_queue_size = 256
    provider: StandInProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client hanging up mid-answer (a cancelled stream, a timeout) is normal; anything else is not."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real provider; clients pool connections
    # Headers and body go out in two sends; with Nagle on, the body waits for the client's delayed ACK
    # (~40 ms per call), which would make every uncached call look slow for a reason no provider has.
    disable_nagle_algorithm = True
    server: _Server
    timeout = 30
    _upload: dict[str, tuple[str, bytes]]  # idle keep-alive connections end on their own

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: test output stays readable (and no request line ever lands in a log)."""

    def setup(self) -> None:
        super().setup()
        self.server.provider._track(self.connection, add=True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.provider._track(self.connection, add=False)

    # --- plumbing -------------------------------------------------------------------------------------
    def _send_json(self, status: int, payload: Any, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, status: int, message: str, error_type: str) -> None:
        payload = {"error": {"message": message, "type": error_type, "param": None, "code": str(status)}}
        headers = {"Retry-After": "0"} if status == 429 else None
        self._send_json(status, payload, headers)

    def _read_body(self) -> _JSON:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError as exc:
            raise _HTTPError(400, f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _HTTPError(400, "request body must be a JSON object")
        return body

    def _stream(self, events: Iterator[Any]) -> None:
        """Server-sent events over chunked transfer encoding (keeps the connection reusable)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        delay = self.server.provider.chunk_delay
        first = True
        for event in events:
            if delay and not first:
                time.sleep(delay)
            first = False
            data = event if isinstance(event, str) else json.dumps(event)
            payload = (data if data.startswith("event: ") else f"data: {data}").encode() + b"\n\n"
            self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _stream_named(self, events: Iterator[tuple[str, Any]]) -> None:
        """Server-sent events with an ``event:`` line, as the Responses API and Anthropic send them."""
        self._stream(f"event: {name}\ndata: {json.dumps(data)}" for name, data in events)

    # --- routing --------------------------------------------------------------------------------------
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/health", "/v1/health", ""):
            self._send_json(200, {"status": "ok"})
        elif path in ("/v1/models", "/models"):
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": name, "object": "model", "created": 0, "owned_by": "stand-in"}
                        for name in ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
                    ],
                },
            )
        else:
            self._send_error(404, f"no route for GET {path}", "not_found_error")

    def _control(self, path: str) -> None:
        """``POST /control/failure {"mode": ..., "status": ..., "retry_after_ms": ...}`` and ``POST /control/recover``:
        switch a provider running in another process (``refuse`` needs the object: nobody would hear "recover")."""
        provider = self.server.provider
        try:
            body = self._read_body()
            if path == "/control/recover":
                provider.recover()
            elif path == "/control/failure":
                mode = body.get("mode")
                if mode == "refuse" or not isinstance(mode, str):
                    raise _HTTPError(400, "mode must be one of: status, hang, midstream")
                provider.set_failure(
                    mode,
                    status=int(body.get("status", 500)),
                    retry_after_ms=body.get("retry_after_ms"),
                    hang_s=float(body.get("hang_s", 30.0)),
                )
            else:
                raise _HTTPError(404, f"no control {path}", "not_found_error")
        except (_HTTPError, ValueError, TypeError) as exc:
            status = exc.status if isinstance(exc, _HTTPError) else 400
            self._send_error(status, str(exc), "invalid_request_error")
            return
        self._send_json(200, {"failure": provider.failure_mode})

    def _fail(self, mode: str, status: int, retry_after_ms: int | None, body: _JSON) -> None:
        """Answer as a failing provider would: an error status, no answer at all, or an answer cut off midway."""
        provider = self.server.provider
        if mode == "hang":
            provider._recovered.wait(provider._hang_s)
            self.close_connection = True
            return
        if mode == "midstream":
            self.close_connection = True
            payload = {"id": "chatcmpl-cut", "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": str(body.get("model") or "gpt-4o-mini"),
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Half an ans"},
                                    "finish_reason": None}]}  # fmt: skip
            if body.get("stream"):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                data = f"data: {json.dumps(payload)}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            else:
                text = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text) * 2))
                self.end_headers()
                self.wfile.write(text[: len(text) // 2])
            self.wfile.flush()
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        message = f"stand-in provider: failing with {status} until recovered"
        error = {"error": {"message": message, "type": "server_error" if status >= 500 else "rate_limit_error",
                           "param": None, "code": str(status)}}  # fmt: skip
        headers = {"retry-after-ms": str(retry_after_ms), "Retry-After": "0"} if retry_after_ms is not None else None
        self._send_json(status, error, headers)

    def do_POST(self) -> None:
        provider = self.server.provider
        path = self.path.split("?", 1)[0].rstrip("/")
        if path.startswith("/control/"):
            self._control(path)
            return
        while path.startswith("/v1/"):  # Cohere's client appends /v1/rerank to an api_base that may end in /v1
            path = path[3:]
        endpoint = _ENDPOINTS.get(path)
        try:
            body = self._read_form() if endpoint == "transcriptions" else self._read_body()
        except _HTTPError as exc:
            self._send_error(exc.status, str(exc), exc.error_type)
            return
        if endpoint is None:
            self._send_error(404, f"no route for POST {self.path}", "not_found_error")
            return
        failure = provider._begin(endpoint, body)
        try:
            mode = provider._mode
            if mode is not None and failure is None:
                self._fail(mode[0], mode[1], mode[2], body)
                return
            if provider.latency > 0:
                time.sleep(provider.latency)
            if failure is not None:
                status, message = failure
                self._send_error(status, message, "server_error" if status >= 500 else "invalid_request_error")
                return
            try:
                if endpoint == "chat":
                    self._chat(body)
                elif endpoint == "completions":
                    self._completions(body)
                elif endpoint == "embeddings":
                    self._send_json(200, provider._embeddings(body))
                else:
                    self._other_api(endpoint, body)
            except _HTTPError as exc:
                self._send_error(exc.status, str(exc), exc.error_type)
            except apis.RequestError as exc:
                self._send_error(400, str(exc), "invalid_request_error")
        finally:
            provider._end()

    def _read_form(self) -> _JSON:
        """A multipart upload (transcriptions) as ``{"fields": {...}, "files": {name: [filename, size]}}``; the
        bytes are kept for the answer only, never in the recorded request."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            fields, files = apis.parse_multipart(self.headers.get("Content-Type") or "", raw)
        except apis.RequestError as exc:
            raise _HTTPError(400, str(exc)) from exc
        self._upload = files
        return {"fields": fields, "files": {k: [name, len(data)] for k, (name, data) in files.items()}}

    def _other_api(self, endpoint: str, body: _JSON) -> None:
        """Transcriptions, rerank, the Responses API and Anthropic messages (see :mod:`.provider_apis`)."""
        salt = self.server.provider.salt
        if endpoint == "transcriptions":
            payload, content_type = apis.transcription(body["fields"], self._upload, salt)
            if content_type == "text/plain":
                self._send_text(payload)
            else:
                self._send_json(200, payload)
        elif endpoint == "rerank":
            self._send_json(200, apis.rerank(body, salt))
        elif endpoint == "responses":
            if body.get("stream"):
                self._stream_named(apis.responses_stream_events(body, salt))
            else:
                self._send_json(200, apis.responses_object(body, salt))
        elif body.get("stream"):
            self._stream_named(apis.anthropic_stream_events(body, salt))
        else:
            self._send_json(200, apis.anthropic_message(body, salt))

    def _send_text(self, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chat(self, body: _JSON) -> None:
        provider = self.server.provider
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _HTTPError(400, "'messages' must be a non-empty list")
        choices = provider._chat_choices(body)
        usage = provider._usage(_messages_tokens(messages), choices)
        response_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = str(body.get("model") or "gpt-4o-mini")
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": response_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_standin",
                    "choices": [
                        {"index": i, "message": message, "logprobs": None, "finish_reason": finish}
                        for i, (message, finish) in enumerate(choices)
                    ],
                    "usage": usage,
                },
            )
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))
        self._stream(_chat_stream_events(response_id, created, model, choices, usage if include_usage else None))

    def _completions(self, body: _JSON) -> None:
        provider = self.server.provider
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else [prompt]
        n = _int_param(body, "n", 1)
        texts: list[str] = []
        for p in prompts:
            text = _message_text(p) if not isinstance(p, str) else p
            seed = _digest("completion", text, provider.salt)
            for i in range(n):
                suffix = f" (choice {i})" if n > 1 else ""
                texts.append(f" Completion {seed[:8]}{suffix}: {_snippet(text, 40)}")
        prompt_tokens = sum(_rough_tokens(p if isinstance(p, str) else _canonical(p)) for p in prompts)
        completion_tokens = sum(_rough_tokens(t) for t in texts)
        usage = provider._usage_numbers(prompt_tokens, completion_tokens)
        response_id = "cmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = str(body.get("model") or "gpt-3.5-turbo-instruct")
        if not body.get("stream"):
            self._send_json(
                200,
                {
                    "id": response_id,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"text": t, "index": i, "logprobs": None, "finish_reason": "stop"} for i, t in enumerate(texts)
                    ],
                    "usage": usage,
                },
            )
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, Mapping) and bool(options.get("include_usage"))

        def events() -> Iterator[Any]:
            base = {"id": response_id, "object": "text_completion", "created": created, "model": model}
            for i, text in enumerate(texts):
                for piece in _pieces(text):
                    yield {**base, "choices": [{"text": piece, "index": i, "logprobs": None, "finish_reason": None}]}
                yield {**base, "choices": [{"text": "", "index": i, "logprobs": None, "finish_reason": "stop"}]}
            if include_usage:
                yield {**base, "choices": [], "usage": usage}
            yield "[DONE]"

        self._stream(events())


#: POST paths (after the ``/v1`` prefix) and the endpoint names they are counted under.
_ENDPOINTS = {
    "/chat/completions": "chat",
    "/completions": "completions",
    "/embeddings": "embeddings",
    "/audio/transcriptions": "transcriptions",
    "/rerank": "rerank",
    "/v2/rerank": "rerank",  # Cohere's v2 client
    "/responses": "responses",
    "/messages": "messages",
}


def _int_param(body: Mapping[str, Any], name: str, default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value > 128:
        raise _HTTPError(400, f"'{name}' must be an integer between 1 and 128")
    return value


def _pieces(text: str, size: int = 3) -> list[str]:
    """Split text into a few stream deltas of about ``size`` words each (whitespace kept)."""
    words = re.findall(r"\S+\s*|\s+", text)
    if not words:
        return [text] if text else []
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)]


def _chat_stream_events(
    response_id: str,
    created: int,
    model: str,
    choices: list[tuple[_JSON, str]],
    usage: _JSON | None,
) -> Iterator[Any]:
    base = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_standin",
    }

    def chunk(index: int, delta: _JSON, finish: str | None = None) -> _JSON:
        return {**base, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

    for index, (message, finish) in enumerate(choices):
        yield chunk(index, {"role": "assistant", "content": ""})
        for position, call in enumerate(message.get("tool_calls") or []):
            function = call["function"]
            yield chunk(
                index,
                {
                    "tool_calls": [
                        {
                            "index": position,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                },
            )
            arguments = function["arguments"]
            step = max(1, math.ceil(len(arguments) / 3))
            for start in range(0, len(arguments), step):
                yield chunk(
                    index,
                    {"tool_calls": [{"index": position, "function": {"arguments": arguments[start : start + step]}}]},
                )
        for piece in _pieces(message.get("content") or ""):
            yield chunk(index, {"content": piece})
        yield chunk(index, {}, finish)
    if usage is not None:
        yield {**base, "choices": [], "usage": usage}
    yield "[DONE]"


class StandInProvider:
    """A local OpenAI-compatible HTTP server with deterministic answers (see the module docstring).

    Args:
        port: TCP port on ``host``; 0 picks a free one.
        host: bind address; loopback by default so nothing outside the machine can reach it.
        latency: seconds each API request sleeps before answering (simulates a slow model).
        chunk_delay: seconds between streamed chunks.
        prompt_tokens / completion_tokens: fixed usage numbers instead of the rough count.
        embedding_dim: length of embedding vectors when the request gives no ``dimensions``.
        salt: changes every answer (two providers with different salts answer differently, like two model
            versions would).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        embedding_dim: int = 16,
        salt: str = "",
    ) -> None:
        if latency < 0 or chunk_delay < 0:
            raise ValueError("latency and chunk_delay must be >= 0 seconds")
        if embedding_dim < 1:
            raise ValueError("embedding_dim must be >= 1")
        self.host = host
        self._requested_port = port
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.embedding_dim = embedding_dim
        self.salt = salt
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._request_count = 0
        self._endpoint_counts: dict[str, int] = {}
        self._requests: list[tuple[str, _JSON]] = []
        self._failures: list[tuple[int, str]] = []
        self._failed = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._changed = threading.Condition(self._lock)
        #: the switchable failure mode: (mode, status, retry_after_ms) or None when healthy.
        self._mode: tuple[str, int, int | None] | None = None
        self._refusing = False
        self._hang_s = 30.0
        self._recovered = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> StandInProvider:
        """Bind and serve in a daemon thread. Restarting after ``stop()`` reuses the same port."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.provider = self
        self._requested_port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="StandInProvider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open keep-alive connections (clients then reconnect and fail fast)."""
        self._recovered.set()  # hanging handlers end now
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> StandInProvider:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        """The bound port (the requested one before ``start()``)."""
        return self._requested_port

    @property
    def url(self) -> str:
        """Root URL without the ``/v1`` suffix."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The ``api_base`` to give LiteLLM / DSPy / the OpenAI SDK: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    # --- instrumentation -------------------------------------------------------------------------------
    @property
    def request_count(self) -> int:
        """API requests received (chat + completions + embeddings), injected failures included."""
        with self._lock:
            return self._request_count

    @property
    def endpoint_counts(self) -> dict[str, int]:
        """Requests per endpoint: keys ``"chat"``, ``"completions"``, ``"embeddings"``, ``"transcriptions"``,
        ``"rerank"``, ``"responses"``, ``"messages"`` (absent = 0)."""
        with self._lock:
            return dict(self._endpoint_counts)

    def count(self, endpoint: str) -> int:
        """Requests received on one endpoint (a key of :attr:`endpoint_counts`)."""
        with self._lock:
            return self._endpoint_counts.get(endpoint, 0)

    @property
    def requests(self) -> list[_JSON]:
        """The parsed JSON bodies received, oldest first (headers, and so API keys, are never kept)."""
        with self._lock:
            return [body for _, body in self._requests]

    def requests_for(self, endpoint: str) -> list[_JSON]:
        with self._lock:
            return [body for name, body in self._requests if name == endpoint]

    @property
    def last_request(self) -> _JSON | None:
        with self._lock:
            return self._requests[-1][1] if self._requests else None

    @property
    def failures_served(self) -> int:
        """How many injected failures were answered."""
        with self._lock:
            return self._failed

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Highest number of API requests being served at once since the last ``reset()``."""
        with self._lock:
            return self._max_in_flight

    def fail_next(self, n: int = 1, status: int = 500, message: str | None = None) -> None:
        """Answer the next ``n`` API requests with an OpenAI-style error of HTTP ``status``.

        Clients retry 429/5xx by default (the OpenAI SDK twice): pass ``num_retries=0`` / ``max_retries=0``
        when a test counts requests.
        """
        if n < 0 or not 400 <= status <= 599:
            raise ValueError("fail_next needs n >= 0 and an HTTP error status (400-599)")
        text = message or f"stand-in provider: injected error {status}"
        with self._lock:
            self._failures.extend([(status, text)] * n)

    #: What :meth:`set_failure` can switch on.
    FAILURE_MODES = ("status", "hang", "refuse", "midstream")

    def set_failure(
        self, mode: str, *, status: int = 500, retry_after_ms: int | None = None, hang_s: float = 30.0
    ) -> None:
        """Fail every API request until :meth:`recover` (unlike :meth:`fail_next`, which fails a counted few).

        ``mode``: ``"status"`` answers HTTP ``status`` (500, 429, 503, ...) with an OpenAI-style error body, and a
        ``retry-after-ms`` header when ``retry_after_ms`` is given (the OpenAI SDK honours it, so tests can keep
        its retries fast and deterministic); ``"hang"`` accepts the request and never answers (until
        :meth:`recover` or ``hang_s``), for client timeouts; ``"refuse"`` stops listening on the port (connection
        refused) and keeps the port for :meth:`recover`; ``"midstream"`` starts a 200 answer and cuts the
        connection after the first chunk (a stream) or half the body. Requests are counted in every mode but
        ``"refuse"`` (nothing reaches the server). Also reachable over HTTP: ``POST /control/failure``.
        """
        if mode not in self.FAILURE_MODES:
            raise ValueError(f"failure mode must be one of {', '.join(self.FAILURE_MODES)}, not {mode!r}")
        if mode == "status" and not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        self.recover()
        self._recovered.clear()
        self._hang_s = hang_s
        if mode == "refuse":
            self._refusing = True
            self.stop()
            return
        self._mode = (mode, status, int(retry_after_ms) if retry_after_ms is not None else None)

    def recover(self) -> None:
        """Answer normally again (hanging requests are released; a refusing provider listens again)."""
        self._mode = None
        self._recovered.set()
        if self._refusing:
            self._refusing = False
            self.start()

    @property
    def failure_mode(self) -> str | None:
        """The current failure mode, or None when healthy."""
        if self._refusing:
            return "refuse"
        return self._mode[0] if self._mode else None

    def reset(self) -> None:
        """Forget counters, recorded requests and pending injected failures."""
        with self._lock:
            self._request_count = 0
            self._endpoint_counts.clear()
            self._requests.clear()
            self._failures.clear()
            self._failed = 0
            self._max_in_flight = self._in_flight

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` API requests arrived (True) or ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._request_count < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    # --- called by the handler -------------------------------------------------------------------------
    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _begin(self, endpoint: str, body: _JSON) -> tuple[int, str] | None:
        with self._changed:
            self._request_count += 1
            self._endpoint_counts[endpoint] = self._endpoint_counts.get(endpoint, 0) + 1
            self._requests.append((endpoint, body))
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._changed.notify_all()
            if self._failures:
                self._failed += 1
                return self._failures.pop(0)
            return None

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _usage_numbers(self, prompt_tokens: int, completion_tokens: int) -> _JSON:
        prompt = self.prompt_tokens if self.prompt_tokens is not None else prompt_tokens
        completion = self.completion_tokens if self.completion_tokens is not None else completion_tokens
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _usage(self, prompt_tokens: int, choices: list[tuple[_JSON, str]]) -> _JSON:
        completion = 0
        for message, _ in choices:
            completion += _rough_tokens(message.get("content") or "")
            for call in message.get("tool_calls") or []:
                completion += _rough_tokens(call["function"]["arguments"]) + 3
        usage = self._usage_numbers(prompt_tokens, completion)
        usage["prompt_tokens_details"] = {"cached_tokens": 0, "audio_tokens": 0}
        usage["completion_tokens_details"] = {"reasoning_tokens": 0, "audio_tokens": 0}
        return usage

    def _chat_choices(self, body: _JSON) -> list[tuple[_JSON, str]]:
        """``(message, finish_reason)`` for each of the ``n`` choices."""
        messages: list[Any] = body["messages"]
        n = _int_param(body, "n", 1)
        response_format = body.get("response_format")
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        seed = _digest("chat", messages, tools, response_format, self.salt)
        tool = self._tool_to_call(body, messages, tools)
        out: list[tuple[_JSON, str]] = []
        for i in range(n):
            choice_seed = seed if i == 0 else _digest(seed, i)
            if tool is not None:
                function = tool.get("function", {}) if isinstance(tool.get("function"), Mapping) else {}
                arguments = _example_from_schema(function.get("parameters") or {}, choice_seed)
                message: _JSON = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_" + choice_seed[:24],
                            "type": "function",
                            "function": {
                                "name": str(function.get("name", "tool")),
                                "arguments": json.dumps(arguments if isinstance(arguments, dict) else {}),
                            },
                        }
                    ],
                }
                out.append((message, "tool_calls"))
                continue
            content = self._chat_content(messages, response_format, choice_seed, i if n > 1 else None)
            out.append(({"role": "assistant", "content": content, "refusal": None}, "stop"))
        return out

    @staticmethod
    def _tool_to_call(body: _JSON, messages: list[Any], tools: list[Any] | None) -> Mapping[str, Any] | None:
        if not tools:
            return None
        choice = body.get("tool_choice")
        if choice == "none":
            return None
        if isinstance(choice, Mapping):
            wanted = choice.get("function", {}).get("name") if isinstance(choice.get("function"), Mapping) else None
            for tool in tools:
                function = tool.get("function") if isinstance(tool, Mapping) else None
                if isinstance(function, Mapping) and function.get("name") == wanted:
                    return cast("Mapping[str, Any]", tool)
        first = tools[0] if isinstance(tools[0], Mapping) else None
        if choice == "required":
            return first
        last = messages[-1] if messages else None
        marked = (
            isinstance(last, Mapping)
            and last.get("role") == "user"
            and TOOL_CALL_MARKER in _message_text(last.get("content"))
        )
        return first if marked else None

    def _chat_content(self, messages: list[Any], response_format: Any, seed: str, choice_index: int | None) -> str:
        fields = _dspy_output_fields(messages)
        inputs = _dspy_inputs(messages) if fields else []
        last_user = next(
            (
                _message_text(m.get("content"))
                for m in reversed(messages)
                if isinstance(m, Mapping) and m.get("role") == "user"
            ),
            "",
        )
        topic = _snippet(inputs[0] if inputs else last_user, 40)
        suffix = f" (choice {choice_index})" if choice_index is not None else ""
        json_mode = isinstance(response_format, Mapping) and response_format.get("type") in (
            "json_object",
            "json_schema",
        )
        if json_mode:
            assert isinstance(response_format, Mapping)
            json_schema = response_format.get("json_schema")
            if isinstance(json_schema, Mapping) and isinstance(json_schema.get("schema"), Mapping):
                return json.dumps(_example_from_schema(json_schema["schema"], seed))
            if fields:
                return json.dumps(
                    {f.name: _field_value(f, _digest(seed, f.name), topic + suffix) for f in fields}, indent=2
                )
            return json.dumps({"answer": f"Answer {seed[:8]}{suffix}: {topic}"})
        if fields:
            sections = [
                f"[[ ## {f.name} ## ]]\n{_format_chat_value(_field_value(f, _digest(seed, f.name), topic + suffix))}"
                for f in fields
            ]
            return "\n\n".join([*sections, "[[ ## completed ## ]]"])
        return f"Answer {seed[:8]}{suffix}: {topic}"

    def _embeddings(self, body: _JSON) -> _JSON:
        raw = body.get("input")
        if isinstance(raw, str):
            inputs: list[Any] = [raw]
        elif isinstance(raw, list) and raw:
            # A list of strings, one list of token ids, or a list of token-id lists.
            inputs = [raw] if all(isinstance(x, int) for x in raw) else list(raw)
        else:
            raise _HTTPError(400, "'input' must be a non-empty string or list")
        dims = body.get("dimensions")
        dim = dims if isinstance(dims, int) and not isinstance(dims, bool) and dims > 0 else self.embedding_dim
        as_base64 = body.get("encoding_format") == "base64"
        data: list[_JSON] = []
        tokens = 0
        for index, item in enumerate(inputs):
            text = item if isinstance(item, str) else _canonical(item)
            tokens += len(item) if isinstance(item, list) else _rough_tokens(text)
            if str(body.get("model") or "").startswith(BAG_OF_WORDS_MODEL):
                vector = bag_of_words_vector(text, dims if isinstance(dims, int) and dims > 0 else 256)
            else:
                vector = _embedding_vector(text, dim, self.salt)
            embedding: Any = base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii") if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        prompt = self.prompt_tokens if self.prompt_tokens is not None else tokens
        return {
            "object": "list",
            "data": data,
            "model": str(body.get("model") or "text-embedding-3-small"),
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        }


#: Embedding model name (``openai/bag-of-words`` through LiteLLM) answered with :func:`bag_of_words_vector`.
BAG_OF_WORDS_MODEL = "bag-of-words"
_BOW_TOKEN_RE = re.compile(r"[a-z0-9]+")
_BOW_STOPWORDS = frozenset("a an the is are was were be do does did i me my you your to of in on for and or it".split())  # noqa: SIM905


def bag_of_words_vector(text: str, dim: int = 256) -> list[float]:
    """A unit-length bag-of-words vector: lower-cased words (minus a few stopwords), each hashed to a signed
    bucket. Texts sharing words are close, whatever their meaning: "enable 2FA" sits next to "disable 2FA",
    which is what the semantic tier's verifier must survive. Deterministic across processes and machines."""
    values = [0.0] * dim
    for word in _BOW_TOKEN_RE.findall(text.lower()):
        if word in _BOW_STOPWORDS:
            continue
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        bucket = int.from_bytes(digest[:4], "little") % dim
        values[bucket] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in values))
    if norm == 0.0:
        values[0], norm = 1.0, 1.0
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def _embedding_vector(text: str, dim: int, salt: str = "") -> list[float]:
    """A unit-length vector from the text's hash (same text, same vector; float32-exact values)."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(f"{salt}\x00{counter}\x00{text}".encode()).digest()
        values.extend((b / 127.5) - 1.0 for b in block)
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    # Round-trip through float32 so the JSON and base64 encodings carry the same numbers.
    return [struct.unpack("<f", struct.pack("<f", v / norm))[0] for v in values]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stand-in provider until interrupted; the first line printed is its base URL."""
    parser = argparse.ArgumentParser(
        prog="python -m dspy_tiered_cache.testing.provider",
        description="Local OpenAI-compatible stand-in provider (deterministic answers; no model, no key).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument("--salt", default="")
    args = parser.parse_args(argv)
    provider = StandInProvider(
        host=args.host,
        port=args.port,
        latency=args.latency,
        chunk_delay=args.chunk_delay,
        embedding_dim=args.embedding_dim,
        salt=args.salt,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with provider:
        print(provider.base_url, flush=True)
        while not stop.wait(0.5):
            pass
        print(f"stand-in provider served {provider.request_count} requests", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
