"""The value conversion both doors use: tagged plain JSON in, the same objects out, never an import by name.

LiteLLM responses are produced by real LiteLLM calls against the local stand-in provider, so the shapes tested
are the ones real traffic stores.
"""

from __future__ import annotations

import math
import os
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
    UnsupportedValue,
    dump_value,
    from_plain,
    load_value,
    register_model,
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


@pytest.mark.parametrize("value", [object(), {1, 2}, {"f": lambda: 1}, range(3)])
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


def test_registered_models_round_trip_and_unregistered_are_refused() -> None:
    class Unregistered(pydantic.BaseModel):
        z: int

    with pytest.raises(UnsupportedValue):
        dump_value(Unregistered(z=1))
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
