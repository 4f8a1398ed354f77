"""The stand-in provider, exercised the way the rest of the suite uses it: real LiteLLM, the real OpenAI SDK
and real DSPy talking HTTP to it. If these pass, a test that counts ``request_count`` to prove a cache hit
is counting real upstream calls."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Literal

import pytest

# LiteLLM fetches its cost map from the internet at import unless told not to (seconds of retries offline).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy
import litellm
import openai
from litellm.exceptions import InternalServerError, RateLimitError

from dspy_tiered_cache.testing.provider import TOOL_CALL_MARKER, StandInProvider

MODEL = "openai/gpt-4o-mini"
KEY = "sk-test-secret-key"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["c", "f"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}},
}


# LiteLLM 1.106.x imports its MCP proxy module (which needs the `mcp` package, only in litellm's [mcp]/[proxy]
# extras) for EVERY completion carrying `tools`; without it the call dies with ModuleNotFoundError before any
# HTTP. That is LiteLLM's problem, not the stand-in's: skip its MCP hook so the tool-call path is still tested.
try:
    import mcp  # noqa: F401

    TOOLS_KW: dict[str, Any] = {}
except ImportError:
    TOOLS_KW = {"_skip_mcp_handler": True}


# The `provider` fixture (a fresh StandInProvider per test) comes from tests/conftest.py.


def ask(p: StandInProvider, text: str, **kwargs: Any) -> Any:
    return litellm.completion(
        model=MODEL,
        api_base=p.base_url,
        api_key=KEY,
        messages=[{"role": "user", "content": text}],
        num_retries=0,
        **kwargs,
    )


# --- chat completions through LiteLLM ---------------------------------------------------------------------


def test_completion_is_deterministic_per_request_and_counts(provider: StandInProvider) -> None:
    first = ask(provider, "What is the capital of France?")
    again = ask(provider, "What is the capital of France?")
    other = ask(provider, "What is the capital of Spain?")

    content = first.choices[0].message.content
    assert content.startswith("Answer ") and "capital of France" in content
    assert again.choices[0].message.content == content
    assert other.choices[0].message.content != content
    assert first.id != again.id  # a fresh id per upstream call: a cache hit is recognisable by its id
    assert first.choices[0].finish_reason == "stop"
    assert first.model.endswith("gpt-4o-mini")
    usage = first.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert provider.request_count == 3
    assert provider.endpoint_counts == {"chat": 3}
    assert [r["messages"][0]["content"] for r in provider.requests] == [
        "What is the capital of France?",
        "What is the capital of France?",
        "What is the capital of Spain?",
    ]
    assert KEY not in json.dumps(provider.requests)  # bodies only: the Authorization header is never kept

    provider.reset()
    assert provider.request_count == 0 and provider.requests == [] and provider.endpoint_counts == {}


def test_usage_overrides_and_salt() -> None:
    with StandInProvider(prompt_tokens=1000, completion_tokens=50) as p, StandInProvider(salt="v2") as q:
        r = ask(p, "hello")
        assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (1000, 50, 1050)
        assert ask(q, "hello").choices[0].message.content != r.choices[0].message.content


def test_stream_matches_non_stream_and_reports_usage(provider: StandInProvider) -> None:
    expected = ask(provider, "Tell me a story about a cache").choices[0].message.content
    chunks = list(ask(provider, "Tell me a story about a cache", stream=True, stream_options={"include_usage": True}))
    assert len(chunks) > 2  # really streamed in pieces
    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert text == expected
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens > 0
    rebuilt: Any = litellm.stream_chunk_builder(chunks)
    assert rebuilt is not None and rebuilt.choices[0].message.content == expected
    assert provider.requests[-1]["stream"] is True
    assert provider.count("chat") == 2


def test_n_choices(provider: StandInProvider) -> None:
    r = ask(provider, "Give me options", n=3)
    contents = [c.message.content for c in r.choices]
    assert len(contents) == 3 and len(set(contents)) == 3
    assert provider.request_count == 1


async def test_acompletion_and_async_stream(provider: StandInProvider) -> None:
    r = await litellm.acompletion(
        model=MODEL, api_base=provider.base_url, api_key=KEY, messages=[{"role": "user", "content": "async hi"}]
    )
    stream = await litellm.acompletion(
        model=MODEL,
        api_base=provider.base_url,
        api_key=KEY,
        messages=[{"role": "user", "content": "async hi"}],
        stream=True,
    )
    text = "".join([(c.choices[0].delta.content or "") async for c in stream if c.choices])
    assert text == r.choices[0].message.content and text.startswith("Answer ")
    assert provider.request_count == 2


def _check_weather_args(arguments: str) -> dict[str, Any]:
    args = json.loads(arguments)
    assert isinstance(args["city"], str) and args["city"]
    assert 1 <= args["days"] <= 7
    assert args["unit"] in ("c", "f")
    return dict(args)


def test_tool_calls_forced_by_tool_choice_or_marker(provider: StandInProvider) -> None:
    forced = ask(
        provider,
        "What's the weather?",
        tools=[TIME_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **TOOLS_KW,
    )
    call = forced.choices[0].message.tool_calls[0]
    assert forced.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    args = _check_weather_args(call.function.arguments)

    again = ask(
        provider,
        "What's the weather?",
        tools=[TIME_TOOL, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        **TOOLS_KW,
    )
    assert json.loads(again.choices[0].message.tool_calls[0].function.arguments) == args

    marked = ask(provider, f"{TOOL_CALL_MARKER} please", tools=[WEATHER_TOOL], **TOOLS_KW)
    _check_weather_args(marked.choices[0].message.tool_calls[0].function.arguments)

    plain = ask(provider, "no tool needed", tools=[WEATHER_TOOL], **TOOLS_KW)
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content

    # After the tool result comes back, the model answers in text (an agent loop terminates).
    follow_up = litellm.completion(
        model=MODEL,
        api_base=provider.base_url,
        api_key=KEY,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": f"{TOOL_CALL_MARKER} weather?"},
            marked.choices[0].message.model_dump(),
            {"role": "tool", "tool_call_id": marked.choices[0].message.tool_calls[0].id, "content": "sunny"},
        ],
        **TOOLS_KW,
    )
    assert follow_up.choices[0].message.content.startswith("Answer ")


def test_tool_calls_through_the_openai_sdk(provider: StandInProvider) -> None:
    client: Any = openai.OpenAI(base_url=provider.base_url, api_key=KEY, max_retries=0)
    r = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="required",
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    _check_weather_args(call.function.arguments)
    none = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": f"{TOOL_CALL_MARKER} but no"}],
        tools=[WEATHER_TOOL],
        tool_choice="none",
    )
    assert none.choices[0].message.tool_calls is None


def test_streamed_tool_call(provider: StandInProvider) -> None:
    chunks = list(ask(provider, f"{TOOL_CALL_MARKER}", tools=[WEATHER_TOOL], stream=True, **TOOLS_KW))
    rebuilt: Any = litellm.stream_chunk_builder(chunks)
    assert rebuilt is not None
    call = rebuilt.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    _check_weather_args(call.function.arguments)


def test_json_mode_and_structured_output(provider: StandInProvider) -> None:
    r = ask(provider, "json please", response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)

    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"$ref": "#/$defs/Kind"},
        },
        "required": ["name", "age", "tags", "kind"],
        "$defs": {"Kind": {"type": "string", "enum": ["a", "b"]}},
    }
    s = ask(
        provider,
        "structured please",
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}},
    )
    data = json.loads(s.choices[0].message.content)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)
    assert isinstance(data["tags"], list) and data["kind"] in ("a", "b")


def test_injected_failures_then_recovery(provider: StandInProvider) -> None:
    provider.fail_next(1, status=500)
    with pytest.raises(InternalServerError):
        ask(provider, "boom", max_retries=0)
    provider.fail_next(1, status=429)
    with pytest.raises(RateLimitError):
        ask(provider, "boom", max_retries=0)
    assert ask(provider, "boom", max_retries=0).choices[0].message.content.startswith("Answer ")
    assert provider.request_count == 3 and provider.failures_served == 2


def test_latency_and_concurrency() -> None:
    with StandInProvider(latency=0.2) as p:
        started = time.perf_counter()
        results: list[str] = []

        def call() -> None:
            results.append(ask(p, "same question").choices[0].message.content)

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    assert len(results) == 6 and len(set(results)) == 1
    assert p.request_count == 6
    assert p.max_in_flight > 1  # served concurrently, not one after the other
    assert elapsed >= 0.2


def test_burst_of_connections_is_accepted(provider: StandInProvider) -> None:
    """More simultaneous clients than the stdlib's default listen backlog (5) must not stall or fail."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "burst"}]}).encode()
    answers: list[str] = []
    provider.latency = 0.05

    def call() -> None:
        request = urllib.request.Request(
            provider.base_url + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            answers.append(json.load(resp)["choices"][0]["message"]["content"])

    threads = [threading.Thread(target=call) for _ in range(40)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 40 and len(set(answers)) == 1
    assert provider.request_count == 40
    assert time.perf_counter() - started < 5


# --- text completions and embeddings -----------------------------------------------------------------------


def test_text_completion(provider: StandInProvider) -> None:
    r = litellm.text_completion(
        model="openai/gpt-3.5-turbo-instruct", api_base=provider.base_url, api_key=KEY, prompt="Once upon"
    )
    assert "Completion" in r.choices[0].text
    assert r.usage.prompt_tokens > 0
    assert provider.endpoint_counts == {"completions": 1}


def test_embeddings_through_litellm_and_openai_sdk(provider: StandInProvider) -> None:
    one = litellm.embedding(model="openai/text-embedding-3-small", api_base=provider.base_url, api_key=KEY, input="hi")
    many = litellm.embedding(
        model="openai/text-embedding-3-small", api_base=provider.base_url, api_key=KEY, input=["hi", "there"]
    )
    vector = one.data[0]["embedding"]
    assert len(vector) == 16
    assert math.isclose(sum(v * v for v in vector), 1.0, rel_tol=1e-5)
    assert many.data[0]["embedding"] == vector and many.data[1]["embedding"] != vector
    assert many.usage is not None and many.usage.prompt_tokens > 0

    # The OpenAI SDK asks for base64 float32 by default and decodes it: same numbers.
    client = openai.OpenAI(base_url=provider.base_url, api_key=KEY, max_retries=0)
    sdk = client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert provider.requests[-1].get("encoding_format") == "base64"
    assert sdk.data[0].embedding == pytest.approx(vector, abs=1e-7)
    sized = client.embeddings.create(model="text-embedding-3-small", input="hi", dimensions=8)
    assert len(sized.data[0].embedding) == 8
    assert provider.count("embeddings") == 4


def test_models_and_unknown_routes(provider: StandInProvider) -> None:
    with urllib.request.urlopen(provider.base_url + "/models", timeout=5) as resp:
        assert json.load(resp)["object"] == "list"
    request = urllib.request.Request(provider.base_url + "/nope", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == 404
    assert provider.request_count == 0  # only API requests count


# --- DSPy ------------------------------------------------------------------------------------------------


class Typed(dspy.Signature):  # type: ignore[misc]
    """Answer with typed fields."""

    question: str = dspy.InputField()
    answer: int = dspy.OutputField()
    confident: bool = dspy.OutputField()
    kind: Literal["fact", "opinion"] = dspy.OutputField()
    sources: list[str] = dspy.OutputField()


def _lm(p: StandInProvider, **kwargs: Any) -> dspy.LM:
    return dspy.LM(MODEL, api_base=p.base_url, api_key=KEY, cache=False, **kwargs)


def test_dspy_predict_and_chain_of_thought(provider: StandInProvider) -> None:
    with dspy.context(lm=_lm(provider)):
        pred = dspy.Predict("question -> answer")(question="What is 2+2?")
        again = dspy.Predict("question -> answer")(question="What is 2+2?")
        cot = dspy.ChainOfThought(Typed)(question="Is water wet?")
    assert pred.answer.startswith("Answer ") and "What is 2+2?" in pred.answer
    assert again.answer == pred.answer
    assert cot.reasoning.startswith("Reasoning ")
    assert isinstance(cot.answer, int) and isinstance(cot.confident, bool)
    assert cot.kind in ("fact", "opinion")
    assert isinstance(cot.sources, list) and all(isinstance(s, str) for s in cot.sources)
    # One HTTP call per prediction: ChatAdapter parsed the first reply, no JSONAdapter retry.
    assert provider.request_count == 3
    assert "response_format" not in provider.requests[-1]


def test_dspy_json_adapter_and_litellm_engine(provider: StandInProvider) -> None:
    with dspy.context(lm=_lm(provider), adapter=dspy.JSONAdapter()):
        pred = dspy.ChainOfThought(Typed)(question="Is fire hot?")
    assert isinstance(pred.answer, int) and pred.kind in ("fact", "opinion")
    assert "response_format" in provider.requests[-1]

    with dspy.context(lm=_lm(provider, engine="litellm")):
        via_litellm = dspy.Predict("question -> answer")(question="Through LiteLLM?")
    assert via_litellm.answer.startswith("Answer ")
    assert provider.request_count == 2


async def test_dspy_async(provider: StandInProvider) -> None:
    with dspy.context(lm=_lm(provider)):
        pred = await dspy.Predict("question -> answer").acall(question="async?")
    assert pred.answer.startswith("Answer ")
    assert provider.request_count == 1


# --- lifecycle and other processes -------------------------------------------------------------------------


def test_stop_and_restart_same_port() -> None:
    p = StandInProvider().start()
    port = p.port
    assert ask(p, "hi").choices[0].message.content
    p.stop()
    assert not p.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(p.base_url + "/models", timeout=2)
    p.start()
    try:
        assert p.port == port
        assert ask(p, "hi").choices[0].message.content
    finally:
        p.stop()


CHILD = """
import json, sys, urllib.request
body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "from a child"}]}).encode()
req = urllib.request.Request(sys.argv[1] + "/chat/completions", data=body,
                             headers={"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=10))["choices"][0]["message"]["content"])
"""


def test_requests_from_child_processes_are_counted_in_parent(provider: StandInProvider) -> None:
    outputs = [
        subprocess.run([sys.executable, "-c", CHILD, provider.base_url], capture_output=True, text=True, timeout=30)
        for _ in range(2)
    ]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    assert outputs[0].stdout == outputs[1].stdout and outputs[0].stdout.startswith("Answer ")
    assert provider.request_count == 2


def test_cli_prints_base_url_and_serves() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "dspy_tiered_cache.testing.provider", "--port", "0", "--latency", "0.01"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        done = subprocess.run([sys.executable, "-c", CHILD, base_url], capture_output=True, text=True, timeout=30)
        assert done.stdout.startswith("Answer "), done.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert "served 1 requests" in err
