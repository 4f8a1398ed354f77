"""Every call type LiteLLM's own cache serves, side by side: ``litellm.Cache(type="local")`` against ``TieredCache()``.

For each call type (sync, async and streamed variants) the same two identical requests go through LiteLLM's cache
and through ours, over real HTTP to the stand-in provider. Ours must hit wherever LiteLLM's hits (counted at the
provider), and return a hit of the same type with the same content, without an exception.

LiteLLM's own local cache raises ``ModuleNotFoundError: fastapi`` on every hit of a default install (its hit path
imports its proxy; see ``_litellm_hit_path``). The baseline therefore runs with the door's hit-path repair in place
(installed process-wide once any ``TieredCache`` exists): it skips only that doomed import, so LiteLLM's cache
returns the hit objects it would return with fastapi installed, and those are what ours is compared with.
``test_litellm_local_raises_on_hits_without_the_repair`` records the unrepaired behaviour in a fresh process.

The one deliberate difference: a streamed text-completion hit. LiteLLM's caches replay chat chunks there
(``chunk.choices[0].text`` raises); ours replays text-completion chunks, as the uncached stream does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import litellm
import pytest

from dspy_tiered_cache.integrations._litellm_version import litellm_door_problem

if litellm_door_problem() is not None:  # an old LiteLLM (the DSPy-only matrix cells) lacks what this module names
    pytest.skip(litellm_door_problem() or "", allow_module_level=True)

from litellm.caching import caching_handler
from litellm.caching.caching import Cache
from litellm.types.caching import LiteLLMCacheType

from dspy_tiered_cache.testing.provider import StandInProvider

if TYPE_CHECKING:  # the pytest script does not put the checkout on sys.path (the matrix runs it so)
    from tests.integrations.conftest import MakeCache

Call = Callable[[StandInProvider], Any]

#: LiteLLM's own logging of a streamed Responses call warns that the usage it built is not a ``ResponseAPIUsage``
#: (LiteLLM 1.110, on every such call: with its cache, ours, or none at all). A host warning, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")

_FASTAPI = importlib.util.find_spec("fastapi") is not None
#: ``litellm.anthropic.messages`` (not re-exported by name, so typed loosely here).
_messages: Any = litellm.anthropic.messages  # type: ignore[attr-defined]


def _chat(p: StandInProvider, text: str, **extra: Any) -> dict[str, Any]:
    return dict(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": text}], api_base=p.base_url,
                api_key="sk-test", num_retries=0, **extra)  # fmt: skip


def _oai(p: StandInProvider, **extra: Any) -> dict[str, Any]:
    return dict(api_base=p.base_url, api_key="sk-test", num_retries=0, **extra)


def _anthropic(p: StandInProvider, text: str, **extra: Any) -> dict[str, Any]:
    return dict(model="anthropic/claude-sonnet-4-5", messages=[{"role": "user", "content": text}], max_tokens=64,
                api_base=p.url, api_key="sk-ant-test", **extra)  # fmt: skip


#: id -> the call (a function of the provider returning a result, a coroutine or a stream).
CASES: dict[str, Call] = {
    "completion": lambda p: litellm.completion(**_chat(p, "chat sync")),
    "completion-stream": lambda p: litellm.completion(**_chat(p, "chat sync stream", stream=True)),
    "acompletion": lambda p: litellm.acompletion(**_chat(p, "chat async")),
    "acompletion-stream": lambda p: litellm.acompletion(**_chat(p, "chat async stream", stream=True)),
    "text_completion": lambda p: litellm.text_completion(model="openai/gpt-3.5-turbo-instruct", prompt="t", **_oai(p)),
    "text_completion-stream": lambda p: litellm.text_completion(
        model="openai/gpt-3.5-turbo-instruct", prompt="ts", stream=True, **_oai(p)
    ),
    "atext_completion": lambda p: litellm.atext_completion(
        model="openai/gpt-3.5-turbo-instruct", prompt="at", **_oai(p)
    ),
    "atext_completion-stream": lambda p: litellm.atext_completion(
        model="openai/gpt-3.5-turbo-instruct", prompt="ats", stream=True, **_oai(p)
    ),
    "embedding": lambda p: litellm.embedding(model="openai/text-embedding-3-small", input=["e1", "e2"], **_oai(p)),
    "aembedding": lambda p: litellm.aembedding(model="openai/text-embedding-3-small", input=["a1", "a2"], **_oai(p)),
    "transcription": lambda p: litellm.transcription(model="openai/whisper-1", file=("a.wav", b"RIFF-a"), **_oai(p)),
    "atranscription": lambda p: litellm.atranscription(model="openai/whisper-1", file=("b.wav", b"RIFF-b"), **_oai(p)),
    "rerank": lambda p: litellm.rerank(
        model="cohere/rerank-english-v3.0", query="q", documents=["d1", "d2"], api_base=p.url, api_key="k"
    ),
    "arerank": lambda p: litellm.arerank(
        model="cohere/rerank-english-v3.0", query="aq", documents=["d1", "d2"], api_base=p.url, api_key="k"
    ),
    "responses": lambda p: litellm.responses(model="openai/gpt-4o-mini", input="r", **_oai(p)),
    "responses-stream": lambda p: litellm.responses(model="openai/gpt-4o-mini", input="rs", stream=True, **_oai(p)),
    "aresponses": lambda p: litellm.aresponses(model="openai/gpt-4o-mini", input="ar", **_oai(p)),
    "aresponses-stream": lambda p: litellm.aresponses(model="openai/gpt-4o-mini", input="ars", stream=True, **_oai(p)),
    "aresponses-previous": lambda p: litellm.aresponses(
        model="openai/gpt-4o-mini", input="arp", previous_response_id="resp_earlier", **_oai(p)
    ),
    "aresponses-stream-previous": lambda p: litellm.aresponses(
        model="openai/gpt-4o-mini", input="arsp", previous_response_id="resp_earlier", stream=True, **_oai(p)
    ),
    "aanthropic_messages": lambda p: _messages.acreate(**_anthropic(p, "m")),
}


async def _consume(result: Any) -> Any:
    """The result, with a stream read to its end the way its caller would (sync calls iterate, async ones await)."""
    if not asyncio.iscoroutine(result):
        return list(result) if hasattr(result, "__next__") else result
    result = await result
    if hasattr(result, "__aiter__"):
        return [chunk async for chunk in result]
    return result


def _text_of(chunk: Any) -> str:
    kind = getattr(chunk, "type", None)
    if isinstance(kind, str):  # a Responses API event
        return str(getattr(chunk, "delta", "") or "") if kind == "response.output_text.delta" else ""
    choice = chunk.choices[0] if getattr(chunk, "choices", None) else None
    if choice is None:
        return ""
    delta = getattr(choice, "delta", None)
    if delta is not None:
        return str(getattr(delta, "content", "") or "")
    return str(getattr(choice, "text", "") or "")


def _content(result: Any) -> Any:
    """What a result says, independent of ids and timestamps."""
    if isinstance(result, list):
        return "".join(_text_of(chunk) for chunk in result)
    if isinstance(result, dict):  # Anthropic messages
        return result["content"][0]["text"]
    if isinstance(result, litellm.ModelResponse):
        return result.choices[0].message.content
    if isinstance(result, litellm.TextCompletionResponse):
        return result.choices[0].text
    if isinstance(result, litellm.EmbeddingResponse):
        return [item["embedding"] for item in result.data]
    if isinstance(result, litellm.TranscriptionResponse):
        return result.text
    if isinstance(result, litellm.RerankResponse):
        return [(r["index"], r["relevance_score"]) for r in result.results or []]
    if type(result).__name__ == "ResponsesAPIResponse":
        return result.output[0].content[0].text
    raise AssertionError(f"unexpected result {type(result)!r}")


def _shape(result: Any) -> Any:
    return [type(chunk).__name__ for chunk in result] if isinstance(result, list) else type(result).__name__


def _stored(cache: Any) -> int:
    """Entries written so far: LiteLLM's local store, or our core's store count."""
    if isinstance(cache, Cache) and not hasattr(cache, "core"):
        store: Any = cache.cache
        return len(store.cache_dict)
    return int(cache.stats()["stores"])


async def _twice(provider: StandInProvider, call: Call) -> tuple[int, Any, Any]:
    """Two identical requests; returns (provider requests, first result, second result)."""
    before, stored = provider.request_count, _stored(litellm.cache)
    first = await _consume(call(provider))
    await _writes_landed(stored)
    second = await _consume(call(provider))
    return provider.request_count - before, first, second


async def _writes_landed(stored: int | None = None) -> None:
    """LiteLLM stores async answers from tasks it does not await, and sync streams from its logging thread: wait
    for the pending write tasks, then (given the count before the call) for the store to show the new entry."""
    pending = [task for task in caching_handler._PENDING_CACHE_WRITES if not task.done()]
    if pending:
        await asyncio.wait(pending, timeout=5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while stored is not None and _stored(litellm.cache) <= stored and loop.time() < deadline:
        await asyncio.sleep(0.01)


def _streamed_text_completion(case: str) -> bool:
    return "text_completion" in case and case.endswith("stream")


@pytest.mark.parametrize("case", list(CASES))
async def test_ours_hits_wherever_litellm_hits(case: str, provider: StandInProvider, make_cache: MakeCache) -> None:
    make_cache()  # a TieredCache exists: LiteLLM's hit path is repaired process-wide (see the module docstring)
    previous = litellm.cache
    litellm.cache = Cache(type=LiteLLMCacheType.LOCAL)
    try:
        theirs_requests, _, theirs = await _twice(provider, CASES[case])
    finally:
        litellm.cache = previous
    ours_requests, first, ours = await _twice(provider, CASES[case])

    assert theirs_requests == 1, f"LiteLLM's own cache missed {case}: the baseline is not what this test assumes"
    assert ours_requests == 1, f"{case}: ours went upstream {ours_requests} times where LiteLLM's cache hit"
    assert _content(ours) == _content(theirs) == _content(first)
    if _streamed_text_completion(case):  # better than LiteLLM: the chunks of an uncached text stream
        assert {name for name in _shape(ours)} == {"TextCompletionResponse"} == set(_shape(first))
        texts = [chunk.choices[0].text for chunk in ours if chunk.choices]  # raises on LiteLLM's chat-chunk replay
        assert "".join(text or "" for text in texts) == _content(first)
    else:
        assert _shape(ours) == _shape(theirs)
    hidden = getattr(ours, "_hidden_params", None)
    if isinstance(hidden, dict):  # every converted hit (Anthropic's is a plain dict, as LiteLLM returns it)
        assert hidden["cache"]["level"] == "l1"
        assert set(hidden["cache"]) == {"level", "age_s", "saved_usage", "saved_usd"}


async def test_two_audio_files_with_one_name_get_their_own_transcripts(
    provider: StandInProvider, make_cache: MakeCache
) -> None:
    make_cache()
    first = await litellm.atranscription(model="openai/whisper-1", file=("audio.wav", b"RIFF one"), **_oai(provider))
    second = await litellm.atranscription(model="openai/whisper-1", file=("audio.wav", b"RIFF two"), **_oai(provider))
    assert provider.count("transcriptions") == 2
    assert first.text != second.text
    await _writes_landed()
    again = await litellm.atranscription(model="openai/whisper-1", file=("audio.wav", b"RIFF one"), **_oai(provider))
    assert provider.count("transcriptions") == 2  # the same bytes under the same name: a hit
    assert again.text == first.text
    assert again._hidden_params["cache"]["saved_usage"] == {"type": "duration", "seconds": 0.1}


@pytest.mark.parametrize("extra", [{"background": True}, {"conversation": "conv_1"}])
async def test_responses_that_continue_server_state_are_not_cached(
    extra: dict[str, Any], provider: StandInProvider, make_cache: MakeCache
) -> None:
    cache = make_cache()
    for _ in range(2):
        await litellm.aresponses(model="openai/gpt-4o-mini", input="stateful", **_oai(provider, **extra))
        await _writes_landed()
    assert provider.count("responses") == 2
    assert cache.stats()["hits"] == 0


async def test_responses_previous_response_id_is_part_of_the_key(
    provider: StandInProvider, make_cache: MakeCache
) -> None:
    make_cache()
    answers = []
    for previous in ("resp_a", "resp_b", "resp_a"):
        response: Any = await litellm.aresponses(
            model="openai/gpt-4o-mini", input="same", previous_response_id=previous, **_oai(provider)
        )
        answers.append(_content(response))
        await _writes_landed()
    assert provider.count("responses") == 2
    assert answers[0] == answers[2] != answers[1]


async def test_a_chat_answer_is_never_an_anthropic_messages_hit(
    provider: StandInProvider, make_cache: MakeCache
) -> None:
    """Chat and Anthropic messages with the same model, messages and max_tokens share a LiteLLM key."""
    make_cache()
    chat = _anthropic(provider, "x", custom_llm_provider="openai")
    chat["api_base"] = provider.base_url
    await litellm.acompletion(**chat)
    await _writes_landed()
    message = await _messages.acreate(**_anthropic(provider, "x"))
    assert provider.count("chat") == provider.count("messages") == 1
    assert message["type"] == "message"


@pytest.mark.skipif(_FASTAPI, reason="LiteLLM streams Anthropic messages when fastapi is installed")
async def test_streamed_anthropic_messages_fail_as_they_do_uncached(
    provider: StandInProvider, make_cache: MakeCache
) -> None:
    """LiteLLM cannot stream Anthropic messages without fastapi, cached or not: the same error reaches the caller."""
    previous = litellm.cache
    litellm.cache = None
    try:
        with pytest.raises(ImportError) as uncached:
            await _consume(_messages.acreate(**_anthropic(provider, "s", stream=True)))
    finally:
        litellm.cache = previous
    make_cache()
    with pytest.raises(ImportError) as cached:
        await _consume(_messages.acreate(**_anthropic(provider, "s", stream=True)))
    assert type(cached.value) is type(uncached.value)
    assert cached.value.name == uncached.value.name


@pytest.mark.skipif(_FASTAPI, reason="the failure needs a default install (no fastapi)")
def test_litellm_local_raises_on_hits_without_the_repair(provider: StandInProvider) -> None:
    """Why the baseline above needs the repair: in a process without any TieredCache, LiteLLM's own local cache
    raises on the second (cached) call."""
    script = textwrap.dedent(
        f"""
        import os
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
        import litellm
        litellm.cache = litellm.Cache(type="local")
        kwargs = dict(model="openai/gpt-4o-mini", messages=[{{"role": "user", "content": "raw"}}],
                      api_base="{provider.base_url}", api_key="sk-test", num_retries=0)
        litellm.completion(**kwargs)
        try:
            litellm.completion(**kwargs)
        except ImportError as exc:
            print("raised", exc.name)
        else:
            print("served")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip().splitlines()[-1] == "raised fastapi"
    assert provider.count("chat") == 1


async def test_every_call_type_gets_its_span_and_counts(
    otel_spans: Any, provider: StandInProvider, make_cache: MakeCache
) -> None:
    """One span per cached call named for its operation (miss, then hit), and each hit counted in the stats."""
    cache = make_cache()
    calls = {
        "transcription": CASES["atranscription"],
        "rerank": CASES["arerank"],
        "responses": CASES["aresponses"],
        "messages": CASES["aanthropic_messages"],
    }
    for call in calls.values():
        await _twice(provider, call)
    spans = [s for s in otel_spans.get_finished_spans() if s.name.startswith("dspy_tiered_cache")]
    seen = [(s.attributes["gen_ai.operation.name"], s.attributes["cache.level"]) for s in spans]
    for operation in calls:
        assert [level for name, level in seen if name == operation] == ["miss", "l1"], seen
    assert cache.stats()["hits"] == len(calls)
    hit_spans = [s for s in spans if s.attributes["cache.level"] == "l1"]
    saved = {s.attributes["gen_ai.operation.name"]: s.attributes.get("cache.tokens_saved") for s in hit_spans}
    assert saved["responses"] and saved["messages"]  # input/output tokens, as LiteLLM counts them there
