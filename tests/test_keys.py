from __future__ import annotations

import enum
from typing import Any

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dspy_tiered_cache.keys import TRANSPORT_KEYS, UncacheableRequest, canonical_request, request_digest

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
requests = st.dictionaries(
    st.text(min_size=1, max_size=10).filter(lambda k: k not in TRANSPORT_KEYS), json_values, min_size=1, max_size=6
)


def key(request: dict[str, Any], **kw: Any) -> str:
    return request_digest(canonical_request(request, **kw))


@given(requests)
def test_key_ignores_dict_order(request: dict[str, Any]) -> None:
    reordered = dict(reversed(list(request.items())))
    assert key(request) == key(reordered)


@given(requests, st.sampled_from(sorted(TRANSPORT_KEYS)), st.text(max_size=30))
def test_transport_options_and_secrets_never_change_the_key(request: dict[str, Any], name: str, val: str) -> None:
    assert key(request) == key({**request, name: val})


@given(requests, st.text(min_size=1, max_size=10).filter(lambda k: k not in TRANSPORT_KEYS), json_values)
@settings(max_examples=200)
def test_any_semantic_change_changes_the_key(request: dict[str, Any], name: str, value: Any) -> None:
    changed = {**request, name: value}
    if canonical_request(changed) != canonical_request(request):
        assert key(changed) != key(request)
    else:  # only equal meanings share canonical forms: integral floats and None-valued options
        assert key(changed) == key(request)


@given(st.integers(-(2**50), 2**50))
def test_integral_floats_equal_ints(n: int) -> None:
    assert key({"temperature": float(n)}) == key({"temperature": n})


def test_meaningful_differences() -> None:
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.7}
    assert key(base) != key({**base, "temperature": 0.70001})
    assert key(base) != key({**base, "model": "gpt-4o"})
    assert key(base) != key({**base, "messages": [{"role": "user", "content": "hi "}]})
    assert key(base) != key({**base, "n": 2})
    assert key({**base, "temperature": -0.0}) == key({**base, "temperature": 0})
    assert key({**base, "seed": None}) == key(base)


def test_secret_never_enters_canonical_form() -> None:
    canonical = canonical_request({"model": "m", "api_key": "sk-live-secret", "extra_headers": {"Authorization": "x"}})
    assert b"sk-live-secret" not in canonical and b"Authorization" not in canonical


def test_keyed_digest_differs_per_secret() -> None:
    c = canonical_request({"model": "m"})
    assert request_digest(c, b"a") != request_digest(c, b"b") != request_digest(c)


def test_pydantic_response_format_and_enum() -> None:
    class Answer(pydantic.BaseModel):
        answer: str

    class Color(enum.Enum):
        RED = "red"

    assert key({"response_format": Answer}) == key({"response_format": Answer})
    assert key({"c": Color.RED}) == key({"c": "red"})
    assert key({"tags": {"b", "a"}}) == key({"tags": {"a", "b"}})


def test_unknown_objects_are_uncacheable_with_a_clear_message() -> None:
    with pytest.raises(UncacheableRequest, match=r"request.callback holds a"):
        canonical_request({"callback": object()})
