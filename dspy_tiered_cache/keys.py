"""Cache keys: the canonical form of a request, hashed, under a namespace and its generation.

Two requests that mean the same thing must share a key (``temperature=1`` and ``1.0``, reordered dict keys, a
different API key or endpoint timeout), and any change in meaning must change it. Secrets never enter the
canonical form, so neither keys nor anything derived from them can leak a credential.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import inspect
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from dspy_tiered_cache.errors import CacheError

#: Options that change how a request travels, not what it asks; never part of a key.
TRANSPORT_KEYS: frozenset[str] = frozenset(
    {
        "api_key",
        "api_base",
        "base_url",
        "api_version",
        "organization",
        "timeout",
        "request_timeout",
        "num_retries",
        "max_retries",
        "metadata",
        "extra_headers",
        "headers",
        "caching",
        "cache",
        "litellm_call_id",
        "litellm_logging_obj",
        "litellm_trace_id",
        "proxy_server_request",
        "mock_response",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "vertex_credentials",
        "azure_ad_token",
        "client",
        "http_client",
    }
)


class UncacheableRequest(CacheError, ValueError):
    """The request holds a value with no stable canonical form; the caller should bypass the cache."""


def normalize(value: Any, path: str = "request") -> Any:
    """Reduce a request to plain JSON data whose equality is the request's meaning."""
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else {"__bigint__": str(value)}
    if isinstance(value, float):
        return _normalize_float(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                k = str(k)
            out[k] = normalize(v, f"{path}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [normalize(v, f"{path}[]") for v in value]
        return sorted(items, key=lambda x: orjson.dumps(x, option=orjson.OPT_SORT_KEYS))
    if isinstance(value, bytes):
        return {"__bytes__": hashlib.blake2b(value, digest_size=16).hexdigest()}
    if isinstance(value, enum.Enum):
        return normalize(value.value, path)
    if inspect.isclass(value):
        schema = getattr(value, "model_json_schema", None)
        if callable(schema):  # a pydantic model used as response_format: its schema is what the model sees
            return {"__schema__": normalize(schema(), path)}
        raise UncacheableRequest(f"{path} is a class ({value.__qualname__}) with no JSON schema")
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return normalize(dump(mode="json"), path)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return normalize(dataclasses.asdict(value), path)
    raise UncacheableRequest(
        f"{path} holds a {type(value).__name__}, which has no canonical JSON form; "
        "pass plain data (str, numbers, lists, dicts, pydantic models) or bypass the cache for this call"
    )


def _normalize_float(value: float) -> Any:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) <= 2**53:  # 1.0 == 1 for every sampling parameter; -0.0 becomes 0
        return int(value)
    # A plain float (subclasses such as numpy.float64 lose their type); repr round-trips every finite float
    # exactly, so this is the number the caller gave, serialized by orjson in its shortest form.
    return float(value)


def _default(value: Any) -> Any:
    """orjson's hook for what it cannot encode natively; mirrors :func:`normalize` for those types."""
    if isinstance(value, (set, frozenset)):
        return normalize(value)
    if isinstance(value, bytes):
        return {"__bytes__": hashlib.blake2b(value, digest_size=16).hexdigest()}
    if inspect.isclass(value):
        schema = getattr(value, "model_json_schema", None)
        if callable(schema):
            return {"__schema__": normalize(schema())}
        raise TypeError(value.__qualname__)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(type(value).__name__)


_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS


def canonical_request(request: Mapping[str, Any], ignore: Iterable[str] = ()) -> bytes:
    """Canonical JSON bytes of the request minus transport options and ``ignore``.

    The fast path lets orjson walk the request (a few microseconds for a 2 KB prompt instead of tens in
    Python), normalizing only top-level floats, where sampling parameters live. Anything orjson refuses takes
    the full Python walk, which either normalizes it or names the offending field.
    """
    dropped = TRANSPORT_KEYS.union(ignore) if ignore else TRANSPORT_KEYS
    body: dict[str, Any] = {}
    for k, v in request.items():
        if v is None or k in dropped:
            continue
        body[k] = _normalize_float(v) if type(v) is float else v
    try:
        return orjson.dumps(body, default=_default, option=_FAST_OPTIONS)
    except TypeError:
        pass
    try:
        return orjson.dumps(normalize(body), option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise UncacheableRequest(f"request cannot be encoded as JSON: {exc}") from None


def request_digest(canonical: bytes, secret: bytes | None = None) -> str:
    """SHA-256 of the canonical form (an HMAC under a secret, so entries cannot be forged by guessing a prompt).

    SHA-256 rather than a faster non-cryptographic hash: anyone who can send prompts could otherwise craft a
    collision with someone else's prompt and poison its answer. It is the fastest cryptographic hash here.
    """
    if secret:
        return hmac.digest(secret, canonical, "sha256")[:20].hex()
    return hashlib.sha256(canonical).digest()[:20].hex()


def entry_key(prefix: str, namespace: str, generation: int, digest: str) -> str:
    """The storage key. The generation makes invalidating a namespace one INCR, at any size."""
    return f"{prefix}:e:{namespace}:{generation}:{digest}"


def request_key(key: str) -> str:
    """Where the canonical request of the entry under ``key`` is kept (``record_requests``): beside it, outside
    the ``prefix:e:`` space so entry counts and ``clear`` patterns are unchanged."""
    return key.replace(":e:", ":q:", 1)


def lease_key(key: str) -> str:
    """The cross-process single-flight lease of an entry key: same namespace and digest, another keyspace."""
    return key.replace(":e:", ":lock:", 1)


def namespace_prefix(prefix: str, namespace: str) -> str:
    """What every entry key of a namespace starts with, whatever its generation."""
    return f"{prefix}:e:{namespace}:"


def generation_key(prefix: str, namespace: str) -> str:
    return f"{prefix}:gen:{namespace}"


def entry_pattern(prefix: str) -> str:
    """SCAN pattern of every entry this prefix owns (used only by ``clear``)."""
    return f"{prefix}:e:*"
