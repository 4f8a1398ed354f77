"""The value kinds :mod:`._values` restores by class: numpy values and the classes a program hands us.

Split out of :mod:`._values` (which keeps the walk, the fixed tags and the LiteLLM whitelist) because these kinds
share one rule: a class is reached only if this process stored or registered it (:data:`_known`), never by a name
read from stored data, and numpy arrays cross as ``.npy`` bytes read with ``allow_pickle=False``. The decoders
take the walk's ``decode`` function, so this module does not import :mod:`._values` (imports point down).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import io
import math
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

TYPE_TAG = "__dtc_type__"

Decode = Callable[[Any], Any]


class Encodes(Protocol):
    """The walk's encoder, as the kinds' encoders see it."""

    def encode(self, value: Any) -> Any: ...


_known_lock = threading.Lock()


class UnsupportedValue(TypeError):
    """The value has no whitelisted plain-JSON form; the caller should not cache it."""


class UnknownType(ValueError):
    """A stored value names a class this process has not stored or registered: a miss, not corruption."""


#: Class kinds restored by name from :data:`_known` (tag -> how to recognise the class).
_CLASS_KINDS: dict[str, Callable[[type[Any]], bool]] = {}
#: "module.qualname" -> class, for the class kinds: every class this process encoded or registered.
_known: dict[str, type[Any]] = {}


def _class_name(cls: type[Any]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register_type(*classes: type[Any]) -> None:
    """Allow values of these dataclasses / pydantic models / enums / namedtuples to be read back before this
    process has stored one itself (a process that only reads what another one wrote). Code-side only."""
    for cls in classes:
        if not isinstance(cls, type) or _kind_of_class(cls) is None:
            raise TypeError(f"{cls!r} is not a dataclass, pydantic model, enum or namedtuple class")
        with _known_lock:
            _known[_class_name(cls)] = cls


def remember(cls: type[Any]) -> str:
    """The name values of ``cls`` are stored under; from now on they may be read back in this process."""
    name = _class_name(cls)
    if _known.get(name) is not cls:
        with _known_lock:
            _known[name] = cls  # the program handed us this class: values of it may be read back
    return name


def _kind_of_class(cls: type[Any]) -> str | None:
    if isinstance(cls, enum.EnumMeta):
        return "enum"
    if dataclasses.is_dataclass(cls):
        return "dataclass"
    if issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        return "namedtuple"
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and issubclass(cls, pydantic.BaseModel) and not cls.__module__.startswith("litellm."):
        return "pydantic"
    return None


def _encode_numpy(enc: Encodes, value: Any) -> dict[str, Any] | None:
    np = sys.modules["numpy"]
    if type(value) is np.ndarray:
        if value.dtype.hasobject:
            if value.dtype != np.dtype(object):
                raise UnsupportedValue("a structured numpy array with object fields has no JSON form")
            items = [enc.encode(item) for item in value.ravel(order="C").tolist()]
            return {TYPE_TAG: "numpy.object_array", "shape": list(value.shape), "data": items}
        return {TYPE_TAG: "numpy.ndarray", "data": _npy_bytes(np, value)}
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return {TYPE_TAG: "numpy.scalar", "data": _npy_bytes(np, np.asarray(value))}
    return None


def _npy_bytes(np: Any, array: Any) -> str:
    """The array in numpy's own ``.npy`` format (dtype, byte order, shape, memory order: an exact copy)."""
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _encode_dataclass(enc: Encodes, value: Any) -> Any:
    state: dict[str, Any] = {}
    for f in dataclasses.fields(value):
        try:
            state[f.name] = enc.encode(getattr(value, f.name))
        except AttributeError:  # an init=False field never set: restored as unset
            continue
    return state


def _encode_pydantic(enc: Encodes, value: Any) -> Any:
    # The four parts pydantic's own __getstate__ hands to pickle, minus pickle.
    return {
        "dict": enc.encode(dict(value.__dict__)),
        "extra": enc.encode(value.__pydantic_extra__),
        "fields_set": sorted(value.__pydantic_fields_set__),
        "private": enc.encode(value.__pydantic_private__),
    }


_STATE_ENCODERS: dict[str, Callable[[Encodes, Any], Any]] = {
    "enum": lambda enc, value: value.name,
    "dataclass": _encode_dataclass,
    "namedtuple": lambda enc, value: [enc.encode(item) for item in value],
    "pydantic": _encode_pydantic,
}


def _items(node: Mapping[str, Any], decode: Decode) -> list[Any]:
    items = node["data"]
    if type(items) is not list:
        raise ValueError(f"malformed tagged {node[TYPE_TAG]}")
    return [decode(item) for item in items]


def _b64decode(text: str) -> bytes:
    """Strict base64 (invalid characters are an error, not skipped); binascii's strict mode is ~20x faster than
    ``b64decode(validate=True)``'s regular expression on an embedding-sized array."""
    if sys.version_info >= (3, 11):
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    return base64.b64decode(text.encode("ascii"), validate=True)


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # written by a process with numpy, read by one without
        raise UnknownType("a stored numpy value needs numpy") from None
    return numpy


def _read_npy(node: Mapping[str, Any]) -> Any:
    text = node["data"]
    if type(text) is not str:
        raise ValueError("malformed tagged numpy value")
    np = _numpy()
    raw = _b64decode(text)
    try:  # the .npy reader only (never np.load: no .npz, no pickle)
        array = np.lib.format.read_array(io.BytesIO(raw), allow_pickle=False)
    except Exception as exc:
        raise ValueError(f"malformed stored numpy array: {type(exc).__name__}") from None
    if type(array) is not np.ndarray or array.dtype.hasobject:
        raise ValueError("malformed stored numpy array")
    return array


def _decode_numpy_scalar(node: Mapping[str, Any]) -> Any:
    array = _read_npy(node)
    if array.shape != ():
        raise ValueError("malformed stored numpy scalar")
    return array[()]


def _decode_object_array(node: Mapping[str, Any], decode: Decode) -> Any:
    np = _numpy()
    shape = node.get("shape")
    if type(shape) is not list or not all(type(n) is int and n >= 0 for n in shape) or len(shape) > 32:
        raise ValueError("malformed tagged object array")
    items = _items(node, decode)
    if math.prod(shape) != len(items):
        raise ValueError("malformed tagged object array")
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):  # item by item: a list item must not become a new axis
        array[index] = item
    return array.reshape(shape)


def _known_class(node: Mapping[str, Any]) -> type[Any]:
    name = node.get("cls")
    if type(name) is not str:
        raise ValueError("malformed class name")
    cls = _known.get(name)
    if cls is None or _kind_of_class(cls) != node[TYPE_TAG]:
        raise UnknownType(f"{name[:120]!r} has not been stored or registered by this process")
    return cls


def _decode_enum(node: Mapping[str, Any]) -> Any:
    cls = _known_class(node)
    try:
        return cls[node["data"]]
    except (KeyError, TypeError):
        raise ValueError("stored enum member does not exist") from None


def _decode_dataclass(node: Mapping[str, Any], decode: Decode) -> Any:
    cls = _known_class(node)
    state = node["data"]
    if type(state) is not dict:
        raise ValueError("malformed stored dataclass")
    names = {f.name for f in dataclasses.fields(cls)}
    obj: Any = object.__new__(cls)
    for name, item in state.items():
        if name not in names:
            raise ValueError(f"stored dataclass has an unknown field {name[:60]!r}")
        object.__setattr__(obj, name, decode(item))  # frozen and slotted classes too; no __init__ runs
    return obj


def _decode_namedtuple(node: Mapping[str, Any], decode: Decode) -> Any:
    cls = _known_class(node)
    items = _items(node, decode)
    if len(items) != len(cls._fields):
        raise ValueError("stored namedtuple has the wrong length")
    return tuple.__new__(cls, items)


def _decode_pydantic(node: Mapping[str, Any], decode: Decode) -> Any:
    cls = _known_class(node)
    state = node["data"]
    if type(state) is not dict:
        raise ValueError("malformed stored pydantic model")
    fields, extra, private = (decode(state.get(part)) for part in ("dict", "extra", "private"))
    fields_set = state.get("fields_set")
    if (
        type(fields) is not dict
        or not (extra is None or type(extra) is dict)
        or not (private is None or type(private) is dict)
        or type(fields_set) is not list
        or not all(type(name) is str for name in fields_set)
    ):
        raise ValueError("malformed stored pydantic model")
    if set(fields) - set(cls.model_fields):
        raise ValueError("stored pydantic model has unknown fields")
    obj: Any = object.__new__(cls)
    # As pydantic's own __setstate__: the state is put back, no validator runs.
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_extra__", extra)
    object.__setattr__(obj, "__pydantic_fields_set__", set(fields_set))
    object.__setattr__(obj, "__pydantic_private__", private)
    return obj


#: tag -> decoder(node, decode) for the kinds of this module.
KIND_DECODERS: dict[str, Callable[[Mapping[str, Any], Decode], Any]] = {
    "numpy.ndarray": lambda node, decode: _read_npy(node),
    "numpy.scalar": lambda node, decode: _decode_numpy_scalar(node),
    "numpy.object_array": _decode_object_array,
    "enum": lambda node, decode: _decode_enum(node),
    "dataclass": _decode_dataclass,
    "namedtuple": _decode_namedtuple,
    "pydantic": _decode_pydantic,
}
