"""The value conversion both doors use: tagged plain JSON in, the same objects out, never an import by name.

LiteLLM responses are produced by real LiteLLM calls against the local stand-in provider, so the shapes tested
are the ones real traffic stores.
"""

from __future__ import annotations

import base64
import collections
import copy
import dataclasses
import datetime as dt
import decimal
import enum
import io
import math
import os
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price map

import orjson
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_tiered_cache.integrations import _values
from dspy_tiered_cache.integrations._values import (
    TYPE_TAG,
    UnknownType,
    UnsupportedValue,
    dump_value,
    from_plain,
    load_value,
    register_model,
    register_type,
    to_plain,
)
from dspy_tiered_cache.testing.provider import StandInProvider


def roundtrip(value: Any) -> Any:
    """Through JSON bytes, as a shared tier would carry it."""
    return load_value(orjson.loads(orjson.dumps(dump_value(value))))


# ------------------------------------------------------------------------------------------- plain data


def test_plain_json_is_untouched_and_not_walked_on_read() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": {}}, "_dspy_format": "dspy-lm15-result-v1"}
    env = dump_value(value)
    assert env["tagged"] is False
    assert env["data"] == value
    assert roundtrip(value) == value


@pytest.mark.parametrize(
    "value",
    [
        (1, "two", (3.0,)),
        b"\x00\xffbytes",
        {"inner": (1, 2), "raw": b"abc"},
        2**70,
        -(2**70),
        {1: "int key", (2, 3): "tuple key", None: "none key"},
        [float("inf"), float("-inf")],
    ],
)
def test_non_json_shapes_come_back_equal_and_same_type(value: Any) -> None:
    back = roundtrip(value)
    assert back == value
    assert type(back) is type(value)


def test_to_plain_is_the_envelope_free_form() -> None:
    """The LiteLLM door may embed converted values in its own records: to_plain/from_plain, no envelope."""
    plain = to_plain({"t": (1, 2)})
    assert plain == {"t": {TYPE_TAG: "tuple", "data": [1, 2]}}
    assert from_plain(orjson.loads(orjson.dumps(plain))) == {"t": (1, 2)}


def test_nan_round_trips() -> None:
    back = roundtrip({"x": float("nan")})
    assert math.isnan(back["x"])


def test_a_dict_that_looks_like_a_tag_is_escaped() -> None:
    """User data holding our tag key must come back as data, not be interpreted as a type."""
    tricky = {TYPE_TAG: "litellm.ModelResponse", "data": {"id": "not a response"}}
    env = dump_value(tricky)
    assert env["tagged"] is True
    assert roundtrip(tricky) == tricky
    assert roundtrip([tricky, {TYPE_TAG: "bytes", "data": "!!"}]) == [tricky, {TYPE_TAG: "bytes", "data": "!!"}]


def test_subclasses_of_builtins_become_builtins() -> None:
    class Attr(dict[str, Any]):
        pass

    class Text(str):
        pass

    back = roundtrip(Attr(text=Text("hello"), items=[Attr(a=1)]))
    assert back == {"text": "hello", "items": [{"a": 1}]}
    assert type(back) is dict
    assert type(back["text"]) is str


@pytest.mark.parametrize("value", [object(), {"f": lambda: 1}, range(3), iter([1])])
def test_values_without_a_whitelisted_form_are_refused(value: Any) -> None:
    with pytest.raises(UnsupportedValue):
        dump_value(value)


def test_deep_nesting_is_refused_not_crashing() -> None:
    value: Any = []
    for _ in range(5000):
        value = [value]
    with pytest.raises(UnsupportedValue):
        dump_value(value)


# Any JSON document plus the extra shapes, arbitrarily nested.
_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_values_strategy = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(max_size=8) | st.just(TYPE_TAG), inner, max_size=4)
        | st.dictionaries(st.integers(), inner, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=200, deadline=None)
@given(_values_strategy)
def test_property_round_trip_through_json_bytes(value: Any) -> None:
    env = dump_value(value)
    orjson.dumps(env)  # always plain JSON data
    assert roundtrip(value) == value


# ------------------------------------------------------------------------------------------- forged data


@pytest.mark.parametrize(
    "data",
    [
        {TYPE_TAG: "os.system", "data": {"command": "echo pwned"}},
        {TYPE_TAG: "builtins.eval", "data": {}},
        {TYPE_TAG: "subprocess.Popen", "data": {"args": ["true"]}},
        {TYPE_TAG: "bytes", "data": "not base64!"},
        {TYPE_TAG: "tuple", "data": "nope"},
        {TYPE_TAG: "map", "data": [[[1], 2]]},
        {TYPE_TAG: "float", "data": "1e309e"},
        {TYPE_TAG: "litellm.ModelResponse", "data": "not a dict"},
        {TYPE_TAG: ["list", "tag"], "data": {}},
    ],
)
def test_forged_tags_are_rejected_without_importing_anything(data: Any) -> None:
    with pytest.raises(ValueError):
        from_plain(data)
    with pytest.raises(ValueError):
        load_value({"__dtc_value__": 1, "tagged": True, "data": data})


@pytest.mark.parametrize("envelope", [None, [], {"data": 1}, {"__dtc_value__": 99, "data": 1}, "text"])
def test_non_envelopes_are_rejected(envelope: Any) -> None:
    with pytest.raises(ValueError):
        load_value(envelope)


# ------------------------------------------------------------------------------------------- pydantic


class Point(pydantic.BaseModel):
    x: int
    y: tuple[int, int] = (0, 0)


def test_registered_models_round_trip_through_their_json_dump() -> None:
    register_model(Point)
    back = roundtrip({"p": Point(x=1, y=(2, 3))})
    assert back == {"p": Point(x=1, y=(2, 3))}
    with pytest.raises(ValueError, match="reserved"):
        register_model(Point, tag="litellm.ModelResponse")
    with pytest.raises(TypeError):
        register_model(int)


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandInProvider]:
    with StandInProvider() as p:
        yield p


def _litellm() -> Any:
    import litellm

    return litellm


def test_model_response_round_trip_keeps_content_usage_tools_and_cost(stand_in: StandInProvider) -> None:
    litellm = _litellm()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "find a thing",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            },
        }
    ]
    response = litellm.completion(
        model="openai/gpt-4o-mini",
        api_base=stand_in.base_url,
        api_key="sk-secret-never-stored",
        messages=[{"role": "user", "content": "please CALL_TOOL"}],
        tools=tools,
        tool_choice="required",
    )
    response._hidden_params["response_cost"] = 0.0123  # what LiteLLM computes for priced models
    env = dump_value(response)
    blob = orjson.dumps(env)
    assert b"sk-secret-never-stored" not in blob
    assert stand_in.base_url.encode() not in blob  # _hidden_params["api_base"] is not kept
    back = load_value(orjson.loads(blob))
    assert type(back) is type(response)
    assert back.model_dump(mode="json") == response.model_dump(mode="json")
    call = back.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup"
    assert back.usage.prompt_tokens == response.usage.prompt_tokens > 0
    assert back._hidden_params["response_cost"] == 0.0123
    assert "api_base" not in back._hidden_params


def test_embedding_and_text_completion_responses_round_trip(stand_in: StandInProvider) -> None:
    litellm = _litellm()
    emb = litellm.embedding(
        model="openai/text-embedding-3-small",
        api_base=stand_in.base_url,
        api_key="sk-x",
        input=["a", "b"],
        encoding_format="float",
    )
    back = roundtrip(emb)
    assert type(back) is type(emb)
    assert [d["embedding"] for d in back.data] == [d["embedding"] for d in emb.data]

    text = litellm.text_completion(
        model="text-completion-openai/gpt-3.5-turbo-instruct",
        api_base=stand_in.base_url,
        api_key="sk-x",
        prompt="say hi",
    )
    back_text = roundtrip(text)
    assert type(back_text) is type(text)
    assert back_text.choices[0].text == text.choices[0].text


def test_each_load_is_a_fresh_object(stand_in: StandInProvider) -> None:
    litellm = _litellm()
    response = litellm.completion(
        model="openai/gpt-4o-mini",
        api_base=stand_in.base_url,
        api_key="sk-x",
        messages=[{"role": "user", "content": "hi"}],
    )
    blob = orjson.dumps(dump_value(response))
    first = load_value(orjson.loads(blob))
    first.choices[0].message.content = "mutated"
    first.usage = {}
    second = load_value(orjson.loads(blob))
    assert second.choices[0].message.content == response.choices[0].message.content
    assert second.usage.total_tokens == response.usage.total_tokens


def test_litellm_types_resolve_only_from_the_fixed_table() -> None:
    # Every whitelisted tag names a LiteLLM class; nothing else can be named by stored data.
    assert all(module.startswith("litellm.") for module, _ in _values._LITELLM_TYPES.values())
    with pytest.raises(ValueError, match="whitelist"):
        from_plain({TYPE_TAG: "litellm.types.utils.ModelResponse", "data": {}})


# ------------------------------------------------------------------------------------------- other return types

numpy = pytest.importorskip("numpy")


@pytest.mark.parametrize(
    "array",
    [
        numpy.arange(12, dtype=numpy.float32).reshape(3, 4),
        numpy.linspace(-1, 1, 7, dtype=">f8"),  # big-endian stays big-endian
        numpy.asfortranarray(numpy.arange(6, dtype=numpy.int16).reshape(2, 3)),
        numpy.array([1 + 2j, -3j], dtype=numpy.complex64),
        numpy.array([[True, False]]),
        numpy.array(["text", "ü"]),
        numpy.array([b"raw", b"\x00"]),
        numpy.array(["2026-12-06T02:00"], dtype="datetime64[m]"),
        numpy.zeros((2, 0, 3), dtype=numpy.uint8),
        numpy.array(3.5, dtype=numpy.float16),  # 0-d
        numpy.array([(1, [0.5, 1.5])], dtype=[("id", "<i4"), ("xy", "<f8", (2,))]),
        numpy.array([numpy.nan, numpy.inf], dtype=numpy.float64),
    ],
    ids=lambda a: f"{a.dtype.str}{list(a.shape)}",
)
def test_numpy_arrays_come_back_exact(array: Any) -> None:
    back = roundtrip(array)
    assert type(back) is numpy.ndarray
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes(order="A") == array.tobytes(order="A")
    assert back.flags.f_contiguous == array.flags.f_contiguous
    assert back.flags.writeable  # a fresh array the caller may modify


def test_numpy_object_arrays_and_scalars() -> None:
    objects = numpy.array([[1, "two"], [(3, 4), None]], dtype=object)
    back = roundtrip(objects)
    assert back.dtype == object and back.shape == (2, 2)
    assert back.tolist() == objects.tolist() and type(back[1, 0]) is tuple
    for scalar in (numpy.float32(0.25), numpy.int8(-3), numpy.bool_(True), numpy.str_("s"), numpy.datetime64(1, "D")):
        again = roundtrip(scalar)
        assert type(again) is type(scalar) and again == scalar
    assert [type(v) for v in roundtrip([numpy.float64(1.0), numpy.ones(2)])] == [numpy.float64, numpy.ndarray]


@dataclasses.dataclass
class Scored:
    text: str
    score: float
    vector: Any = None
    tags: tuple[str, ...] = ()
    hidden: int = dataclasses.field(default=0, init=False)


@dataclasses.dataclass(frozen=True, slots=True)
class Frozen:
    when: dt.datetime
    amount: decimal.Decimal


class Colour(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


Pair = collections.namedtuple("Pair", "left right")


class Record(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="allow")
    name: str
    points: tuple[int, ...] = ()
    nested: Any = None
    _secret_note: str = pydantic.PrivateAttr(default="")

    @pydantic.field_validator("name")
    @classmethod
    def must_not_rerun(cls, v: str) -> str:  # restoring state must not run validators
        return v + "!"


def test_dataclasses_pydantic_enums_and_namedtuples_come_back_as_themselves() -> None:
    scored = Scored("a", 0.5, vector=numpy.ones(3, dtype=numpy.float32), tags=("x",))
    scored.hidden = 7
    record = Record(name="r", points=(1, 2), nested=scored, extra_field={1, 2})
    record._secret_note = "private"
    value = {
        "scored": scored,
        "frozen": Frozen(dt.datetime(2026, 12, 6, 2, 0, tzinfo=dt.timezone.utc), decimal.Decimal("1.10")),
        "record": record,
        "enums": [Colour.RED, Level.HIGH],
        "pair": Pair(1, (2, 3)),
    }
    back = roundtrip(value)
    assert type(back["scored"]) is Scored and back["scored"].hidden == 7
    assert back["scored"].vector.dtype == numpy.float32 and back["scored"].tags == ("x",)
    assert back["frozen"] == value["frozen"] and str(back["frozen"].amount) == "1.10"
    again = back["record"]
    assert type(again) is Record and again.name == "r!"  # stored state, validator not re-run
    assert again.points == (1, 2) and again.model_extra == {"extra_field": {1, 2}}
    assert again._secret_note == "private" and again.model_fields_set == record.model_fields_set
    assert type(again.nested) is Scored
    assert back["enums"] == [Colour.RED, Level.HIGH] and type(back["enums"][1]) is Level
    assert back["pair"] == Pair(1, (2, 3)) and type(back["pair"]) is Pair


@pytest.mark.parametrize(
    "value",
    [
        {1, "a"},
        frozenset({2}),
        3 - 4j,
        dt.date(2026, 12, 6),
        dt.time(2, 3, 4, 5),
        dt.timedelta(days=-1, microseconds=3),
        dt.datetime(2026, 1, 1, 0, 0),
        uuid.UUID(int=7),
        pathlib.PurePosixPath("/a/b"),
        decimal.Decimal("-0.000"),
    ],
)
def test_common_stdlib_values_come_back_equal_and_same_type(value: Any) -> None:
    back = roundtrip(value)
    assert back == value and type(back) is type(value)


def test_a_class_this_process_never_stored_is_a_miss_not_an_import() -> None:
    @dataclasses.dataclass
    class Local:
        x: int

    stored = orjson.loads(orjson.dumps(dump_value(Local(1))))
    name = f"{Local.__module__}.{Local.__qualname__}"
    _values._known.pop(name)  # as in a process that has only read what another one wrote
    with pytest.raises(UnknownType, match="not been stored or registered"):
        load_value(copy.deepcopy(stored))
    register_type(Local)
    assert load_value(stored) == Local(1)
    with pytest.raises(TypeError):
        register_type(int)


@pytest.mark.parametrize(
    "data",
    [
        {TYPE_TAG: "dataclass", "cls": "subprocess.Popen", "data": {"args": ["true"]}},
        {TYPE_TAG: "pydantic", "cls": "os.system", "data": {}},
        {TYPE_TAG: "enum", "cls": "signal.Signals", "data": "SIGKILL"},
        {TYPE_TAG: "numpy.ndarray", "data": base64.b64encode(b"PK\x03\x04 not an npy").decode()},
        {TYPE_TAG: "numpy.object_array", "shape": [3], "data": [1]},
        {TYPE_TAG: "path", "data": ["os.system", "x"]},
        {TYPE_TAG: "complex", "data": ["1", "nope"]},
    ],
)
def test_forged_class_and_array_tags_are_refused(data: Any) -> None:
    with pytest.raises(ValueError):
        from_plain(data)


def test_a_pickled_numpy_array_is_refused() -> None:
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.array([object()], dtype=object), allow_pickle=True)
    forged = {TYPE_TAG: "numpy.ndarray", "data": base64.b64encode(buffer.getvalue()).decode()}
    with pytest.raises(ValueError):
        from_plain(forged)
