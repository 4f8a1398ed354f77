"""Turn what LiteLLM and DSPy return into plain JSON data and back, without pickle.

The shared tiers (Redis, the SQLite file) may be written by anyone who can reach them, so nothing read from them
may decide which code runs. Values therefore cross as plain JSON data. The few non-JSON things that LM calls
return are written as small tagged objects, ``{"__dtc_type__": <tag>, ...}``, and rebuilt on the way back only
from a fixed table of tags known to this module (the WHITELIST): stored data never names a class to import.

This module is the one place that knows these conversions; both front doors (LiteLLM's ``TieredCache`` and
DSPy's ``CachedLM``) use it.

Shapes handled:

* JSON scalars, lists, and dicts with ``str`` keys pass through untouched (the common case costs one walk on
  write and nothing on read, see :func:`dump_value`).
* ``tuple``, ``bytes``, non-finite floats, integers beyond 64 bits, dicts with non-``str`` keys and dicts that
  happen to contain the tag key are tagged so they come back equal and of the same type.
* LiteLLM's pydantic responses (``ModelResponse``, ``EmbeddingResponse``, ``TextCompletionResponse``, ...) are
  stored as ``model_dump(mode="json")`` plus a few whitelisted ``_hidden_params`` (``response_cost`` keeps
  DSPy's history cost on a hit) and rebuilt with their constructor.
* numpy arrays of any dtype and shape (and numpy scalars) as ``.npy`` bytes read back with
  ``allow_pickle=False``; ``dtype=object`` arrays element by element through this same encoding.
* ``set``/``frozenset``, ``complex``, ``datetime``/``date``/``time``/``timedelta``, ``Decimal``, ``UUID`` and
  ``pathlib`` paths, each as a fixed tag.
* dataclasses, pydantic models (other than LiteLLM's), enum members and namedtuples come back as the same class
  with the same state, restored the way pickle restores them (no ``__init__``, no validator, no user code runs)
  — but the class is looked up by name only among the classes *this process* has stored (or allowed with
  :func:`register_type`); stored data can never make us import a module or reach a class the program did not
  hand us itself. A value of such a class written by another process is a miss (:class:`UnknownType`) until
  this process stores or registers the class once.
* Pydantic models registered with :func:`register_model` keep their JSON-dump form (``model_validate`` on read).

Anything else raises :class:`UnsupportedValue`; a door then skips caching that value (the call still succeeds).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import decimal
import functools
import importlib
import math
import pathlib
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from dspy_tiered_cache.integrations._values_kinds import (
    _STATE_ENCODERS,
    KIND_DECODERS,
    TYPE_TAG,
    UnknownType,
    UnsupportedValue,
    _b64decode,
    _encode_numpy,
    _kind_of_class,
    register_type,
    remember,
)
from dspy_tiered_cache.integrations._values_kinds import _known as _known  # tests forget a class here

__all__ = [
    "TYPE_TAG",
    "VALUE_FORMAT",
    "UnknownType",
    "UnsupportedValue",
    "dump_value",
    "from_plain",
    "is_envelope",
    "load_value",
    "register_model",
    "register_type",
    "to_plain",
]

#: Marks the top-level object written by :func:`dump_value`; its value is the format version.
ENVELOPE_KEY = "__dtc_value__"
VALUE_FORMAT = 1

_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1

#: ``_hidden_params`` entries of a LiteLLM response that are kept: no endpoint, header or call id (those can
#: carry account details), only what describes the answer and its price.
HIDDEN_PARAMS_KEPT: frozenset[str] = frozenset(
    {"response_cost", "custom_llm_provider", "model_id", "litellm_model_name", "provider_response_model"}
)

#: The whitelist: tag -> (module, attribute) of the LiteLLM classes a stored value may be rebuilt as.
#: Imported lazily (importing litellm costs seconds) and only from this fixed table.
_LITELLM_TYPES: dict[str, tuple[str, str]] = {
    "litellm.ModelResponse": ("litellm.types.utils", "ModelResponse"),
    "litellm.ModelResponseStream": ("litellm.types.utils", "ModelResponseStream"),
    "litellm.EmbeddingResponse": ("litellm.types.utils", "EmbeddingResponse"),
    "litellm.TextCompletionResponse": ("litellm.types.utils", "TextCompletionResponse"),
    "litellm.ImageResponse": ("litellm.types.utils", "ImageResponse"),
    "litellm.TranscriptionResponse": ("litellm.types.utils", "TranscriptionResponse"),
    "litellm.ResponsesAPIResponse": ("litellm.types.llms.openai", "ResponsesAPIResponse"),
    "litellm.RerankResponse": ("litellm.types.rerank", "RerankResponse"),
    "litellm.Usage": ("litellm.types.utils", "Usage"),
}

_registry_lock = threading.Lock()
#: tag -> class, for classes resolved from the LiteLLM table or registered in code.
_classes: dict[str, type[Any]] = {}
#: class -> tag (exact classes only: a subclass is not silently stored as its base).
_tags: dict[type[Any], str] = {}
_litellm_loaded = False


def register_model(cls: type[Any], tag: str | None = None) -> None:
    """Allow a pydantic model class of your own to be cached (stored as its JSON dump, rebuilt with
    ``cls.model_validate``). Registration happens in code, never from stored data."""
    if not callable(getattr(cls, "model_validate", None)) or not callable(getattr(cls, "model_dump", None)):
        raise TypeError(f"{cls!r} is not a pydantic model class")
    name = tag or f"{cls.__module__}.{cls.__qualname__}"
    if name in _LITELLM_TYPES:
        raise ValueError(f"tag {name!r} is reserved for LiteLLM's own types")
    with _registry_lock:
        _classes[name] = cls
        _tags[cls] = name


def _load_litellm_types() -> None:
    """Resolve the LiteLLM whitelist once litellm is importable (called only when a LiteLLM type is met)."""
    global _litellm_loaded
    if _litellm_loaded:
        return
    found: dict[str, type[Any]] = {}
    for tag, (module_name, attr) in _LITELLM_TYPES.items():
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError):  # an older LiteLLM without this type
            continue
        found[tag] = cls
    with _registry_lock:
        for tag, cls in found.items():
            _classes.setdefault(tag, cls)
            _tags.setdefault(cls, tag)
        _litellm_loaded = True


def _tag_of(value: Any) -> str | None:
    cls = type(value)
    tag = _tags.get(cls)
    if tag is None and not _litellm_loaded and cls.__module__.startswith("litellm."):
        _load_litellm_types()
        tag = _tags.get(cls)
    return tag


# ----------------------------------------------------------------------------------------------- encoding


class _Encoder:
    """One walk over the value; ``tagged`` records whether any tag was written (then reads must walk too)."""

    __slots__ = ("tagged",)

    def __init__(self) -> None:
        self.tagged = False

    def encode(self, value: Any) -> Any:
        # Exact-type checks first: they are the overwhelming majority and the cheapest test.
        cls = type(value)
        if cls is str or cls is bool or value is None:
            return value
        if cls is int:
            if _INT64_MIN <= value <= _UINT64_MAX:
                return value
            self.tagged = True
            return {TYPE_TAG: "int", "data": str(value)}
        if cls is float:
            if math.isfinite(value):
                return value
            self.tagged = True
            return {TYPE_TAG: "float", "data": repr(value)}
        if cls is list:
            return [self.encode(item) for item in value]
        if cls is dict:
            return self._mapping(value)
        return self._other(value)

    def _mapping(self, value: Mapping[Any, Any]) -> Any:
        if all(type(k) is str for k in value):
            body = {k: self.encode(v) for k, v in value.items()}
            if TYPE_TAG in body:
                self.tagged = True
                return {TYPE_TAG: "dict", "data": body}
            return body
        self.tagged = True
        return {TYPE_TAG: "map", "data": [[self.encode(k), self.encode(v)] for k, v in value.items()]}

    def _other(self, value: Any) -> Any:
        tag = _tag_of(value)
        if tag is not None:
            self.tagged = True
            return _dump_model(value, tag)
        special = _encode_special(self, value)
        if special is not None:
            self.tagged = True
            return special
        if isinstance(value, bool):  # bool subclasses do not exist, but keep the order safe
            return bool(value)
        if isinstance(value, str):  # str subclasses and str enums: their text is the value
            return str(value)
        if isinstance(value, int):  # int subclasses and int enums
            return self.encode(int(value))
        if isinstance(value, float):
            return self.encode(float(value))
        if isinstance(value, tuple):
            self.tagged = True
            return {TYPE_TAG: "tuple", "data": [self.encode(item) for item in value]}
        if isinstance(value, (bytes, bytearray, memoryview)):
            self.tagged = True
            return {TYPE_TAG: "bytes", "data": base64.b64encode(bytes(value)).decode("ascii")}
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if isinstance(value, Mapping):  # dict subclasses such as DSPy's AttributeDict come back as dicts
            return self._mapping(value)
        raise UnsupportedValue(
            f"a {type(value).__module__}.{type(value).__qualname__} has no whitelisted JSON form; "
            "register pydantic models with dspy_tiered_cache.integrations._values.register_model"
        )


def _encode_special(enc: _Encoder, value: Any) -> dict[str, Any] | None:
    """The tagged form of a numpy value, a fixed stdlib type or a class kind; None for anything else."""
    cls = type(value)
    if cls.__module__ == "numpy":
        return _encode_numpy(enc, value)
    fixed = _FIXED_ENCODERS.get(cls)
    if fixed is not None:
        return {TYPE_TAG: fixed[0], "data": fixed[1](enc, value)}
    kind = _kind_of_class(cls)
    if kind is None:
        return None
    name = remember(cls)
    return {TYPE_TAG: kind, "cls": name, "data": _STATE_ENCODERS[kind](enc, value)}


_PATH_CLASSES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        pathlib.PurePath,
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.Path,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    )
}

_FIXED_ENCODERS: dict[type[Any], tuple[str, Callable[[_Encoder, Any], Any]]] = {
    set: ("set", lambda enc, v: [enc.encode(item) for item in v]),
    frozenset: ("frozenset", lambda enc, v: [enc.encode(item) for item in v]),
    complex: ("complex", lambda enc, v: [repr(v.real), repr(v.imag)]),
    dt.datetime: ("datetime", lambda enc, v: v.isoformat()),
    dt.date: ("date", lambda enc, v: v.isoformat()),
    dt.time: ("time", lambda enc, v: v.isoformat()),
    dt.timedelta: ("timedelta", lambda enc, v: [v.days, v.seconds, v.microseconds]),
    decimal.Decimal: ("decimal", lambda enc, v: str(v)),
    uuid.UUID: ("uuid", lambda enc, v: str(v)),
    **{cls: ("path", lambda enc, v: [type(v).__name__, str(v)]) for cls in _PATH_CLASSES.values()},
}


def _dump_model(value: Any, tag: str) -> dict[str, Any]:
    try:
        data = value.model_dump(mode="json")
    except Exception as exc:  # a field pydantic cannot render as JSON
        raise UnsupportedValue(f"{tag} could not be dumped as JSON: {exc}") from None
    out: dict[str, Any] = {TYPE_TAG: tag, "data": data}
    hidden = getattr(value, "_hidden_params", None)
    if isinstance(hidden, Mapping):
        kept = {
            k: v
            for k, v in hidden.items()
            if k in HIDDEN_PARAMS_KEPT and (v is None or type(v) in (str, int, float, bool))
        }
        if kept:
            out["hidden"] = kept
    return out


def to_plain(value: Any) -> Any:
    """The tagged plain-JSON form of ``value`` (raises :class:`UnsupportedValue`)."""
    try:
        return _Encoder().encode(value)
    except RecursionError:
        raise UnsupportedValue("value is nested too deeply to store") from None


def dump_value(value: Any) -> dict[str, Any]:
    """Wrap ``value`` for storage: ``{"__dtc_value__": 1, "tagged": bool, "data": ...}``.

    ``tagged`` is false when no tag was needed, so :func:`load_value` can hand the data back without a
    second walk (the hot path of a memory hit).
    """
    encoder = _Encoder()
    try:
        data = encoder.encode(value)
    except RecursionError:
        raise UnsupportedValue("value is nested too deeply to store") from None
    return {ENVELOPE_KEY: VALUE_FORMAT, "tagged": encoder.tagged, "data": data}


# ----------------------------------------------------------------------------------------------- decoding


def _decode(data: Any) -> Any:
    cls = type(data)
    if cls is list:
        return [_decode(item) for item in data]
    if cls is not dict:
        return data
    tag = data.get(TYPE_TAG)
    if tag is None:
        return {k: _decode(v) for k, v in data.items()}
    decoder = _DECODERS.get(tag)
    if decoder is not None:
        return decoder(data)
    return _load_model(tag, data)


def _decode_dict(node: Mapping[str, Any]) -> Any:
    body = node["data"]
    if type(body) is not dict:
        raise ValueError("malformed tagged dict")
    return {k: _decode(v) for k, v in body.items()}


def _decode_map(node: Mapping[str, Any]) -> Any:
    items = node["data"]
    if type(items) is not list:
        raise ValueError("malformed tagged map")
    out: dict[Any, Any] = {}
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("malformed tagged map item")
        key = _decode(pair[0])
        try:
            out[key] = _decode(pair[1])
        except TypeError:  # an unhashable key can only come from forged data
            raise ValueError("unhashable key in tagged map") from None
    return out


def _decode_tuple(node: Mapping[str, Any]) -> Any:
    items = node["data"]
    if type(items) is not list:
        raise ValueError("malformed tagged tuple")
    return tuple(_decode(item) for item in items)


def _decode_bytes(node: Mapping[str, Any]) -> Any:
    text = node["data"]
    if type(text) is not str:
        raise ValueError("malformed tagged bytes")
    return _b64decode(text)


def _decode_float(node: Mapping[str, Any]) -> Any:
    text = node["data"]
    if text not in ("nan", "inf", "-inf"):
        raise ValueError("malformed tagged float")
    return float(text)


def _decode_int(node: Mapping[str, Any]) -> Any:
    text = node["data"]
    if type(text) is not str or len(text) > 4300:
        raise ValueError("malformed tagged int")
    return int(text)


def _items(node: Mapping[str, Any]) -> list[Any]:
    items = node["data"]
    if type(items) is not list:
        raise ValueError(f"malformed tagged {node[TYPE_TAG]}")
    return [_decode(item) for item in items]


def _text(node: Mapping[str, Any]) -> str:
    text = node["data"]
    if type(text) is not str or len(text) > 512:
        raise ValueError(f"malformed tagged {node[TYPE_TAG]}")
    return text


def _decode_complex(node: Mapping[str, Any]) -> Any:
    parts = node["data"]
    if type(parts) is not list or len(parts) != 2 or not all(type(x) is str and len(x) < 64 for x in parts):
        raise ValueError("malformed tagged complex")
    return complex(float(parts[0]), float(parts[1]))


def _decode_timedelta(node: Mapping[str, Any]) -> Any:
    parts = node["data"]
    if type(parts) is not list or len(parts) != 3 or not all(type(x) is int for x in parts):
        raise ValueError("malformed tagged timedelta")
    return dt.timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2])


def _decode_path(node: Mapping[str, Any]) -> Any:
    parts = node["data"]
    if type(parts) is not list or len(parts) != 2 or parts[0] not in _PATH_CLASSES or type(parts[1]) is not str:
        raise ValueError("malformed tagged path")
    return _PATH_CLASSES[parts[0]](parts[1])


def _kind(decoder: Callable[[Mapping[str, Any], Callable[[Any], Any]], Any], node: Mapping[str, Any]) -> Any:
    return decoder(node, _decode)


_DECODERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "dict": _decode_dict,
    "map": _decode_map,
    "tuple": _decode_tuple,
    "bytes": _decode_bytes,
    "float": _decode_float,
    "int": _decode_int,
    "set": lambda node: set(_items(node)),
    "frozenset": lambda node: frozenset(_items(node)),
    "complex": _decode_complex,
    "datetime": lambda node: dt.datetime.fromisoformat(_text(node)),
    "date": lambda node: dt.date.fromisoformat(_text(node)),
    "time": lambda node: dt.time.fromisoformat(_text(node)),
    "timedelta": _decode_timedelta,
    "decimal": lambda node: decimal.Decimal(_text(node)),
    "uuid": lambda node: uuid.UUID(_text(node)),
    "path": _decode_path,
    **{tag: functools.partial(_kind, decoder) for tag, decoder in KIND_DECODERS.items()},
}


def _load_model(tag: Any, node: Mapping[str, Any]) -> Any:
    if type(tag) is not str:
        raise ValueError("malformed type tag")
    cls = _classes.get(tag)
    if cls is None and tag in _LITELLM_TYPES:
        _load_litellm_types()
        cls = _classes.get(tag)
    if cls is None:
        raise ValueError(f"unknown type tag {tag[:80]!r}: not in the whitelist")
    data = node.get("data")
    if type(data) is not dict:
        raise ValueError(f"malformed {tag} payload")
    try:
        obj = cls(**data) if tag in _LITELLM_TYPES else cls.model_validate(data)
    except Exception as exc:
        raise ValueError(f"stored {tag} does not validate: {exc}") from None
    _restore_none_logprobs(obj, data)
    hidden = node.get("hidden")
    if isinstance(hidden, dict):
        params = getattr(obj, "_hidden_params", None)
        kept = {k: v for k, v in hidden.items() if k in HIDDEN_PARAMS_KEPT}
        if isinstance(params, dict):
            params.update(kept)
        else:
            with contextlib.suppress(Exception):  # no such private attribute: the cost is advisory only
                obj._hidden_params = kept
    return obj


def _restore_none_logprobs(obj: Any, data: Mapping[str, Any]) -> None:
    """LiteLLM 1.109+'s ``Choices.__init__`` deletes a None ``logprobs``, while a response parsed from the wire keeps
    it: put it back, so that ``choice.logprobs`` on a hit reads None like the original instead of raising."""
    stored, built = data.get("choices"), getattr(obj, "choices", None)
    if not isinstance(stored, list) or not isinstance(built, list):
        return
    for raw, choice in zip(stored, built, strict=False):
        if isinstance(raw, dict) and "logprobs" in raw and raw["logprobs"] is None and "logprobs" not in vars(choice):
            with contextlib.suppress(Exception):
                choice.logprobs = None


def from_plain(data: Any) -> Any:
    """Rebuild a value from :func:`to_plain` output. Raises ``ValueError`` on malformed or unknown data."""
    try:
        return _decode(data)
    except ValueError:
        raise
    except (KeyError, TypeError, AttributeError, RecursionError, decimal.InvalidOperation) as exc:
        raise ValueError(f"malformed stored value: {type(exc).__name__}") from None


def is_envelope(data: Any) -> bool:
    return type(data) is dict and ENVELOPE_KEY in data


def load_value(envelope: Any) -> Any:
    """Rebuild what :func:`dump_value` stored. ``envelope`` must be a fresh object (its parts are reused).

    Raises ``ValueError`` if it is not an envelope of a known format: the caller treats that as a miss.
    """
    if type(envelope) is not dict or envelope.get(ENVELOPE_KEY) != VALUE_FORMAT:
        raise ValueError("not a dspy_tiered_cache value envelope of a known format")
    data = envelope.get("data")
    if envelope.get("tagged") is False:
        return data
    return from_plain(data)
